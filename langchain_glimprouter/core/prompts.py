"""Render a conversation into each backend's own prompt text, with the thinking block opened.

How a server kind renders is its dialect's (:mod:`~langchain_glimprouter.core.dialects`); they
are tried in this order:

1. ``chat_template`` is set: render it client-side with Jinja, as transformers does; the
   first prompt for a server is tokenized by it once, to find a doubled or missing BOS
   (:mod:`~langchain_glimprouter.core.dialects.bos`).
2. vLLM: ``POST /tokenize`` with the messages and ``add_generation_prompt`` gives the ids of the
   server-side rendering; ``POST /detokenize`` turns them back into text.
3. llama.cpp's C++ server (``llama-server``): ``POST /apply-template``. llama-cpp-python's server
   has no such endpoint: give it the GGUF's template as in 1
   (:func:`~langchain_glimprouter.gguf.gguf_chat_template`).
4. Otherwise a :class:`~langchain_glimprouter.errors.PromptRenderingError` that says how to set a
   template.

The text always ends with exactly one opened ``<think>\\n`` (R1-Distill's template opens it
already; Qwen3's and most others' do not). Renders are cached per conversation and the working
method per server, so a conversation costs the server at most two extra requests once (with
tools, up to three renderings: see :func:`render`).
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections import OrderedDict
from typing import Any

from langchain_glimprouter.core.dialects import DIALECTS, NOT_SUPPORTED, Dialect
from langchain_glimprouter.core.dialects.base import Conversation
from langchain_glimprouter.core.dialects.bos import check_bos
from langchain_glimprouter.core.dialects.jinja import JINJA, call_with_object_args, render_jinja
from langchain_glimprouter.core.ops import Program
from langchain_glimprouter.core.servers import ServerSpec
from langchain_glimprouter.core.tool_calls import ToolCallParser
from langchain_glimprouter.errors import BackendResponseError, PromptRenderingError

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"

__all__ = ["THINK_CLOSE", "THINK_OPEN", "RenderCache", "StagedRenders", "inline_tools",
           "open_thinking", "render", "render_jinja"]  # fmt: skip


def open_thinking(prompt: str) -> str:
    """Return ``prompt`` ending in exactly one opened ``<think>\\n``."""
    tail = prompt.rstrip(" \t\n")
    if tail.endswith(THINK_CLOSE):
        raise ValueError(
            "the chat template already closed the thinking block (enable_thinking=False?); "
            "the router needs it open"
        )
    if tail.endswith(THINK_OPEN):
        return tail + "\n"
    return prompt + THINK_OPEN + "\n"


RENDER_CACHE_ENTRIES = 256
"""Renders a :class:`RenderCache` keeps at most."""
RENDER_CACHE_BYTES = 64 * 1024 * 1024
"""The memory a :class:`RenderCache`'s texts may take in all (64 MiB)."""
RENDER_ENTRY_BYTES = 8 * 1024 * 1024
"""A render whose text takes more (8 MiB) is not kept: it would push out many smaller ones."""


def cache_key(*parts: Any) -> str:
    """A short key of ``parts`` (a digest of their JSON): a conversation of megabytes is not
    kept twice, as the key and as its render."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class RenderCache:
    """Rendered prompts per (role, conversation), least recently used first out, bounded in
    entries (``size``) and in the bytes their texts take (``max_bytes``); a text over
    ``max_entry_bytes`` is not kept. A routed call writes through :meth:`staged`, so that a
    call the backends refuse leaves nothing behind."""

    def __init__(
        self,
        size: int = RENDER_CACHE_ENTRIES,
        *,
        max_bytes: int = RENDER_CACHE_BYTES,
        max_entry_bytes: int = RENDER_ENTRY_BYTES,
    ) -> None:
        self._size, self._max_bytes = size, max_bytes
        self._max_entry = min(max_entry_bytes, max_bytes)
        self._texts: OrderedDict[str, str] = OrderedDict()
        self._bytes = 0
        self.methods: dict[str, str] = {}
        """The rendering method that worked, per server URL: the name of its dialect
        ('jinja', 'vllm' or 'llamacpp'), which also words the server's requests."""
        self.bos: dict[str, str] = {}
        """Per server and client-side template (a :func:`cache_key` of URL, template and
        variables): the BOS text to drop from its prompts, as
        :func:`~langchain_glimprouter.core.dialects.bos.check_bos` found ("" for none)."""
        self.tokenizers: dict[str, str] = {}
        """The kind of server whose tokenizer answered that check, per server URL ('vLLM' or
        'llama-cpp-python'): the latter's streams report no usage, so its prompt tokens are
        counted with its tokenizer."""

    def __len__(self) -> int:
        return len(self._texts)

    @property
    def nbytes(self) -> int:
        """The memory the kept texts take (``sys.getsizeof`` of each)."""
        return self._bytes

    def get(self, key: str) -> str | None:
        text = self._texts.get(key)
        if text is not None:
            self._texts.move_to_end(key)
        return text

    def put(self, key: str, text: str) -> None:
        size = sys.getsizeof(text)
        if size > self._max_entry:
            return
        old = self._texts.pop(key, None)
        if old is not None:
            self._bytes -= sys.getsizeof(old)
        self._texts[key] = text
        self._bytes += size
        while len(self._texts) > self._size or self._bytes > self._max_bytes:
            _, dropped = self._texts.popitem(last=False)
            self._bytes -= sys.getsizeof(dropped)

    def staged(self) -> StagedRenders:
        """A view for one call: reads this cache, keeps its own renders apart until
        :meth:`StagedRenders.commit`."""
        return StagedRenders(self)


class StagedRenders:
    """One call's renders: read from the shared :class:`RenderCache`, written to it only on
    :meth:`commit` (once the backends took the call), so a refused call caches nothing."""

    def __init__(self, cache: RenderCache) -> None:
        self.cache = cache
        self.methods = cache.methods
        self.bos = cache.bos
        self.tokenizers = cache.tokenizers
        self._pending: dict[str, str] = {}

    def get(self, key: str) -> str | None:
        return self._pending.get(key) or self.cache.get(key)

    def put(self, key: str, text: str) -> None:
        self._pending[key] = text

    def commit(self) -> None:
        """Keep this call's renders in the shared cache (again: nothing more to keep)."""
        for key, text in self._pending.items():
            self.cache.put(key, text)
        self._pending.clear()


Renders = RenderCache | StagedRenders
"""Where :func:`render` finds and keeps renders."""


def inline_tools(
    messages: list[dict[str, Any]], tools: list[dict[str, Any]], parser: ToolCallParser
) -> list[dict[str, Any]]:
    """The conversation for a chat template that ignores tools: the tools described in the
    system message, past calls written in the parser's format, tool results as user turns."""
    out: list[dict[str, Any]] = []
    prompt = parser.tools_prompt(tools) if tools else None
    for message in messages:
        role, content = message.get("role"), str(message.get("content") or "")
        if role == "system" and prompt is not None:
            out.append({"role": "system", "content": f"{content}\n\n{prompt}".lstrip()})
            prompt = None
        elif role == "assistant" and message.get("tool_calls"):
            calls = [call_with_object_args(c)["function"] for c in message["tool_calls"]]
            written = [parser.format_call(c.get("name", ""), c.get("arguments")) for c in calls]
            out.append({"role": "assistant", "content": "\n".join([content, *written]).strip()})
        elif role == "tool":
            result = parser.format_result(content)
            if out and out[-1].get("tool_results"):  # results of one turn: one user message
                out[-1]["content"] += "\n" + result
            else:
                out.append({"role": "user", "content": result, "tool_results": True})
        else:
            out.append(message)
    if prompt is not None:
        out.insert(0, {"role": "system", "content": prompt})
    return [{k: v for k, v in m.items() if k != "tool_results"} for m in out]


def _without_tools(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in m.items() if k != "tool_calls"} for m in messages]


def render(
    role: str,
    spec: ServerSpec,
    messages: list[dict[str, Any]],
    cache: Renders,
    tools: list[dict[str, Any]] | None = None,
) -> Program[str]:
    """Program that returns the server's prompt for ``messages``, thinking block opened.

    ``tools`` go to the chat template (vLLM's ``/tokenize`` takes them, Jinja gets ``tools``).
    When there are tools or past tool calls, the conversation is also rendered without them
    (once per conversation, cached): if both texts are equal the template ignores tools, and
    the conversation is rendered with the tools written into it by :func:`inline_tools`, in
    the format of ``spec.tool_parser``.
    """
    text = yield from _render(role, spec, messages, cache, tools)
    if tools or any(m.get("tool_calls") for m in messages):
        plain = yield from _render(role, spec, _without_tools(messages), cache, None)
        if plain == text:
            inlined = inline_tools(messages, tools or [], spec.tool_parser)
            text = yield from _render(role, spec, inlined, cache, None)
    return text


def _render(
    role: str,
    spec: ServerSpec,
    messages: list[dict[str, Any]],
    cache: Renders,
    tools: list[dict[str, Any]] | None,
) -> Program[str]:
    """One rendering, from the cache or by the first dialect that can; the dialect that
    rendered is remembered for the server."""
    url = spec.base_url
    template = [spec.chat_template, spec.chat_template_kwargs]
    key = cache_key(url, spec.model, template, messages, tools)
    cached = cache.get(key)
    if cached is not None:
        return cached
    known = cache.methods.get(url)
    text: str | None = None
    for dialect in DIALECTS:
        if dialect.renders(spec, known):
            talk = Conversation(role, spec, messages, tools)
            text = yield from _attempt(dialect, talk, known)
            if text is not None:
                break
    if text is None:
        raise _no_rendering(role, url)
    if dialect is JINJA:
        text = yield from _one_bos(role, spec, text, cache)
    try:
        text = open_thinking(text)
    except ValueError as exc:
        raise PromptRenderingError(str(exc), role=role, url=url) from exc
    cache.methods[url] = dialect.name
    cache.put(key, text)
    return text


def _one_bos(role: str, spec: ServerSpec, text: str, cache: Renders) -> Program[str]:
    """``text`` with exactly one BOS as the server reads it: checked once per server and
    template (:func:`~langchain_glimprouter.core.dialects.bos.check_bos`), corrected after."""
    key = cache_key(spec.base_url, spec.chat_template, spec.chat_template_kwargs)
    if key not in cache.bos:
        cache.bos[key], kind = yield from check_bos(role, spec, text)
        if kind is not None:
            cache.tokenizers[spec.base_url] = kind
    drop = cache.bos[key]
    return text[len(drop) :] if drop and text.startswith(drop) else text


def _attempt(dialect: Dialect, talk: Conversation, known: str | None) -> Program[str | None]:
    """``dialect``'s rendering; None when the server has no such endpoint and was not known
    to be of this kind (then the next kind is tried)."""
    try:
        return (yield from dialect.render(talk))
    except BackendResponseError as exc:
        if exc.status_code not in NOT_SUPPORTED or known == dialect.name:
            raise
        return None


def _no_rendering(role: str, url: str) -> PromptRenderingError:
    endpoints = [f"no {d.renders_with}" for d in DIALECTS if d.renders_with is not None]
    return PromptRenderingError(
        f"the server renders no chat template ({', '.join(endpoints)}; llama-cpp-python's "
        "server has neither). Pass the model's Jinja template as Backend(chat_template=...); "
        "for a GGUF model, Backend(..., **gguf_chat_template(path)) takes the one in the file.",
        role=role,
        url=url,
    )
