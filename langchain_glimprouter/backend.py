"""The settings of one OpenAI-compatible completions server (:class:`Backend`). The HTTP client
that talks to it is :mod:`langchain_glimprouter.http.client`; what routing reads of its streamed
answers is :mod:`langchain_glimprouter.core.wire`.
"""

from __future__ import annotations

import os
from typing import Annotated, Any

import httpx2
import openai
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, SecretStr

from langchain_glimprouter.core.servers import ServerSpec, server_root
from langchain_glimprouter.core.tool_calls import HermesToolCallParser, ToolCallParser

DEFAULT_TIMEOUT = 60.0
"""Seconds to wait for a connection or for the next streamed chunk, when nothing else is set."""

_BUILT_IN_PARSERS = {cls.__name__: cls for cls in (HermesToolCallParser,)}


def _parser_by_name(value: Any) -> Any:
    """A built-in parser named by its class (as a Backend dumped to JSON names it); anything
    else as given (an instance, or what pydantic then refuses)."""
    return _BUILT_IN_PARSERS[value]() if value in _BUILT_IN_PARSERS else value


class Identifies:
    """Marks a :class:`Backend` field that can change what its server writes for a call: it is
    part of the router's identifying params, so LangChain's cache tells two routers apart that
    differ in one of them. The other fields only say how to reach the server (never part of a
    cache key: keys and clients stay out of it; replicas serve the same model)."""


IDENTIFIES = Identifies()

ParserField = Annotated[
    ToolCallParser,
    BeforeValidator(_parser_by_name),
    PlainSerializer(lambda parser: type(parser).__name__, return_type=str, when_used="json"),
]
"""A tool-call parser: an instance, dumped to JSON as its class name (a parser is code, which
JSON cannot hold); the built-in one's name is read back as the parser."""


class Backend(BaseModel):
    """One OpenAI-compatible completions server (vLLM, llama.cpp, ...) and the model it serves."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, arbitrary_types_allowed=True, use_attribute_docstrings=True
    )

    base_url: Annotated[str, IDENTIFIES]
    """API root, e.g. 'http://localhost:8001/v1'."""
    model: Annotated[str, IDENTIFIES]
    """Served model name, as the server's /v1/models lists it."""
    api_key: SecretStr | None = None
    """Bearer token; falls back to the router's api_key, then to the GLIMPROUTER_SMALL_API_KEY /
    GLIMPROUTER_LARGE_API_KEY / OPENAI_API_KEY variables."""
    timeout: float | None = None
    """Seconds to wait for a connection or the next chunk (the router's if None)."""
    max_retries: int | None = None
    """Retries of a failed request (connection refused, 429, 5xx) or a cut stream (the
    router's max_retries if None)."""
    chat_template: Annotated[str | None, IDENTIFIES] = None
    """Jinja chat template rendered client-side; if None the server renders (vLLM /tokenize +
    /detokenize, llama.cpp /apply-template)."""
    chat_template_kwargs: Annotated[dict[str, Any], IDENTIFIES] = Field(default_factory=dict)
    """Extra variables for the chat template (e.g. bos_token, enable_thinking)."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Extra HTTP headers."""
    extra_body: Annotated[dict[str, Any], IDENTIFIES] = Field(default_factory=dict)
    """Extra JSON fields merged into every completions request (e.g. top_k)."""
    tool_parser: Annotated[ParserField, IDENTIFIES] = Field(default_factory=HermesToolCallParser)
    """How this model writes tool calls in its answer (the large backend's parses the answer;
    either's formats past calls for a template that ignores tools)."""
    session_header: str | None = None
    """A header that carries the conversation's id on every request to this server, for a
    gateway in front of replicas that routes by session (vLLM production-stack's
    ``--routing-logic session --session-key <header>``, semantic-router's ``x-session-id``, a
    load balancer's header affinity): each conversation then stays on one replica, whose prefix
    cache keeps hitting. The id is a hash of the conversation's opening messages, the same key
    that picks among ``replicas``; it holds no text of them. None: no such header.

    Cookies need no setting: what a server or gateway sets (llm-d's ``llm-d-session``, the pod
    it chose) is kept per conversation and sent back only with that conversation's requests,
    on the clients the router builds (not on ``client`` / ``http_client``, whose jar is yours)."""
    replicas: list[str] = Field(default_factory=list)
    """More API roots serving the same model. A conversation sticks to one of them (so its
    prefix cache keeps hitting); a replica that is down is skipped."""
    client: openai.OpenAI | None = Field(default=None, exclude=True, repr=False)
    """Your own openai SDK client (custom auth, proxy, gateway). The router uses a copy with
    this backend's base_url (or replica), timeout, headers and max_retries=0 (retries are the
    router's), sharing its connection pool, authentication and cookie jar: the jar is yours, and
    httpx's default one sends the cookies any answer set with every later request, whatever
    the conversation (the router's own clients keep cookies per conversation)."""
    async_client: openai.AsyncOpenAI | None = Field(default=None, exclude=True, repr=False)
    """The async twin of ``client``, for ainvoke/astream/abatch."""
    http_client: httpx2.Client | None = Field(default=None, exclude=True, repr=False)
    """An httpx2 client (proxies, certificates, transports) for the SDK clients the router
    builds, when ``client`` is not set; its cookie jar is yours, as for ``client``."""
    http_async_client: httpx2.AsyncClient | None = Field(default=None, exclude=True, repr=False)
    """The async twin of ``http_client``."""

    @property
    def urls(self) -> list[str]:
        """``base_url`` and the replicas."""
        return [self.base_url, *self.replicas]

    @property
    def root_url(self) -> str:
        """The server root, where vLLM serves /tokenize and /detokenize."""
        return server_root(self.base_url)

    def spec(self) -> ServerSpec:
        """What the routing core needs of this server (no clients, no keys)."""
        return ServerSpec(
            urls=tuple(self.urls),
            model=self.model,
            chat_template=self.chat_template,
            chat_template_kwargs=self.chat_template_kwargs,
            extra_body=self.extra_body,
            tool_parser=self.tool_parser,
            max_retries=self.max_retries,
        )


IDENTIFYING = tuple(
    name for name, info in Backend.model_fields.items() if IDENTIFIES in info.metadata
)
"""The fields of a :class:`Backend` marked :class:`Identifies`, in declaration order."""


def identity(backend: Backend) -> dict[str, Any]:
    """What identifies ``backend``'s answers (:data:`IDENTIFYING`), JSON-serialisable."""
    return {
        name: repr(value) if name == "tool_parser" else value
        for name in IDENTIFYING
        if (value := getattr(backend, name)) not in (None, {})
    }


def resolve_key(backend: Backend, router_key: SecretStr | None, role: str) -> SecretStr | None:
    """The key for ``backend`` (the ``role`` server): its own, else the router's, else
    ``GLIMPROUTER_<ROLE>_API_KEY``, else ``OPENAI_API_KEY``, read when a call needs it."""
    for key in (backend.api_key, router_key):
        if key:
            return key
    for name in (f"GLIMPROUTER_{role.upper()}_API_KEY", "OPENAI_API_KEY"):
        if value := os.environ.get(name):
            return SecretStr(value)
    return None
