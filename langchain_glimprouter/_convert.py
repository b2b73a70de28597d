"""Between LangChain and the routing core: messages to OpenAI-style dicts, the answer's plan
(a forced tool call, a JSON schema) to a constraint, and the core's results and events to an
``AIMessage`` or message chunks (with tool calls parsed out of the answer)."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, cast

from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    InvalidToolCall,
    SystemMessage,
    ToolMessage,
)
from langchain_core.messages.ai import UsageMetadata
from langchain_core.messages.tool import (
    ToolCall,
    ToolCallChunk,
    invalid_tool_call,
    tool_call,
    tool_call_chunk,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.utils.function_calling import convert_to_openai_tool

from langchain_glimprouter._callbacks import EVENTS_KWARG
from langchain_glimprouter._settings import NOT_PER_CALL, check_settings, overrides, route_settings
from langchain_glimprouter.core.engine import route
from langchain_glimprouter.core.events import AnswerDelta, ReasoningDelta, Result, StepDone
from langchain_glimprouter.core.ops import Program
from langchain_glimprouter.core.settings import (
    AnswerConstraint,
    ServerFacts,
)
from langchain_glimprouter.core.strategies import SPECS, AdaptiveThreshold
from langchain_glimprouter.core.tool_calls import (
    CallSplitter,
    InvalidCall,
    ParsedAnswer,
    ParsedCall,
    ToolCallParser,
    new_call_id,
)
from langchain_glimprouter.errors import (
    GlimpRouterError,
    InvalidArgumentError,
)
from langchain_glimprouter.http.drivers import Clients
from langchain_glimprouter.records import StepRecord

if TYPE_CHECKING:
    from langchain_glimprouter.chat_models import GlimpRouterChatModel

PROVIDER = "glimprouter"
ANSWER_KWARGS = frozenset({"tools", "tool_choice", "response_format"})


@dataclass(frozen=True)
class Call:
    """One prepared call: the routing program, its clients, and how to read its answer."""

    program: Program[None]
    clients: Clients
    model_name: str
    parser: ToolCallParser | None
    """Parses tool calls out of the answer; None when no tools are bound (or "none")."""
    forced: bool
    """tool_choice forces a call: an answer without one gets an invalid call saying why."""


def event_data(record: StepRecord) -> dict[str, Any]:
    return record.model_dump()


def require_result(result: Result | None) -> Result:
    if result is None:  # the engine always ends with a Result; this guards the contract
        raise GlimpRouterError("the routing program ended without a result")
    return result


def usage(result: Result) -> UsageMetadata:
    return UsageMetadata(
        input_tokens=result.input_tokens,
        output_tokens=result.output_tokens,
        total_tokens=result.input_tokens + result.output_tokens,
        output_token_details={"reasoning": result.reasoning_tokens},
    )


def response_metadata(result: Result, model_name: str) -> dict[str, Any]:
    return {
        "model_name": model_name,
        "model_provider": PROVIDER,
        "finish_reason": result.finish_reason,
        PROVIDER: result.record.model_dump(),
    }


def forced_tools(
    tools: list[dict[str, Any]], tool_choice: dict[str, Any] | str | bool | None
) -> list[dict[str, Any]] | None:
    """The tools one of which the answer must call, or None when the model decides."""
    if tool_choice in (None, False, "auto", "none"):
        return None
    if not tools:
        raise InvalidArgumentError(
            f"tool_choice={tool_choice!r} needs tools; bind some first.", param="tool_choice"
        )
    if tool_choice in (True, "any", "required"):
        return tools
    name: Any = tool_choice
    if isinstance(tool_choice, dict):
        name = (tool_choice.get("function") or {}).get("name") or tool_choice.get("name")
    chosen = [t for t in tools if t["function"]["name"] == name]
    if not isinstance(name, str) or not chosen:
        known = [t["function"]["name"] for t in tools]
        raise InvalidArgumentError(
            f"tool_choice={tool_choice!r} names no bound tool; use 'auto', 'none', 'any', "
            f"'required', True or one of {known}.",
            param="tool_choice",
        )
    return chosen


def answer_plan(
    tools: list[dict[str, Any]],
    tool_choice: dict[str, Any] | str | bool | None,
    response_format: dict[str, Any] | None,
    parser: ToolCallParser,
) -> tuple[AnswerConstraint | None, bool]:
    """The constraint on the answer, and whether to parse tool calls out of it."""
    forced = forced_tools(tools, tool_choice)
    if response_format is not None:
        if forced is not None:
            raise InvalidArgumentError(
                "response_format and a forced tool_choice exclude each other.",
                param="response_format",
            )
        kind = response_format.get("type")
        if kind == "json_object":
            return AnswerConstraint(schema={"type": "object"}), False
        schema = (response_format.get("json_schema") or {}).get("schema")
        if kind != "json_schema" or not isinstance(schema, dict):
            raise InvalidArgumentError(
                "response_format must be {'type': 'json_object'} or {'type': 'json_schema', "
                f"'json_schema': {{'schema': {{...}}}}}} (got {response_format!r}).",
                param="response_format",
            )
        return AnswerConstraint(schema=schema), False
    if forced is not None:
        call = parser.forced(forced)
        return AnswerConstraint(schema=call.schema, prefix=call.prefix, suffix=call.suffix), True
    return None, bool(tools) and tool_choice != "none"


def tool_call_of(call: ParsedCall | InvalidCall) -> ToolCall | InvalidToolCall:
    if isinstance(call, ParsedCall):
        return tool_call(name=call.name, args=call.args, id=call.id)
    return invalid_tool_call(name=call.name, args=call.text, id=call.id, error=call.error)


def require_call(result: Result, invalid: list[InvalidCall], answer: str) -> InvalidCall | None:
    """A forced call is missing: record why, in ``answer_error`` and in the invalid calls (an
    invalid call made of the whole ``answer`` when the model opened none). Returns that new
    invalid call, if any."""
    record = result.record
    reason = record.answer_error or (invalid[0].error if invalid else None)
    record.answer_error = f"tool_choice forced a tool call, but {reason or 'the answer has none'}"
    invalid[:] = [replace(call, error=record.answer_error) for call in invalid]
    if invalid:
        return None
    added = InvalidCall(text=answer, error=record.answer_error, id=new_call_id())
    invalid.append(added)
    return added


def chat_result(result: Result, call: Call) -> ChatResult:
    parser = call.parser
    answer = parser.parse(result.answer) if parser is not None else ParsedAnswer(result.answer)
    if call.forced and not answer.calls:
        require_call(result, answer.invalid, result.answer)
    content = answer.content.strip() if answer.calls or answer.invalid else answer.content
    message = AIMessage(
        content=content,
        additional_kwargs={"reasoning_content": result.reasoning},
        response_metadata=response_metadata(result, call.model_name),
        usage_metadata=usage(result),
        tool_calls=[cast(ToolCall, tool_call_of(c)) for c in answer.calls],
        invalid_tool_calls=[cast(InvalidToolCall, tool_call_of(c)) for c in answer.invalid],
    )
    return ChatResult(generations=[ChatGeneration(message=message)])


class Chunker:
    """Engine events to message chunks; with a parser, tool calls in the answer become
    ``tool_call_chunks`` (one whole chunk per call, as soon as its end marker arrives)."""

    def __init__(self, call: Call, output_version: str | None) -> None:
        self.model_name = call.model_name
        self.splitter = CallSplitter(call.parser) if call.parser is not None else None
        self.forced = call.forced
        self.calls = 0
        self.invalid: list[InvalidCall] = []
        self.parsed = False
        # With output_version="v1" a tool-call chunk's index is also its content block's index,
        # and BaseChatModel numbers the other blocks 0, 1, ... as they come: negative indices
        # (-1, -2, ...) keep the calls apart from them, and from each other.
        self.negative_index = output_version == "v1"

    def of(self, event: Any) -> list[ChatGenerationChunk]:
        if isinstance(event, ReasoningDelta):
            reasoning = {"reasoning_content": event.text}
            return [gen(AIMessageChunk(content="", additional_kwargs=reasoning))]
        if isinstance(event, StepDone):
            # Carried on a chunk too, so a consumer of a bare stream sees every decision. A
            # list, because chunk metadata merges: lists concatenate, dicts would be summed.
            steps = {"glimprouter_steps": [event_data(event.record)]}
            return [gen(AIMessageChunk(content="", response_metadata=steps))]
        if isinstance(event, AnswerDelta):
            if self.splitter is None:
                return [gen(AIMessageChunk(content=event.text))]
            return [self._piece(piece) for piece in self.splitter.feed(event.text)]
        out = [self._piece(p) for p in self.splitter.finish()] if self.splitter else []
        # A forced call is missing: the chunks already sent keep their text, the reason
        # travels in the record (a chunk cannot carry an invalid call's error).
        if (
            self.forced
            and not self.parsed
            and (added := require_call(event, list(self.invalid), event.answer)) is not None
        ):
            out.append(self._piece(added))
        last = AIMessageChunk(
            content="",
            response_metadata=response_metadata(event, self.model_name),
            usage_metadata=usage(event),
            chunk_position="last",
        )
        return [*out, gen(last)]

    def _piece(self, piece: str | ParsedCall | InvalidCall) -> ChatGenerationChunk:
        if isinstance(piece, str):
            return gen(AIMessageChunk(content=piece))
        index = -(self.calls + 1) if self.negative_index else self.calls
        self.calls += 1
        if isinstance(piece, ParsedCall):
            self.parsed = True
            args = json.dumps(piece.args, ensure_ascii=False)
            chunk: ToolCallChunk = tool_call_chunk(
                name=piece.name, args=args, id=piece.id, index=index
            )
        else:
            self.invalid.append(piece)
            chunk = tool_call_chunk(name=piece.name, args=piece.text, id=piece.id, index=index)
        return gen(AIMessageChunk(content="", tool_call_chunks=[chunk]))


def gen(message: AIMessageChunk) -> ChatGenerationChunk:
    return ChatGenerationChunk(message=message)


def text_of(message: BaseMessage) -> str:
    if isinstance(message.content, str):
        return message.content
    parts: list[str] = []
    for part in message.content:
        if isinstance(part, str):
            parts.append(part)
        elif isinstance(part, dict) and part.get("type") == "text":
            parts.append(str(part.get("text", "")))
        elif (
            isinstance(message, AIMessage)
            and isinstance(part, dict)
            and part.get("type")
            in (
                "tool_use",
                "tool_call",
                "reasoning",
                "thinking",
            )
        ):
            continue  # the calls travel in tool_calls; past reasoning is not re-sent
        else:
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            raise InvalidArgumentError(
                f"GlimpRouterChatModel takes text only; a {message.type} message has a "
                f"{kind!r} content part. Send text, or describe the content in words.",
                param="messages",
            )
    return "".join(parts)


def to_openai_messages(messages: list[BaseMessage]) -> list[dict[str, Any]]:
    if not messages:
        raise InvalidArgumentError("messages must not be empty.", param="messages")
    out: list[dict[str, Any]] = []
    for message in messages:
        if isinstance(message, HumanMessage):
            role = "user"
        elif isinstance(message, AIMessage):
            role = "assistant"
        elif isinstance(message, SystemMessage):
            role = "system"
        elif isinstance(message, ToolMessage):
            role = "tool"
        elif isinstance(message, ChatMessage):
            role = message.role
        else:
            raise InvalidArgumentError(
                f"unsupported message type {type(message).__name__}.", param="messages"
            )
        entry: dict[str, Any] = {"role": role, "content": text_of(message)}
        if isinstance(message, AIMessage) and message.tool_calls:
            entry["tool_calls"] = [
                {
                    "id": call.get("id") or f"call_{index}",
                    "type": "function",
                    "function": {
                        "name": call["name"],
                        "arguments": json.dumps(call["args"], ensure_ascii=False),
                    },
                }
                for index, call in enumerate(message.tool_calls)
            ]
        if isinstance(message, ToolMessage):
            entry["tool_call_id"] = message.tool_call_id
        if message.name and role in ("user", "assistant", "tool"):
            entry["name"] = message.name
        out.append(entry)
    return out


def prepare_call(
    model: GlimpRouterChatModel,
    controller: AdaptiveThreshold | None,
    facts: ServerFacts,
    clients: Clients,
    messages: list[BaseMessage],
    stop: list[str] | None,
    kwargs: dict[str, Any],
) -> Call:
    """One LangChain call of ``model`` as a routing program: per-call arguments checked, tools
    and the answer's constraint planned, the settings of this call, its clients."""
    kwargs.pop(EVENTS_KWARG, None)
    kwargs.pop("ls_structured_output_format", None)
    large = model.large
    if served := kwargs.pop("model", None):
        large = large.model_copy(update={"model": str(served)})
    answer = {name: kwargs.pop(name) for name in ANSWER_KWARGS if name in kwargs}
    per_call = set(model.router_settings) - NOT_PER_CALL
    unknown = set(kwargs) - per_call
    if unknown:
        raise InvalidArgumentError(
            f"unsupported call arguments {sorted(unknown)}; supported: "
            f"{sorted(per_call | ANSWER_KWARGS | {'model', 'stop'})}.",
            param=min(unknown),
        )
    tools = [convert_to_openai_tool(t) for t in answer.get("tools") or []]
    constraint, parse = answer_plan(
        tools, answer.get("tool_choice"), answer.get("response_format"), large.tool_parser
    )
    given = overrides(type(model).model_fields, kwargs)
    values = {**model.router_settings, **given, "stop": stop or model.stop}
    coin = SPECS[values["strategy"]].decider == "coin"
    if given.get("threshold", "auto") != "auto" and "target_rate" not in given and not coin:
        values["target_rate"] = None  # a fixed threshold for this call on an "auto" router
    auto = None
    if values["threshold"] == "auto":
        if controller is None or values["target_rate"] != controller.target_rate:
            raise InvalidArgumentError(
                "threshold='auto' per call needs a router built with threshold='auto' and the "
                "same target_rate (the controller lives across calls).",
                param="threshold",
            )
        auto = controller
    check_settings(values)
    if auto is not None:
        values["threshold"] = 0.0
    settings = route_settings(values, controller=auto, tools=tuple(tools), answer=constraint)
    servers = {"small": model.small.spec(), "large": large.spec()}
    program = route(to_openai_messages(messages), servers, settings, facts)
    forced = parse and constraint is not None
    return Call(program, clients, large.model, large.tool_parser if parse else None, forced)
