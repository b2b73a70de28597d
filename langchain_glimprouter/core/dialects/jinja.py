"""A client-side chat template (``chat_template`` set): the prompt is rendered here with Jinja,
as transformers does, and the server only completes. What goes into its requests, how it
tokenizes and how its errors are worded are vLLM's (which other servers ignore or refuse
once): a template says nothing of the server behind it, and the usual one is vLLM."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from langchain_glimprouter.core.dialects.base import Conversation
from langchain_glimprouter.core.dialects.vllm import VllmDialect
from langchain_glimprouter.core.ops import Program
from langchain_glimprouter.core.servers import ServerSpec
from langchain_glimprouter.errors import PromptRenderingError


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


def call_with_object_args(call: dict[str, Any]) -> dict[str, Any]:
    """A tool call with its arguments as an object (the OpenAI format has a JSON string)."""
    function = call.get("function") or {}
    args = function.get("arguments")
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except ValueError:
            return call
    return {**call, "function": {**function, "arguments": args}}


def _jinja_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tool-call arguments as objects, as transformers hands them to templates (the OpenAI
    format, which vLLM takes and converts itself, has them as JSON strings)."""
    out = []
    for message in messages:
        calls = message.get("tool_calls")
        if calls:
            message = {**message, "tool_calls": [call_with_object_args(c) for c in calls]}
        out.append(message)
    return out


class JinjaDialect(VllmDialect):
    """A server behind a client-side template: vLLM's but for the rendering."""

    name = "jinja"
    renders_with: str | None = None

    def renders(self, spec: ServerSpec, known: str | None) -> bool:
        return spec.chat_template is not None

    def render(self, talk: Conversation) -> Program[str]:
        yield from ()  # a program that needs no I/O
        spec = talk.spec
        assert spec.chat_template is not None
        variables = {**spec.chat_template_kwargs, **({"tools": talk.tools} if talk.tools else {})}
        try:
            return render_jinja(spec.chat_template, _jinja_messages(talk.messages), **variables)
        except TemplateError as exc:
            raise PromptRenderingError(
                f"Backend.chat_template failed: {exc}", role=talk.role, url=spec.base_url
            ) from exc


JINJA = JinjaDialect()
