"""An OpenAI chat completions request body as a router call: LangChain messages, ``stop`` and
the call's keywords (router settings and the answer's tools / response_format), refusing what
the router cannot honour with a 400 that names it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from langchain_core.messages import BaseMessage, convert_to_messages

from langchain_glimprouter._convert import ANSWER_KWARGS, Call
from langchain_glimprouter._settings import NOT_PER_CALL
from langchain_glimprouter.errors import InvalidArgumentError
from langchain_glimprouter.proxy.errors import ApiError

if TYPE_CHECKING:
    from langchain_glimprouter.chat_models import GlimpRouterChatModel

HARMLESS: dict[str, tuple[Any, ...] | None] = {
    "user": None,
    "metadata": None,
    "store": None,
    "parallel_tool_calls": None,
    "n": (1,),
    "frequency_penalty": (0,),
    "presence_penalty": (0,),
    "logprobs": (False,),
}
"""Fields accepted and ignored: with any value (None), or only with one of these values."""
OWN = frozenset(
    {"model", "messages", "stream", "stream_options", "stop", "max_completion_tokens"}
    | ANSWER_KWARGS
)
"""OpenAI fields the proxy reads itself (every router setting is read too, by its name)."""


@dataclass(frozen=True)
class ChatRequest:
    """A parsed request: what ``GlimpRouterChatModel._prepare`` takes, and how to answer."""

    model: str
    messages: list[BaseMessage]
    stop: list[str] | None
    kwargs: dict[str, Any]
    stream: bool
    include_usage: bool
    aliases: dict[str, str]
    """The request's own name of a call keyword it gave under another name (``max_tokens``
    given as ``max_completion_tokens``), for the ``param`` of an error."""

    def prepare(self, router: GlimpRouterChatModel) -> Call:
        """The router's call of this request (``_prepare``, which checks every setting as the
        constructor does); an invalid one is a 400 whose ``param`` is the request's field."""
        try:
            return router._prepare(self.messages, self.stop, dict(self.kwargs))
        except InvalidArgumentError as exc:
            param = exc.param and self.aliases.get(exc.param, exc.param)
            raise bad(str(exc), param) from None


def bad(message: str, param: str | None = None, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, param=param, code=code)


def parse_chat_request(body: Any, router: GlimpRouterChatModel, served_name: str) -> ChatRequest:
    """Check ``body`` and turn it into a :class:`ChatRequest` (raises :class:`ApiError`).

    The router settings (``threshold``, ``max_reasoning_tokens``, ``temperature``, ...) are
    passed on as the call's keywords, which the router validates as its constructor does;
    ``max_completion_tokens`` is the answer's budget, as ``max_tokens`` is. A field whose
    value is null is one not given, as in OpenAI's API (so ``model`` and ``messages`` are
    still required).
    """
    if not isinstance(body, dict):
        raise bad("the request body must be a JSON object.")
    body = {name: value for name, value in body.items() if value is not None}
    settings = set(router.router_settings) - NOT_PER_CALL
    _refuse_unsupported(body, settings)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad(f"model is required: use {served_name!r}.", "model", "missing_required_parameter")
    if model not in (served_name, router.large.model):
        raise ApiError(
            404,
            f"The model {model!r} does not exist; this proxy serves {served_name!r}.",
            param="model",
            code="model_not_found",
        )
    stream, options = body.get("stream", False), body.get("stream_options", {})
    if not isinstance(stream, bool):
        raise bad("stream must be a boolean.", "stream")
    if not isinstance(options, dict):
        raise bad("stream_options must be an object.", "stream_options")
    kwargs = {name: body[name] for name in settings if name in body}
    aliases = {}
    if "max_completion_tokens" in body:
        if "max_tokens" in body and body["max_tokens"] != body["max_completion_tokens"]:
            raise bad("give max_tokens or max_completion_tokens, not both.", "max_tokens")
        kwargs["max_tokens"] = body["max_completion_tokens"]
        aliases["max_tokens"] = "max_completion_tokens"
    kwargs.update(_answer_kwargs(body))
    return ChatRequest(
        model=model,
        messages=_messages(body.get("messages")),
        stop=_stop(body.get("stop")),
        kwargs=kwargs,
        stream=stream,
        include_usage=bool(options.get("include_usage")),
        aliases=aliases,
    )


def _refuse_unsupported(body: dict[str, Any], settings: set[str]) -> None:
    unknown = sorted(set(body) - OWN - set(HARMLESS) - settings)
    if unknown:
        raise bad(
            f"unsupported fields {unknown}: the glimprouter proxy does not implement them; "
            f"remove them. Router settings may be given as extra fields: {sorted(settings)}.",
            unknown[0],
            "unsupported_parameter",
        )
    for name, allowed in HARMLESS.items():
        if allowed is not None and name in body and body[name] not in allowed:
            raise bad(
                f"{name}={body[name]!r} is not supported by the glimprouter proxy; remove it.",
                name,
                "unsupported_value",
            )


def _messages(raw: Any) -> list[BaseMessage]:
    if not isinstance(raw, list) or not raw:
        raise bad("messages must be a non-empty list of messages.", "messages")
    try:
        return convert_to_messages(raw)
    except (ValueError, TypeError, KeyError, NotImplementedError) as exc:
        raise bad(f"messages: {exc}", "messages") from None


def _stop(raw: Any) -> list[str] | None:
    if raw is None:
        return None
    stop = [raw] if isinstance(raw, str) else raw
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise bad("stop must be a string or a list of strings.", "stop")
    return stop or None


def _answer_kwargs(body: dict[str, Any]) -> dict[str, Any]:
    """tools, tool_choice and response_format, as ``bind_tools`` / ``with_structured_output``
    pass them (a ``{"type": "text"}`` response_format is no constraint)."""
    answer = {name: body[name] for name in ANSWER_KWARGS if name in body}
    form = answer.get("response_format", {})
    if not isinstance(form, dict):
        raise bad("response_format must be an object.", "response_format")
    if form.get("type") == "text":
        del answer["response_format"]
    tools = answer.get("tools", [])
    if not isinstance(tools, list) or not all(map(_is_function_tool, tools)):
        raise bad(
            "tools must be a list of {'type': 'function', 'function': {'name': ..., "
            "'parameters': {...}}} objects.",
            "tools",
        )
    return answer


def _is_function_tool(tool: Any) -> bool:
    function = tool.get("function") if isinstance(tool, dict) else None
    return (
        tool.get("type") == "function"
        and isinstance(function, dict)
        and isinstance(function.get("name"), str)
    )
