"""The final answer of a routed call: what constrains it (:func:`answer_plan`: a forced tool
call, a JSON schema) and how it is read (:class:`AnswerReader`: the step loop's events to the
router's, with tool calls parsed out of the answer's text, ending with a :class:`RoutedAnswer`).
No LangChain, no HTTP: every surface turns these into its own objects."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from langchain_glimprouter.core.events import AnswerDelta, ReasoningDelta, Result, StepDone
from langchain_glimprouter.core.settings import AnswerConstraint
from langchain_glimprouter.core.tool_calls import (
    CallSplitter,
    InvalidCall,
    ParsedCall,
    ToolCallParser,
    new_call_id,
)
from langchain_glimprouter.errors import InvalidArgumentError
from langchain_glimprouter.records import RoutingRecord

ToolChoice = dict[str, Any] | str | bool | None
"""OpenAI's ``tool_choice`` (and LangChain's ``"any"``/``True``, or a tool's bare name)."""


@dataclass(frozen=True)
class Usage:
    """Tokens of one routed call over both servers."""

    input_tokens: int
    """Prompt tokens, summed over every request (mostly prefix-cache hits)."""
    output_tokens: int
    """Generated tokens: the chain (wasted glimpses included) and the answer."""
    reasoning_tokens: int
    """The generated tokens that are not the answer's."""

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True)
class ToolCallDone:
    """A tool call of the answer, whole, as soon as its end marker arrived (or the answer
    ended): a :class:`~langchain_glimprouter.core.tool_calls.ParsedCall`, or an
    :class:`~langchain_glimprouter.core.tool_calls.InvalidCall` for text that did not parse."""

    call: ParsedCall | InvalidCall


@dataclass
class RoutedAnswer:
    """The end of a routed call: :meth:`Router.run`'s result, and the last event of
    :meth:`Router.stream`."""

    content: str
    """The answer's prose (without the tool calls' text; stripped when it called tools)."""
    reasoning: str
    """The composite chain: every step, joined by the delimiter that ended it."""
    tool_calls: list[ParsedCall]
    """The calls that parsed, in order."""
    invalid_tool_calls: list[InvalidCall]
    """Call text that did not parse (or a forced call that is missing), with the reason."""
    record: RoutingRecord
    """Every step and decision (``response_metadata["glimprouter"]`` in LangChain)."""
    usage: Usage
    finish_reason: str | None
    """The answer's end as its server reported it (``stop``, ``length``)."""
    model: str
    """The served model that wrote the answer (the large backend's)."""
    answer_text: str = field(repr=False, default="")
    """The answer exactly as generated, tool-call markup included."""


RouterEvent = ReasoningDelta | StepDone | AnswerDelta | ToolCallDone | RoutedAnswer
"""What :meth:`Router.stream` yields, in order: the chain's deltas and each finished step as
they come, then the answer's prose deltas and tool calls, and one :class:`RoutedAnswer`."""


def forced_tools(
    tools: list[dict[str, Any]], tool_choice: ToolChoice
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
    tool_choice: ToolChoice,
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


def require_call(
    record: RoutingRecord, invalid: list[InvalidCall], answer: str
) -> InvalidCall | None:
    """A forced call is missing: record why, in ``answer_error`` and in the invalid calls (an
    invalid call made of the whole ``answer`` when the model opened none). Returns that new
    invalid call, if any."""
    reason = record.answer_error or (invalid[0].error if invalid else None)
    record.answer_error = f"tool_choice forced a tool call, but {reason or 'the answer has none'}"
    invalid[:] = [replace(call, error=record.answer_error) for call in invalid]
    if invalid:
        return None
    added = InvalidCall(text=answer, error=record.answer_error, id=new_call_id())
    invalid.append(added)
    return added


class AnswerReader:
    """The step loop's events as the router's: with a ``parser``, the answer's text is split
    into prose deltas and :class:`ToolCallDone` events (one whole call as soon as its end
    marker arrives); the loop's :class:`~langchain_glimprouter.core.events.Result` becomes a
    :class:`RoutedAnswer`."""

    def __init__(self, model: str, parser: ToolCallParser | None, forced: bool) -> None:
        self.model = model
        self.splitter = CallSplitter(parser) if parser is not None else None
        self.forced = forced
        self.prose: list[str] = []
        self.calls: list[ParsedCall] = []
        self.invalid: list[InvalidCall] = []

    def read(self, event: Any) -> list[RouterEvent]:
        if isinstance(event, (ReasoningDelta, StepDone)):
            return [event]
        if isinstance(event, AnswerDelta):
            if self.splitter is None:
                self.prose.append(event.text)
                return [event]
            return [self._piece(piece) for piece in self.splitter.feed(event.text)]
        if not isinstance(event, Result):
            raise TypeError(f"not an event of the step loop: {event!r}")
        out = [self._piece(p) for p in self.splitter.finish()] if self.splitter else []
        if self.forced and not self.calls:
            added = require_call(event.record, self.invalid, event.answer)
            if added is not None:  # already counted in self.invalid
                out.append(ToolCallDone(added))
        return [*out, self._answer(event)]

    def _piece(self, piece: str | ParsedCall | InvalidCall) -> RouterEvent:
        if isinstance(piece, str):
            self.prose.append(piece)
            return AnswerDelta(piece)
        if isinstance(piece, ParsedCall):
            self.calls.append(piece)
        else:
            self.invalid.append(piece)
        return ToolCallDone(piece)

    def _answer(self, result: Result) -> RoutedAnswer:
        content = "".join(self.prose)
        if self.calls or self.invalid:
            content = content.strip()
        return RoutedAnswer(
            content=content,
            reasoning=result.reasoning,
            tool_calls=self.calls,
            invalid_tool_calls=self.invalid,
            record=result.record,
            usage=Usage(result.input_tokens, result.output_tokens, result.reasoning_tokens),
            finish_reason=result.finish_reason,
            model=self.model,
            answer_text=result.answer,
        )
