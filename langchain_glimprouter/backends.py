"""The settings of one OpenAI-compatible completions server, and what routing reads of its
streamed answers (:class:`Chunk`). The HTTP client itself is in
:mod:`langchain_glimprouter.transport`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx2
import openai
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from langchain_glimprouter.tool_calls import HermesToolCallParser, ToolCallParser

DEFAULT_TIMEOUT = 60.0
"""Seconds to wait for a connection or for the next streamed chunk, when nothing else is set."""


class Backend(BaseModel):
    """One OpenAI-compatible completions server (vLLM, llama.cpp, ...) and the model it serves."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    base_url: str = Field(description="API root, e.g. 'http://localhost:8001/v1'.")
    model: str = Field(description="Served model name, as the server's /v1/models lists it.")
    api_key: SecretStr | None = Field(
        default=None,
        description="Bearer token; falls back to the router's api_key, then to the "
        "GLIMPROUTER_SMALL_API_KEY / GLIMPROUTER_LARGE_API_KEY / OPENAI_API_KEY variables.",
    )
    timeout: float | None = Field(
        default=None,
        description="Seconds to wait for a connection or the next chunk (router's if None).",
    )
    max_retries: int | None = Field(
        default=None,
        description="Retries of a failed request (connection refused, 429, 5xx) or a cut "
        "stream (router's max_retries if None).",
    )
    chat_template: str | None = Field(
        default=None,
        description="Jinja chat template rendered client-side; if None the server renders "
        "(vLLM /tokenize + /detokenize, llama.cpp /apply-template).",
    )
    chat_template_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra variables for the chat template (e.g. bos_token, enable_thinking).",
    )
    headers: dict[str, str] = Field(default_factory=dict, description="Extra HTTP headers.")
    extra_body: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra JSON fields merged into every completions request (e.g. top_k).",
    )

    tool_parser: ToolCallParser = Field(
        default_factory=HermesToolCallParser,
        description="How this model writes tool calls in its answer (the large backend's "
        "parses the answer; either's formats past calls for a template that ignores tools).",
    )
    replicas: list[str] = Field(
        default_factory=list,
        description="More API roots serving the same model. A conversation sticks to one of "
        "them (so its prefix cache keeps hitting); a replica that is down is skipped.",
    )
    client: openai.OpenAI | None = Field(
        default=None,
        exclude=True,
        repr=False,
        description="Your own openai SDK client (custom auth, proxy, gateway). The router uses "
        "a copy with this backend's base_url (or replica), timeout, headers and max_retries=0 "
        "(retries are the router's), sharing its connection pool and authentication.",
    )
    async_client: openai.AsyncOpenAI | None = Field(
        default=None,
        exclude=True,
        repr=False,
        description="The async twin of ``client``, for ainvoke/astream/abatch.",
    )
    http_client: httpx2.Client | None = Field(
        default=None,
        exclude=True,
        repr=False,
        description="An httpx2 client (proxies, certificates, transports) for the SDK clients "
        "the router builds, when ``client`` is not set.",
    )
    http_async_client: httpx2.AsyncClient | None = Field(
        default=None,
        exclude=True,
        repr=False,
        description="The async twin of ``http_client``.",
    )

    @property
    def urls(self) -> list[str]:
        """``base_url`` and the replicas."""
        return [self.base_url, *self.replicas]

    @property
    def root_url(self) -> str:
        """The server root, where vLLM serves /tokenize and /detokenize."""
        return server_root(self.base_url)


def server_root(base_url: str) -> str:
    """``http://host:8000/v1`` -> ``http://host:8000``."""
    url = base_url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


@dataclass(frozen=True)
class Chunk:
    """One server-sent event of a streamed completion, reduced to what routing needs."""

    text: str
    n_tokens: int
    """Tokens in this chunk (from its logprobs; 1 per non-empty chunk without them)."""
    first_token: str | None
    """The chunk's first token as the server spelled it in its logprobs."""
    top_logprobs: dict[str, float] | None
    """Top-k logprobs of the chunk's first token, if logprobs were asked for."""
    finish_reason: str | None
    stop_reason: str | int | None
    reports_stop_reason: bool
    """Whether the server sends ``stop_reason`` (vLLM does; it tells EOS from a stop string)."""
    prompt_tokens: int | None
    completion_tokens: int | None
    token_logprobs: tuple[float | None, ...] = ()
    """Logprob of each token of the chunk (when logprobs were asked for)."""
    token_top_logprobs: tuple[dict[str, float], ...] = ()
    """Top-k logprobs after each token position of the chunk (when logprobs were asked for)."""
    token_texts: tuple[str, ...] = ()
    """Each token of the chunk as the server spelled it (when logprobs were asked for)."""


def parse_chunk(event: dict[str, Any]) -> Chunk:
    """Turn one decoded SSE ``data:`` object of ``/v1/completions`` into a :class:`Chunk`."""
    usage = event.get("usage") or {}
    choices = event.get("choices") or []
    choice = choices[0] if choices else {}
    logprobs = choice.get("logprobs") or {}
    tokens = logprobs.get("tokens") or []
    tops = logprobs.get("top_logprobs") or []
    text = choice.get("text") or ""
    return Chunk(
        text=text,
        n_tokens=len(tokens) if logprobs else int(bool(text)),
        first_token=tokens[0] if tokens else None,
        top_logprobs=tops[0] if tops and tops[0] else None,
        finish_reason=choice.get("finish_reason"),
        stop_reason=choice.get("stop_reason"),
        reports_stop_reason="stop_reason" in choice,
        prompt_tokens=usage.get("prompt_tokens"),
        completion_tokens=usage.get("completion_tokens"),
        token_logprobs=tuple(logprobs.get("token_logprobs") or ()),
        token_top_logprobs=tuple(top or {} for top in tops),
        token_texts=tuple(str(t) for t in tokens),
    )
