"""Render a conversation into each backend's own prompt text, with the thinking block opened.

How a server kind renders is its dialect's (:mod:`~langchain_glimprouter.core.dialects`); they
are tried in this order:

1. ``chat_template`` is set: render it client-side with Jinja, as transformers does.
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

import json
from collections import OrderedDict
from typing import Any

from langchain_glimprouter.core.dialects import DIALECTS, NOT_SUPPORTED, Dialect
from langchain_glimprouter.core.dialects.base import Conversation
from langchain_glimprouter.core.dialects.jinja import call_with_object_args, render_jinja
from langchain_glimprouter.core.ops import Program
from langchain_glimprouter.core.servers import ServerSpec
from langchain_glimprouter.core.tool_calls import ToolCallParser
from langchain_glimprouter.errors import BackendResponseError, PromptRenderingError

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"

__all__ = ["THINK_CLOSE", "THINK_OPEN", "RenderCache", "inline_tools", "open_thinking",
           "render", "render_jinja"]  # fmt: skip


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


class RenderCache:
    """Rendered prompts per (role, conversation), least recently used first out."""

    def __init__(self, size: int = 256) -> None:
        self._size = size
        self._texts: OrderedDict[str, str] = OrderedDict()
        self.methods: dict[str, str] = {}
        """The rendering method that worked, per server URL: the name of its dialect
        ('jinja', 'vllm' or 'llamacpp'), which also words the server's requests."""

    def get(self, key: str) -> str | None:
        text = self._texts.get(key)
        if text is not None:
            self._texts.move_to_end(key)
        return text

    def put(self, key: str, text: str) -> None:
        self._texts[key] = text
        self._texts.move_to_end(key)
        while len(self._texts) > self._size:
            self._texts.popitem(last=False)


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
    cache: RenderCache,
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
    cache: RenderCache,
    tools: list[dict[str, Any]] | None,
) -> Program[str]:
    """One rendering, from the cache or by the first dialect that can; the dialect that
    rendered is remembered for the server."""
    url = spec.base_url
    template = [spec.chat_template, spec.chat_template_kwargs]
    key = json.dumps([url, spec.model, template, messages, tools], sort_keys=True, default=str)
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
    try:
        text = open_thinking(text)
    except ValueError as exc:
        raise PromptRenderingError(str(exc), role=role, url=url) from exc
    cache.methods[url] = dialect.name
    cache.put(key, text)
    return text


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
