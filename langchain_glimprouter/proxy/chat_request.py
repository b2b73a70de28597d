"""An OpenAI chat completions request body, checked as vLLM's entrypoints check it: by a
pydantic model of OpenAI's fields (:class:`ChatCompletionRequest`), whose extra fields are the
router settings a call may override. What the Router takes (OpenAI-style dicts, the call's
settings) comes out of it as a :class:`ChatRequest`; what the proxy cannot honour is refused
with a 400 that names the field."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError
from pydantic_core import ErrorDetails

from langchain_glimprouter.core.settings import PER_CALL
from langchain_glimprouter.errors import InvalidArgumentError
from langchain_glimprouter.proxy.errors import ApiError
from langchain_glimprouter.router import PreparedCall, Router

_OPEN = ConfigDict(extra="allow")
"""OpenAI's objects may carry fields this proxy does not read: they are kept and passed on."""


class ChatMessage(BaseModel):
    """A message of the conversation, in the shapes OpenAI and vLLM accept: ``content`` as
    text, as a list of parts, or absent or null (an assistant message that calls tools);
    ``name``; ``tool_calls``; ``tool_call_id``. The Router's
    :func:`~langchain_glimprouter.core.messages.openai_messages` checks the rest (the role,
    each part, each call) and says what is wrong."""

    model_config = _OPEN

    role: str
    content: str | list[Any] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class FunctionDefinition(BaseModel):
    model_config = _OPEN

    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


class Tool(BaseModel):
    model_config = _OPEN

    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(BaseModel):
    name: str


class NamedToolChoice(BaseModel):
    type: Literal["function"] = "function"
    function: NamedFunction


class JsonSchema(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    name: str | None = None
    schema_: dict[str, Any] = Field(alias="schema")
    strict: bool | None = None


class TextFormat(BaseModel):
    type: Literal["text"]


class JsonObjectFormat(BaseModel):
    type: Literal["json_object"]


class JsonSchemaFormat(BaseModel):
    type: Literal["json_schema"]
    json_schema: JsonSchema


ResponseFormat = Annotated[
    TextFormat | JsonObjectFormat | JsonSchemaFormat, Field(discriminator="type")
]


class StreamOptions(BaseModel):
    model_config = _OPEN

    include_usage: StrictBool | None = None


class ChatCompletionRequest(BaseModel):
    """OpenAI's ``POST /v1/chat/completions`` body. Extra fields are router settings (the
    :data:`~langchain_glimprouter.core.settings.PER_CALL` ones), validated by the Router as
    its constructor validates them; so are ``max_tokens``, ``temperature``, ``top_p`` and
    ``seed``, which are router settings too."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    max_tokens: Any = None
    max_completion_tokens: int | None = None
    temperature: Any = None
    top_p: Any = None
    seed: Any = None
    tools: list[Tool] | None = None
    tool_choice: str | NamedToolChoice | None = None
    """``none``, ``auto``, ``required`` or a named function (the Router checks the name)."""
    response_format: ResponseFormat | None = None
    # Accepted and ignored (see IGNORED):
    user: str | None = None
    metadata: dict[str, Any] | None = None
    store: bool | None = None
    parallel_tool_calls: bool | None = None
    n: int | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logprobs: bool | None = None


IGNORED: dict[str, tuple[Any, ...] | None] = {
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
SETTINGS_IN_OPENAI = ("max_tokens", "temperature", "top_p", "seed")
"""OpenAI's fields that are router settings of the same name and meaning."""
MUST_BE = {
    "model": "the served model's name",
    "messages": "a non-empty list of messages ({'role': ..., 'content': ...} objects)",
    "stream": "a boolean",
    "stream_options": "an object ({'include_usage': true})",
    "stop": "a string or a list of strings",
    "max_completion_tokens": "an integer",
    "tools": "a list of {'type': 'function', 'function': {'name': ..., 'parameters': {...}}} "
    "objects",
    "tool_choice": "'none', 'auto', 'required' or {'type': 'function', 'function': {'name': ...}}",
    "response_format": "{'type': 'text'}, {'type': 'json_object'} or {'type': 'json_schema', "
    "'json_schema': {'name': ..., 'schema': {...}}}",
}
"""What a field must be, said when pydantic refuses its value."""


def bad(message: str, param: str | None = None, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, param=param, code=code)


@dataclass(frozen=True)
class ChatRequest:
    """A checked request: what :meth:`Router.prepare` takes, and how to answer."""

    model: str
    """The name the client asked for, which the response repeats."""
    messages: list[dict[str, Any]]
    arguments: dict[str, Any]
    """tools, tool_choice, response_format and stop, as :meth:`Router.prepare` takes them."""
    settings: dict[str, Any]
    """The router settings this call overrides."""
    stream: bool
    include_usage: bool
    aliases: dict[str, str]
    """The request's own name of a setting it gave under another name (``max_tokens`` given
    as ``max_completion_tokens``), for the ``param`` of an error."""

    def prepare(self, router: Router) -> PreparedCall:
        """The router's call of this request (checked as the Router's constructor checks
        its settings, the messages and tools too); an invalid one is a 400 whose ``param``
        is the request's field."""
        try:
            return router.prepare(self.messages, **self.arguments, **self.settings)
        except InvalidArgumentError as exc:
            param = exc.param and self.aliases.get(exc.param, exc.param)
            raise bad(str(exc), param) from None


def parse_chat_request(body: Any, router: Router, served_name: str) -> ChatRequest:
    """Check ``body`` and turn it into a :class:`ChatRequest` (raises :class:`ApiError`).

    A field whose value is null is one not given, as in OpenAI's API (so ``model`` and
    ``messages`` are still required).
    """
    if not isinstance(body, dict):
        raise bad("the request body must be a JSON object.")
    given = {name: value for name, value in body.items() if value is not None}
    try:
        request = ChatCompletionRequest.model_validate(given)
    except ValidationError as exc:
        raise _refusal(exc.errors(), served_name) from None
    _refuse_unsupported(request)
    check_model(request.model, router, served_name)
    settings = {name: given[name] for name in SETTINGS_IN_OPENAI if name in given}
    settings |= request.model_extra or {}
    aliases = {}
    if request.max_completion_tokens is not None:
        if "max_tokens" in settings and settings["max_tokens"] != request.max_completion_tokens:
            raise bad("give max_tokens or max_completion_tokens, not both.", "max_tokens")
        settings["max_tokens"] = request.max_completion_tokens
        aliases["max_tokens"] = "max_completion_tokens"
    options = request.stream_options
    return ChatRequest(
        model=request.model,
        messages=[dump(message) for message in request.messages],
        arguments=_answer_arguments(request),
        settings=settings,
        stream=request.stream,
        include_usage=bool(options and options.include_usage),
        aliases=aliases,
    )


def _refusal(errors: list[ErrorDetails], served_name: str) -> ApiError:
    """The 400 of pydantic's complaint about the first field at fault, naming it: of the
    union's alternatives, the complaint that got furthest into the value."""
    name = str(errors[0]["loc"][0])
    error = max((e for e in errors if e["loc"][0] == name), key=lambda e: len(e["loc"]))
    if name == "model" and error["type"] in ("missing", "string_too_short"):
        return bad(f"model is required: use {served_name!r}.", name, "missing_required_parameter")
    where = _path(error["loc"])
    detail = error["msg"] if where == name else f"{where}: {error['msg']}"
    return bad(f"{name} must be {MUST_BE.get(name, 'valid')} ({detail}).", name)


_MODELS = (ChatCompletionRequest, ChatMessage, Tool, FunctionDefinition, NamedToolChoice,
           NamedFunction, JsonSchemaFormat, JsonSchema, StreamOptions)  # fmt: skip
_FIELDS = frozenset(
    info.alias or name for model in _MODELS for name, info in model.model_fields.items()
)


def _path(loc: tuple[int | str, ...]) -> str:
    """Where in the request pydantic's ``loc`` is (``messages[0].content``), without the
    names pydantic gives a union's alternatives."""
    parts: list[str] = []
    for at in loc:
        part = f"[{at}]" if isinstance(at, int) else f".{at}"
        if (isinstance(at, int) or at in _FIELDS) and parts[-1:] != [part]:
            parts.append(part)
    return "".join(parts).lstrip(".")


def check_model(model: str, router: Router, served_name: str) -> None:
    """A 404 ``model_not_found`` unless ``model`` is the served name or the large model's."""
    if model not in (served_name, router.config.large.model):
        raise ApiError(
            404,
            f"The model {model!r} does not exist; this proxy serves {served_name!r}.",
            param="model",
            code="model_not_found",
        )


def refuse_unknown(request: BaseModel) -> None:
    """A 400 ``unsupported_parameter`` for the first extra field that is no router setting."""
    unknown = sorted(set(request.model_extra or ()) - set(PER_CALL))
    if unknown:
        raise bad(
            f"unsupported fields {unknown}: the glimprouter proxy does not implement them; "
            f"remove them. Router settings may be given as extra fields: {sorted(PER_CALL)}.",
            unknown[0],
            "unsupported_parameter",
        )


def _refuse_unsupported(request: ChatCompletionRequest) -> None:
    refuse_unknown(request)
    for name, allowed in IGNORED.items():
        value = getattr(request, name)
        if allowed is not None and value is not None and value not in allowed:
            raise bad(
                f"{name}={value!r} is not supported by the glimprouter proxy; remove it.",
                name,
                "unsupported_value",
            )


def _answer_arguments(request: ChatCompletionRequest) -> dict[str, Any]:
    """tools, tool_choice, response_format and stop as :meth:`Router.prepare` takes them (a
    ``{"type": "text"}`` response_format is no constraint)."""
    arguments: dict[str, Any] = {}
    if request.tools is not None:
        arguments["tools"] = [dump(tool) for tool in request.tools]
    choice = request.tool_choice
    if choice is not None:
        arguments["tool_choice"] = dump(choice) if isinstance(choice, BaseModel) else choice
    form = request.response_format
    if form is not None and not isinstance(form, TextFormat):
        arguments["response_format"] = dump(form)
    if request.stop:
        arguments["stop"] = [request.stop] if isinstance(request.stop, str) else request.stop
    return arguments


def dump(model: BaseModel) -> dict[str, Any]:
    """A request object as the client gave it (unset fields left out, its own field names)."""
    return model.model_dump(exclude_unset=True, by_alias=True)
