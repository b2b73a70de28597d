"""An OpenAI chat completions request body, checked as vLLM's entrypoints check it: by a
pydantic model of OpenAI's fields (:class:`ChatCompletionRequest`), whose extra fields are the
router settings a call may override. What the Router takes (OpenAI-style dicts, the call's
settings) comes out of it as a :class:`ChatRequest`; what the proxy cannot honour is refused
with a 400 that names the field.

Sampling values are checked here with vLLM's own ranges (``SamplingParams._verify_args`` and
the request model of vllm/entrypoints/openai/protocol.py), before any backend is called, so a
value a server would refuse is the client's 400; OpenAI's names keep OpenAI's meaning
(``top_logprobs`` and ``logprobs`` are about the answer's tokens, never the glimpse k)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError
from pydantic_core import ErrorDetails

from langchain_glimprouter.core.settings import PER_CALL
from langchain_glimprouter.errors import InvalidArgumentError
from langchain_glimprouter.proxy.errors import ApiError
from langchain_glimprouter.router import PreparedCall, Router

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
"""The seeds vLLM takes (``torch.iinfo(torch.long)``)."""
_OPEN = ConfigDict(extra="allow")
Temperature = Annotated[float, Field(ge=0, le=2, allow_inf_nan=False)]
"""vLLM's range of ``temperature`` (``SamplingParams._verify_args``), for chat and Responses."""
TopP = Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]
"""vLLM's range of ``top_p``."""
Seed = Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX)]
"""vLLM's range of ``seed`` (its request model's ``torch.long`` bounds)."""
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
    """A router setting: checked by the Router (``must be positive``)."""
    max_completion_tokens: int | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    seed: Seed | None = None
    # vLLM's sampling extras, passed to both servers:
    frequency_penalty: float | None = Field(None, ge=-2, le=2, allow_inf_nan=False)
    presence_penalty: float | None = Field(None, ge=-2, le=2, allow_inf_nan=False)
    repetition_penalty: float | None = Field(None, gt=0, allow_inf_nan=False)
    top_k: int | None = Field(None, ge=-1)
    min_p: float | None = Field(None, ge=0, le=1, allow_inf_nan=False)
    chat_template_kwargs: dict[str, Any] | None = None
    """Variables of both servers' chat templates (``{"enable_thinking": false}``)."""
    reasoning_effort: str | None = None
    """A level of the operator's table of reasoning budgets (:data:`REASONING_EFFORTS`)."""
    # OpenAI's, refused unless they ask for what the proxy does anyway (see _refuse_unsupported):
    n: int | None = None
    logprobs: StrictBool | None = None
    top_logprobs: int | None = None
    tools: list[Tool] | None = None
    tool_choice: str | NamedToolChoice | None = None
    """``none``, ``auto``, ``required`` or a named function (the Router checks the name)."""
    response_format: ResponseFormat | None = None
    # Accepted and ignored (see IGNORED):
    user: str | None = None
    metadata: dict[str, Any] | None = None
    store: bool | None = None
    parallel_tool_calls: bool | None = None


IGNORED = ("user", "metadata", "store", "parallel_tool_calls")
"""Fields accepted with any value and ignored."""
PASSED = ("frequency_penalty", "presence_penalty", "repetition_penalty", "top_k", "min_p")
"""vLLM's sampling fields sent as they are to both servers (in each request's body)."""
REASONING_EFFORTS: dict[str, int] = {"minimal": 256, "low": 1024, "medium": 4096, "high": 8192}
"""The default table of ``reasoning_effort`` levels to reasoning budgets
(``max_reasoning_tokens``), each capped by the router's own budget; the operator's table
replaces it (``create_app(reasoning_effort_budgets=...)``, ``--reasoning-effort-budgets``)."""
CLIENT_SETTINGS = sorted(set(PER_CALL) - {"top_logprobs"})
"""The router settings a request may give as extra fields (the glimpse k, the router's
``top_logprobs``, is the operator's: the request's ``top_logprobs`` is OpenAI's)."""
SETTINGS_IN_OPENAI = ("max_tokens", "temperature", "top_p", "seed")
"""OpenAI's fields that are router settings of the same name and meaning."""
MUST_BE = {
    "model": "the served model's name",
    "messages": "a non-empty list of messages ({'role': ..., 'content': ...} objects)",
    "stream": "a boolean",
    "stream_options": "an object ({'include_usage': true})",
    "stop": "a string or a list of strings",
    "max_completion_tokens": "an integer",
    "temperature": "a number in [0, 2]",
    "top_p": "a number in (0, 1]",
    "seed": "an integer in [-2**63, 2**63 - 1]",
    "frequency_penalty": "a number in [-2, 2]",
    "presence_penalty": "a number in [-2, 2]",
    "repetition_penalty": "a number > 0",
    "top_k": "an integer: -1 or 0 (no limit), or at least 1",
    "min_p": "a number in [0, 1]",
    "chat_template_kwargs": "an object of the chat template's variables",
    "reasoning_effort": "a string ('low', 'medium', 'high')",
    "n": "an integer",
    "logprobs": "a boolean",
    "top_logprobs": "an integer",
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


def parse_chat_request(
    body: Any,
    router: Router,
    served_name: str,
    efforts: Mapping[str, int] = REASONING_EFFORTS,
) -> ChatRequest:
    """Check ``body`` and turn it into a :class:`ChatRequest` (raises :class:`ApiError`);
    ``efforts`` is the table of ``reasoning_effort`` levels to reasoning budgets.

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
    settings = {name: getattr(request, name) for name in SETTINGS_IN_OPENAI if name in given}
    settings |= request.model_extra or {}
    effort = request.reasoning_effort
    if effort is not None and "max_reasoning_tokens" not in settings:
        settings["max_reasoning_tokens"] = effort_budget(effort, efforts, router)
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
            f"remove them. Router settings may be given as extra fields: {CLIENT_SETTINGS}.",
            unknown[0],
            "unsupported_parameter",
        )


def _refuse_what_vllm_refuses(request: ChatCompletionRequest) -> None:
    """What vLLM refuses beyond the fields' ranges (``SamplingParams._verify_args`` and its
    chat request model's validators), refused here before any server is called."""
    stops = [request.stop] if isinstance(request.stop, str) else request.stop or []
    if "" in stops:
        raise bad("stop cannot contain an empty string (vLLM refuses it); leave it out.", "stop")
    if request.tools == []:
        raise bad(
            "tools must not be an empty array: give at least one tool, or leave tools out.",
            "tools",
        )


def _refuse_unsupported(request: ChatCompletionRequest) -> None:
    refuse_unknown(request)
    _refuse_what_vllm_refuses(request)
    if request.n is not None and request.n != 1:
        raise bad(
            f"n={request.n}: the glimprouter proxy answers one choice per request (each is a "
            "routed call of its own); send n separate requests, or n=1.",
            "n",
            "unsupported_value",
        )
    if request.logprobs:
        raise bad(
            "logprobs=true: the answer tokens' logprobs are not offered by the glimprouter "
            "proxy (the answer is streamed through the router, not sampled with them); send "
            "logprobs=false or leave it out.",
            "logprobs",
            "unsupported_value",
        )
    if request.top_logprobs is not None:
        raise bad(
            "top_logprobs asks for the answer tokens' top logprobs (OpenAI's meaning), which "
            "the glimprouter proxy does not offer; leave it out. (The router's glimpse k, "
            "its own top_logprobs setting, is the operator's: glimprouter proxy "
            "--top-logprobs; it cannot be set per request.)",
            "top_logprobs",
            "unsupported_parameter",
        )


def check_efforts(table: Mapping[str, int]) -> dict[str, int]:
    """An operator's table of ``reasoning_effort`` levels to budgets, checked (raises
    :class:`~langchain_glimprouter.errors.InvalidArgumentError`)."""
    out = dict(table)
    wrong = [f"{level}={budget!r}" for level, budget in out.items()
             if not isinstance(budget, int) or isinstance(budget, bool) or budget < 1]  # fmt: skip
    if not out or wrong:
        raise InvalidArgumentError(
            "reasoning effort budgets must map each level to a positive token budget, e.g. "
            f"low=1024,medium=4096,high=8192 (got {wrong or 'none'}).",
            param="reasoning_effort_budgets",
        )
    return out


def parse_efforts(text: str) -> dict[str, int]:
    """``low=1024,medium=4096,high=8192`` as a table of levels to budgets (the CLI flag's)."""
    table: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        level, _, budget = item.partition("=")
        try:
            table[level.strip()] = int(budget)
        except ValueError:
            raise InvalidArgumentError(
                f"reasoning effort budgets: {item!r} is not level=tokens.",
                param="reasoning_effort_budgets",
            ) from None
    return check_efforts(table)


def effort_budget(
    effort: str, efforts: Mapping[str, int], router: Router, param: str = "reasoning_effort"
) -> int:
    """The reasoning budget of ``effort`` (the request's field ``param``): the operator's
    table's, at most the router's own."""
    if effort not in efforts:
        raise bad(
            f"{param}={effort!r} is not one of this proxy's levels {sorted(efforts)}.",
            param,
            "unsupported_value",
        )
    return min(efforts[effort], router.config.max_reasoning_tokens)


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
    extra = {name: getattr(request, name) for name in PASSED if getattr(request, name) is not None}
    if extra:
        arguments["extra_body"] = extra
    if request.chat_template_kwargs:
        arguments["chat_template_kwargs"] = request.chat_template_kwargs
    return arguments


def dump(model: BaseModel) -> dict[str, Any]:
    """A request object as the client gave it (unset fields left out, its own field names)."""
    return model.model_dump(exclude_unset=True, by_alias=True)
