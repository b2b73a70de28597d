"""What the core needs of one server (:class:`ServerSpec`): where it is, the model it serves, how
its prompt is rendered and what goes into every request. Plain data: the SDK clients and the
keys of a :class:`~langchain_glimprouter.backend.Backend` stay outside the core
(``Backend.spec()`` makes one)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from langchain_glimprouter.core.tool_calls import HermesToolCallParser, ToolCallParser


@dataclass(frozen=True)
class ServerSpec:
    """One OpenAI-compatible completions server as a routed call sees it."""

    urls: tuple[str, ...]
    """API roots: the base URL first, then its replicas (the same model)."""
    model: str
    """Served model name, as the server's /v1/models lists it."""
    chat_template: str | None = None
    """Jinja chat template rendered client-side; None: the server renders."""
    chat_template_kwargs: Mapping[str, Any] = field(default_factory=dict)
    """Extra variables for the chat template (e.g. bos_token, enable_thinking)."""
    extra_body: Mapping[str, Any] = field(default_factory=dict)
    """Extra JSON fields merged into every completions request."""
    tool_parser: ToolCallParser = field(default_factory=HermesToolCallParser)
    """How the model writes tool calls in its answer."""
    max_retries: int | None = None
    """Retries of a failed request or a cut stream (None: the router's)."""

    @property
    def base_url(self) -> str:
        return self.urls[0]

    @property
    def root_url(self) -> str:
        """The server root, where vLLM serves /tokenize and /detokenize."""
        return server_root(self.base_url)


def server_root(base_url: str) -> str:
    """``http://host:8000/v1`` -> ``http://host:8000``."""
    url = base_url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url
