"""Render a conversation into each backend's own prompt text, with the thinking block opened.

Ways to render, in order of preference:

1. ``Backend.chat_template`` is set: render it client-side with Jinja, as transformers does.
2. vLLM: ``POST /tokenize`` with the messages and ``add_generation_prompt`` gives the ids of the
   server-side rendering; ``POST /detokenize`` turns them back into text.
3. llama.cpp's server: ``POST /apply-template``.
4. Otherwise a :class:`~langchain_glimprouter.errors.PromptRenderingError` that says how to set a
   template.

The text always ends with exactly one opened ``<think>\\n`` (R1-Distill's template opens it
already; Qwen3's and most others' do not). Renders are cached per conversation and the working
method per backend, so a conversation costs the server at most two extra requests once.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from datetime import datetime
from typing import Any

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from langchain_glimprouter.backends import Backend
from langchain_glimprouter.errors import BackendResponseError, PromptRenderingError
from langchain_glimprouter.program import Program, Request

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


def render(
    role: str, backend: Backend, messages: list[dict[str, Any]], cache: RenderCache
) -> Program[str]:
    """Program that returns the backend's prompt for ``messages``, thinking block opened."""
    url = backend.base_url
    template = [backend.chat_template, backend.chat_template_kwargs]
    key = json.dumps([url, backend.model, template, messages], sort_keys=True, default=str)
    cached = cache.get(key)
    if cached is not None:
        return cached
    method = cache.methods.get(url)
    text: str | None = None
    if backend.chat_template is not None:
        method = "jinja"
        try:
            text = render_jinja(backend.chat_template, messages, **backend.chat_template_kwargs)
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
            answer = yield Request(role, "POST", "/apply-template", {"messages": messages})
            text, method = str(answer["prompt"]), "llamacpp"
        except BackendResponseError as exc:
            if exc.status_code not in _NOT_SUPPORTED or method == "llamacpp":
                raise
    if text is None or method is None:
        raise PromptRenderingError(
            "the server renders no chat template (no vLLM /tokenize, no llama.cpp "
            "/apply-template). Pass the model's Jinja template as Backend(chat_template=...).",
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
