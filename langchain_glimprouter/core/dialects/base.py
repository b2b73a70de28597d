"""The :class:`Dialect` protocol: what the core needs to know of one kind of server, and the
pieces the kinds share (:class:`ServerDialect`, the defaults of a kind that renders on the
server)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from langchain_glimprouter.core.ops import Program
from langchain_glimprouter.core.servers import ServerSpec
from langchain_glimprouter.errors import GlimpRouterError

NOT_SUPPORTED = (404, 405, 501)
"""Statuses of a server that has no such endpoint: rendering tries the next kind."""


@dataclass(frozen=True)
class Hints:
    """The wording a kind's errors use for what to do about them."""

    logprobs: str
    """How to let the server return ``{k}`` top logprobs per token (a sentence start)."""
    structured_outputs: str
    """What a server must support to constrain an answer to a JSON schema."""


@dataclass(frozen=True)
class Conversation:
    """What a rendering renders: ``role``'s server, the messages and the tools."""

    role: str
    spec: ServerSpec
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None

    def template_body(self) -> dict[str, Any]:
        """The chat template's inputs as a server's rendering endpoint takes them."""
        body: dict[str, Any] = {"messages": self.messages}
        if self.spec.chat_template_kwargs:
            body["chat_template_kwargs"] = self.spec.chat_template_kwargs
        if self.tools:
            body["tools"] = self.tools
        return body


class Dialect(Protocol):
    """One kind of server: how its prompts are rendered, what goes into its requests, how it
    tokenizes and how its errors are worded. Each kind is one module of this package."""

    name: str
    """Its name, as :attr:`~langchain_glimprouter.core.prompts.RenderCache.methods` keeps it."""
    hints: Hints
    renders_with: str | None
    """The server endpoint it renders with, for the error of a server that renders none
    (None: it renders client-side)."""

    def renders(self, spec: ServerSpec, known: str | None) -> bool:
        """Whether to try rendering ``spec``'s prompts this way; ``known`` is the kind that
        rendered for this server before (None: none yet)."""
        ...

    def render(self, talk: Conversation) -> Program[str]:
        """The conversation as the model's chat template writes it, with the generation prompt
        (the thinking block not yet opened). A server without the endpoint raises
        :class:`~langchain_glimprouter.errors.BackendResponseError` with a status in
        :data:`NOT_SUPPORTED`."""
        ...

    def body_extras(self) -> dict[str, Any]:
        """Fields of every completions request besides the OpenAI ones the core sets."""
        ...

    def constrain(self, schema: dict[str, Any]) -> dict[str, Any]:
        """The request fields that constrain an answer to the JSON ``schema``."""
        ...

    def tokenize(
        self, role: str, model: str, text: str, add_special_tokens: bool
    ) -> Program[list[int] | None] | None:
        """A program of one request that returns ``text``'s token ids as the server tokenizes
        a prompt (None: the server could not say), or None where the kind has no tokenizer."""
        ...

    def server_error(
        self, role: str, url: str, status: int, message: str
    ) -> GlimpRouterError | None:
        """The typed error of an error answer this kind words its own way (None: not one)."""
        ...


class ServerDialect:
    """The defaults of a kind whose server renders: tried when there is no client-side
    template and no other kind rendered for the server before; vLLM's request extras and
    structured outputs (which servers that do not read them ignore); no tokenizer; no error of
    its own wording. A kind overrides what it does otherwise, and :meth:`render`."""

    name = ""
    renders_with: str | None = None

    def renders(self, spec: ServerSpec, known: str | None) -> bool:
        return spec.chat_template is None and known in (None, self.name)

    def body_extras(self) -> dict[str, Any]:
        """Usage in every chunk, and no special tokens added to a prompt that the chat
        template already wrote them into."""
        return {
            "stream_options": {"include_usage": True, "continuous_usage_stats": True},
            "add_special_tokens": False,
        }

    def constrain(self, schema: dict[str, Any]) -> dict[str, Any]:
        return {"structured_outputs": {"json": schema}}

    def tokenize(
        self, role: str, model: str, text: str, add_special_tokens: bool
    ) -> Program[list[int] | None] | None:
        return None

    def server_error(
        self, role: str, url: str, status: int, message: str
    ) -> GlimpRouterError | None:
        return None
