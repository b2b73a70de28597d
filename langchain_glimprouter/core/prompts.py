"""Render a conversation into each backend's own prompt text, with the thinking block opened.

Ways to render, in order of preference:

1. ``Backend.chat_template`` is set: render it client-side with Jinja, as transformers does.
2. vLLM: ``POST /tokenize`` with the messages and ``add_generation_prompt`` gives the ids of the
   server-side rendering; ``POST /detokenize`` turns them back into text.
3. llama.cpp's C++ server (``llama-server``): ``POST /apply-template``. llama-cpp-python's server
   has no such endpoint: give it the GGUF's template as in 1
   (:func:`~langchain_glimprouter.gguf.gguf_chat_template`).
4. Otherwise a :class:`~langchain_glimprouter.errors.PromptRenderingError` that says how to set a
   template.

The text always ends with exactly one opened ``<think>\\n`` (R1-Distill's template opens it
already; Qwen3's and most others' do not). Renders are cached per conversation and the working
method per backend, so a conversation costs the server at most two extra requests once (with
tools, up to three renderings: see :func:`render`).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from datetime import datetime
from typing import TYPE_CHECKING, Any

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from langchain_glimprouter.core.ops import Program, Request
from langchain_glimprouter.core.tool_calls import ToolCallParser
from langchain_glimprouter.errors import BackendResponseError, PromptRenderingError

if TYPE_CHECKING:  # only for annotations: the core imports no HTTP client
    from langchain_glimprouter.backend import Backend

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"

_NOT_SUPPORTED = (404, 405, 501)


def _raise_exception(message: str) -> None:
    raise TemplateError(message)


def render_jinja(template: str, messages: list[dict[str, Any]], **variables: Any) -> str:
    """Render a Hugging Face style chat template with the generation prompt."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.filters["tojson"] = lambda value, indent=None: json.dumps(
        value, ensure_ascii=False, indent=indent
    )
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(template).render(
        messages=messages, add_generation_prompt=True, **variables
    )


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
        """The rendering method that worked, per server URL: 'jinja', 'vllm' or 'llamacpp'."""

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


def _jinja_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tool-call arguments as objects, as transformers hands them to templates (the OpenAI
    format, which vLLM takes and converts itself, has them as JSON strings)."""
    out = []
    for message in messages:
        calls = message.get("tool_calls")
        if calls:
            message = {**message, "tool_calls": [_call_with_object_args(c) for c in calls]}
        out.append(message)
    return out


def _call_with_object_args(call: dict[str, Any]) -> dict[str, Any]:
    function = call.get("function") or {}
    args = function.get("arguments")
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except ValueError:
            return call
    return {**call, "function": {**function, "arguments": args}}


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
            calls = [_call_with_object_args(c)["function"] for c in message["tool_calls"]]
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
    backend: Backend,
    messages: list[dict[str, Any]],
    cache: RenderCache,
    tools: list[dict[str, Any]] | None = None,
) -> Program[str]:
    """Program that returns the backend's prompt for ``messages``, thinking block opened.

    ``tools`` go to the chat template (vLLM's ``/tokenize`` takes them, Jinja gets ``tools``).
    When there are tools or past tool calls, the conversation is also rendered without them
    (once per conversation, cached): if both texts are equal the template ignores tools, and
    the conversation is rendered with the tools written into it by :func:`inline_tools`, in
    the format of ``backend.tool_parser``.
    """
    text = yield from _render(role, backend, messages, cache, tools)
    if tools or any(m.get("tool_calls") for m in messages):
        plain = yield from _render(role, backend, _without_tools(messages), cache, None)
        if plain == text:
            inlined = inline_tools(messages, tools or [], backend.tool_parser)
            text = yield from _render(role, backend, inlined, cache, None)
    return text


def _render(
    role: str,
    backend: Backend,
    messages: list[dict[str, Any]],
    cache: RenderCache,
    tools: list[dict[str, Any]] | None,
) -> Program[str]:

    url = backend.base_url
    template = [backend.chat_template, backend.chat_template_kwargs]
    key = json.dumps([url, backend.model, template, messages, tools], sort_keys=True, default=str)
    cached = cache.get(key)
    if cached is not None:
        return cached
    variables = {**backend.chat_template_kwargs, **({"tools": tools} if tools else {})}
    method = cache.methods.get(url)
    text: str | None = None
    if backend.chat_template is not None:
        method = "jinja"
        try:
            text = render_jinja(backend.chat_template, _jinja_messages(messages), **variables)
        except TemplateError as exc:
            raise PromptRenderingError(
                f"Backend.chat_template failed: {exc}", role=role, url=url
            ) from exc
    if text is None and method in (None, "vllm"):
        body: dict[str, Any] = {
            "model": backend.model,
            "messages": messages,
            "add_generation_prompt": True,
        }
        if backend.chat_template_kwargs:
            body["chat_template_kwargs"] = backend.chat_template_kwargs
        if tools:
            body["tools"] = tools
        try:
            ids = yield Request(role, "POST", "/tokenize", body)
            detok = yield Request(
                role, "POST", "/detokenize", {"model": backend.model, "tokens": ids["tokens"]}
            )
            text, method = str(detok["prompt"]), "vllm"
        except BackendResponseError as exc:
            if exc.status_code not in _NOT_SUPPORTED or method == "vllm":
                raise
    if text is None and method in (None, "llamacpp"):
        try:
            body = {"messages": messages}
            if backend.chat_template_kwargs:
                body["chat_template_kwargs"] = backend.chat_template_kwargs
            if tools:
                body["tools"] = tools
            answer = yield Request(role, "POST", "/apply-template", body)
            text, method = str(answer["prompt"]), "llamacpp"
        except BackendResponseError as exc:
            if exc.status_code not in _NOT_SUPPORTED or method == "llamacpp":
                raise
    if text is None or method is None:
        raise PromptRenderingError(
            "the server renders no chat template (no vLLM /tokenize, no llama.cpp "
            "/apply-template; llama-cpp-python's server has neither). Pass the model's Jinja "
            "template as Backend(chat_template=...); for a GGUF model, "
            "Backend(..., **gguf_chat_template(path)) takes the one in the file.",
            role=role,
            url=url,
        )
    try:
        text = open_thinking(text)
    except ValueError as exc:
        raise PromptRenderingError(str(exc), role=role, url=url) from exc
    cache.methods[url] = method
    cache.put(key, text)
    return text
