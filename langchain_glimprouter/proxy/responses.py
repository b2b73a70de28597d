"""``POST /v1/responses``: OpenAI's Responses API over the same Router as chat completions,
stateless.

The request (:class:`ResponsesRequest`, checked by pydantic as vLLM's ``ResponsesRequest`` is)
is mapped onto what chat completions hands the Router (a
:class:`~langchain_glimprouter.proxy.chat_request.ChatRequest`): ``instructions`` is a system
message; ``input`` (a string, or a list of items: messages with text parts, and the
``function_call`` and ``function_call_output`` items a client passes back) the conversation,
``reasoning`` items left out as chat completions leaves out a past turn's chain; function
``tools`` in chat's nested shape; ``text.format`` the ``response_format``;
``max_output_tokens`` the answer's budget. What needs state or hosted tools
(``previous_response_id``, ``conversation``, ``prompt``, ``store: true``, ``background: true``,
built-in tools, ``item_reference``) is refused with a 400 that says what to send instead.

The call then runs as a chat completion does (``Proxy.serve`` in :mod:`.app`:
the key, the body limit, the metrics, the error mapping, the disconnect watch and the stream's
end), and its events are written as Responses JSON (:mod:`.responses_json`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError
from starlette.responses import JSONResponse, Response

from langchain_glimprouter.core.answers import RoutedAnswer, RouterEvent
from langchain_glimprouter.proxy.chat_request import (
    REASONING_EFFORTS,
    ChatRequest,
    Seed,
    Temperature,
    TopP,
    bad,
    check_model,
    effort_budget,
    refuse_unknown,
)
from langchain_glimprouter.proxy.errors import ApiError
from langchain_glimprouter.proxy.openai_json import record_headers
from langchain_glimprouter.proxy.responses_json import ResponseShaper
from langchain_glimprouter.proxy.strict_json import dumps
from langchain_glimprouter.router import Router

STATELESS = "the glimprouter proxy is stateless: it stores no responses and runs no hosted tools"
RESEND = (
    "send the whole conversation as `input` instead: your messages, and the previous "
    "response's output items (its function_call items, then your function_call_output items)"
)
REFUSED = {
    "previous_response_id": f"{STATELESS}; {RESEND}.",
    "conversation": f"{STATELESS}; {RESEND}.",
    "prompt": f"{STATELESS} (no stored prompts); send the prompt as `instructions` and `input`.",
    "store": f"{STATELESS}; leave `store` out or send false, and {RESEND}.",
    "background": f"{STATELESS}; leave `background` out (stream for long answers).",
}
"""Fields refused (with a value that needs state), and what to send instead."""
IGNORED = (
    "include", "metadata", "user", "parallel_tool_calls", "truncation", "service_tier",
    "prompt_cache_key", "safety_identifier", "stream_options",
)  # fmt: skip
"""Fields accepted and ignored (``reasoning``'s ``summary`` too; its ``effort`` sets the
reasoning budget, as chat completions' ``reasoning_effort`` does)."""
SETTINGS_IN_OPENAI = ("temperature", "top_p", "seed")
"""Fields that are router settings of the same name, checked with vLLM's ranges (``seed`` is
no field of OpenAI's Responses, but a router setting any request may give)."""


class ResponsesRequest(BaseModel):
    """OpenAI's ``POST /v1/responses`` body. Extra fields are router settings (the
    :data:`~langchain_glimprouter.core.settings.PER_CALL` ones), as in chat completions."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    text: dict[str, Any] | None = None
    max_output_tokens: int | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    seed: Seed | None = None
    stream: StrictBool = False
    # refused with a value (see REFUSED):
    previous_response_id: str | None = None
    conversation: Any = None
    prompt: Any = None
    store: StrictBool | None = None
    background: StrictBool | None = None
    # accepted and ignored (see IGNORED):
    include: list[str] | None = None
    metadata: dict[str, Any] | None = None
    user: str | None = None
    parallel_tool_calls: bool | None = None
    truncation: str | None = None
    service_tier: str | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None
    stream_options: dict[str, Any] | None = None
    reasoning: dict[str, Any] | None = None


@dataclass(frozen=True)
class ResponsesCall:
    """A checked Responses request: the chat request the Router runs, and what the response
    repeats of the request."""

    chat: ChatRequest
    echo: dict[str, Any]


def parse_responses_request(
    body: Any, router: Router, served_name: str, efforts: Mapping[str, int] = REASONING_EFFORTS
) -> ResponsesCall:
    """Check ``body`` and map it onto a chat request (raises :class:`ApiError`); null is a
    field not given. ``reasoning.effort`` sets the reasoning budget from ``efforts``, as
    ``reasoning_effort`` does in chat completions."""
    if not isinstance(body, dict):
        raise bad("the request body must be a JSON object.")
    given = {name: value for name, value in body.items() if value is not None}
    try:
        request = ResponsesRequest.model_validate(given)
    except ValidationError as exc:
        error = exc.errors()[0]
        name = str(error["loc"][0])
        if name == "model" and error["type"] in ("missing", "string_too_short"):
            message = f"model is required: use {served_name!r}."
            raise bad(message, name, "missing_required_parameter") from None
        raise bad(f"{name} is not valid ({error['msg']}).", name) from None
    refuse_unknown(request)
    for name, why in REFUSED.items():
        if getattr(request, name) not in (None, False):
            raise bad(f"{name} is not supported: {why}", name, "unsupported_parameter")
    check_model(request.model, router, served_name)
    settings = {name: getattr(request, name) for name in SETTINGS_IN_OPENAI if name in given}
    settings |= request.model_extra or {}
    if request.max_output_tokens is not None:
        settings["max_tokens"] = request.max_output_tokens
    effort = (request.reasoning or {}).get("effort")
    if effort is not None and "max_reasoning_tokens" not in settings:
        settings["max_reasoning_tokens"] = effort_budget(
            str(effort), efforts, router, "reasoning.effort"
        )
    messages = [{"role": "system", "content": request.instructions}] if request.instructions else []
    messages += input_messages(request.input)
    if not messages:
        raise bad("input must hold at least one message.", "input")
    tools = [function_tool(tool, at) for at, tool in enumerate(request.tools or [])]
    arguments: dict[str, Any] = {"tools": tools} if tools else {}
    if request.tool_choice is not None:
        arguments["tool_choice"] = tool_choice(request.tool_choice)
    form = text_format(request.text or {})
    if form is not None:
        arguments["response_format"] = form
    aliases = {
        "max_tokens": "max_output_tokens",
        "messages": "input",
        "response_format": "text.format",
    }
    chat = ChatRequest(
        model=request.model,
        messages=messages,
        arguments=arguments,
        settings=settings,
        stream=request.stream,
        include_usage=True,  # a Responses stream ends with the whole response and its usage
        aliases=aliases,
    )
    echo = {
        "instructions": request.instructions,
        "max_output_tokens": request.max_output_tokens,
        "tools": request.tools or [],
        "tool_choice": request.tool_choice or "auto",
        "text": {"format": (request.text or {}).get("format") or {"type": "text"}},
        "temperature": request.temperature,
        "top_p": request.top_p,
        "parallel_tool_calls": request.parallel_tool_calls is not False,
        "previous_response_id": None,
        "reasoning": request.reasoning or {"effort": None, "summary": None},
        "store": False,
        "truncation": "disabled",
        "metadata": request.metadata or {},
    }
    return ResponsesCall(chat, echo)


def _builtin(kind: Any, where: str) -> ApiError:
    return bad(
        f"{where}: {kind!r} is a built-in tool, which {STATELESS}; define it as a function "
        "tool ({'type': 'function', 'name': ..., 'parameters': {...}}) and run it yourself.",
        where.split("[")[0],
        "unsupported_value",
    )


def function_tool(tool: dict[str, Any], at: int) -> dict[str, Any]:
    """A Responses function tool (flat: ``{type, name, description, parameters}``) in chat's
    shape (``{type: function, function: {...}}``)."""
    if tool.get("type") != "function":
        raise _builtin(tool.get("type"), f"tools[{at}]")
    if not isinstance(tool.get("name"), str) or not tool["name"]:
        raise bad(f"tools[{at}] needs a name.", "tools")
    function = {k: tool[k] for k in ("name", "description", "parameters") if tool.get(k)}
    return {"type": "function", "function": function}


def tool_choice(choice: str | dict[str, Any]) -> str | dict[str, Any]:
    """``auto``, ``none``, ``required``, or ``{type: function, name}`` in chat's shape."""
    if isinstance(choice, str):
        return choice
    if choice.get("type") == "function":
        return {"type": "function", "function": {"name": choice.get("name")}}
    if choice.get("type") == "allowed_tools":
        raise bad(
            "tool_choice 'allowed_tools' is not supported; send only those tools.",
            "tool_choice",
            "unsupported_value",
        )
    raise _builtin(choice.get("type"), "tool_choice")


def text_format(text: dict[str, Any]) -> dict[str, Any] | None:
    """``text.format`` as chat's ``response_format`` (None: no constraint)."""
    form = text.get("format") or {"type": "text"}
    kind = form.get("type") if isinstance(form, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema" and isinstance(form.get("schema"), dict):
        schema = {k: form[k] for k in ("name", "schema", "strict") if k in form}
        return {"type": "json_schema", "json_schema": schema}
    raise bad(
        "text.format must be {'type': 'text'}, {'type': 'json_object'} or {'type': "
        f"'json_schema', 'name': ..., 'schema': {{...}}}} (got {form!r}).",
        "text",
    )


def _text(content: Any, where: str) -> str:
    """The text of a message's content: a string, or a list of text parts."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise bad(f"{where}.content must be a string or a list of text parts.", "input")
    texts = []
    for at, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in ("input_text", "output_text", "text") or not isinstance(
            part.get("text"), str
        ):
            raise bad(
                f"{where}.content[{at}]: only text parts (input_text, output_text) are "
                f"supported, the router takes text only (got {kind!r}).",
                "input",
            )
        texts.append(part["text"])
    return "".join(texts)


def input_messages(given: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``input`` as chat messages: a function_call item joins the assistant message before
    it (or makes one), a function_call_output item is a tool message; reasoning items are
    left out (the prompt holds a past turn's answer only)."""
    if isinstance(given, str):
        return [{"role": "user", "content": given}]
    messages: list[dict[str, Any]] = []
    for at, item in enumerate(given):
        where = f"input[{at}]"
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "reasoning":
            continue
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "system", "developer", "assistant"):
                raise bad(f"{where}.role must be user, system, developer or assistant.", "input")
            messages.append({"role": role, "content": _text(item.get("content"), where)})
        elif kind == "function_call":
            fields = [item.get(name) for name in ("call_id", "name", "arguments")]
            if not all(isinstance(field, str) for field in fields):
                raise bad(f"{where}: a function_call needs call_id, name and arguments.", "input")
            function = {"name": fields[1], "arguments": fields[2]}
            call = {"id": fields[0], "type": "function", "function": function}
            last = messages[-1] if messages else None
            if last is None or last["role"] != "assistant":
                messages.append(last := {"role": "assistant", "content": None})
            last.setdefault("tool_calls", []).append(call)
        elif kind == "function_call_output":
            output = item.get("output")
            content = output if isinstance(output, str) else _text(output, where)
            if not isinstance(item.get("call_id"), str):
                raise bad(f"{where}: a function_call_output needs its call_id.", "input")
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": content})
        elif kind == "item_reference":
            raise bad(
                f"{where}: item_reference is not supported: {STATELESS}; {RESEND}.",
                "input",
                "unsupported_value",
            )
        else:
            raise _builtin(kind, where)
    return messages


class ResponsesSurface:
    """The Responses API (a :class:`~langchain_glimprouter.proxy.app.Surface`) of one
    request."""

    def __init__(
        self, router: Router, served_name: str, efforts: Mapping[str, int] = REASONING_EFFORTS
    ) -> None:
        self.router, self.served_name, self.efforts = router, served_name, efforts
        self.shaper: ResponseShaper | None = None

    def parse(self, body: Any) -> ChatRequest:
        parsed = parse_responses_request(body, self.router, self.served_name, self.efforts)
        self.shaper = ResponseShaper(parsed.chat.model, parsed.echo)
        return parsed.chat

    def delta(self, event: RouterEvent) -> object:
        assert self.shaper is not None
        return self.shaper.events(event)

    def answer(self, answer: RoutedAnswer) -> Response:
        assert self.shaper is not None
        headers = record_headers(answer.record)
        return JSONResponse(self.shaper.response(answer), headers=headers)

    def writer(self) -> ResponsesWriter:
        assert self.shaper is not None
        return ResponsesWriter(self.shaper)


class ResponsesWriter:
    """A Responses stream (a :class:`~langchain_glimprouter.proxy.app.StreamWriter`): each
    event as OpenAI sends it (``event:`` its type, ``data:`` the event); a failure after the
    start is the last event, ``response.failed``; no ``[DONE]``."""

    def __init__(self, shaper: ResponseShaper) -> None:
        self.shaper = shaper

    def opening(self) -> list[str]:
        return [event_text(event) for event in self.shaper.start()]

    def texts(self, event: RouterEvent) -> list[str]:
        out = self.shaper.events(event)
        if isinstance(event, RoutedAnswer):
            out.append(self.shaper.end(event))
        return [event_text(item) for item in out]

    def failed(self, failure: ApiError) -> str:
        return event_text(self.shaper.failed(failure))

    def closing(self) -> list[str]:
        return []


def event_text(event: dict[str, Any]) -> str:
    """A server-sent event as OpenAI's Responses stream sends it."""
    return f"event: {event['type']}\ndata: {dumps(event)}\n\n"
