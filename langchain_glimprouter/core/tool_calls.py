"""Tool calls written in the answer text: parsing, streaming, forcing, and a prompt fallback.

A :class:`ToolCallParser` knows one way a model writes tool calls. The default,
:class:`HermesToolCallParser`, is the ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``
format of Qwen2.5/Qwen3, Hermes and most open models' chat templates. The large backend's parser
reads its answer (``Backend.tool_parser``). No LangChain import: the chat model turns the parsed
calls into ``ToolCall`` dicts.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class ParsedCall:
    """A well-formed call: a tool name and a JSON object of arguments."""

    name: str
    args: dict[str, Any]
    id: str


@dataclass(frozen=True)
class InvalidCall:
    """Call text that could not be parsed; kept whole, with the reason.

    From a :class:`CallSplitter` (so in every answer), ``text`` is the call as the model wrote
    it, from its start marker (and to its end marker, if it wrote one). Text that starts with a
    marker never parses as JSON, so LangChain's aggregation of streamed chunks, which parses
    partial JSON leniently, keeps it an invalid call instead of a call with cut arguments.
    """

    text: str
    error: str
    id: str
    name: str | None = None


@dataclass
class ParsedAnswer:
    """An answer split into its prose and its tool calls."""

    content: str
    calls: list[ParsedCall] = field(default_factory=list)
    invalid: list[InvalidCall] = field(default_factory=list)


@dataclass(frozen=True)
class ForcedCall:
    """How to make the model call a tool: the answer starts with ``prefix`` (written by us),
    the server constrains what follows to ``schema`` (JSON), and ``suffix`` closes the call."""

    prefix: str
    schema: dict[str, Any]
    suffix: str


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def _function(tool: dict[str, Any]) -> dict[str, Any]:
    function = tool.get("function", tool)
    return function if isinstance(function, dict) else {}


class ToolCallParser(ABC):
    """One way of writing tool calls in text, delimited by ``start`` and ``end`` markers."""

    start: str
    end: str

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and vars(other) == vars(self)

    def __hash__(self) -> int:
        return hash(type(self))

    @abstractmethod
    def parse_call(self, body: str) -> ParsedCall | InvalidCall:
        """Parse the text between the markers of one call."""

    @abstractmethod
    def format_call(self, name: str, args: dict[str, Any]) -> str:
        """The text of one call, markers included (to render past calls for a template that
        does not know tools)."""

    @abstractmethod
    def tools_prompt(self, tools: list[dict[str, Any]]) -> str:
        """A system-prompt section that describes ``tools`` and the call format."""

    @abstractmethod
    def forced(self, tools: list[dict[str, Any]]) -> ForcedCall:
        """The constraint that makes the answer a call of one of ``tools``."""

    def format_result(self, content: str) -> str:
        """A tool's result as text, for a template that has no ``tool`` role."""
        return f"<tool_response>\n{content}\n</tool_response>"

    def parse(self, text: str) -> ParsedAnswer:
        """Split a whole answer into prose and calls (an unclosed last call is still parsed)."""
        splitter = CallSplitter(self)
        answer = ParsedAnswer(content="")
        for piece in (*splitter.feed(text), *splitter.finish()):
            if isinstance(piece, str):
                answer.content += piece
            elif isinstance(piece, ParsedCall):
                answer.calls.append(piece)
            else:
                answer.invalid.append(piece)
        return answer


class CallSplitter:
    """Incremental :meth:`ToolCallParser.parse`: feed answer deltas, get prose deltas and whole
    calls as soon as each call's end marker arrives. Text that may be the start of a marker is
    held back until it is known not to be."""

    def __init__(self, parser: ToolCallParser) -> None:
        self.parser = parser
        self._pending = ""
        self._in_call = False

    def feed(self, text: str) -> list[str | ParsedCall | InvalidCall]:
        self._pending += text
        out: list[str | ParsedCall | InvalidCall] = []
        while True:
            marker = self.parser.end if self._in_call else self.parser.start
            at = self._pending.find(marker)
            if at < 0:
                break
            before, self._pending = self._pending[:at], self._pending[at + len(marker) :]
            if self._in_call:
                out.append(self._call(before, marker))
            elif before:
                out.append(before)
            self._in_call = not self._in_call
        if not self._in_call:
            keep = _partial_marker(self._pending, self.parser.start)
            if len(self._pending) > keep:
                out.append(self._pending[: len(self._pending) - keep])
                self._pending = self._pending[len(self._pending) - keep :]
        return out

    def finish(self) -> list[str | ParsedCall | InvalidCall]:
        """What is left at the end of the answer: held-back text, or an unclosed call."""
        pending, self._pending = self._pending, ""
        if self._in_call:
            self._in_call = False
            return [self._call(pending, "")]  # even empty: the model opened a call
        return [pending] if pending else []

    def _call(self, body: str, end: str) -> ParsedCall | InvalidCall:
        call = self.parser.parse_call(body)
        if isinstance(call, InvalidCall):
            return replace(call, text=self.parser.start + body + end)
        return call


def _partial_marker(text: str, marker: str) -> int:
    """Length of the longest end of ``text`` that begins ``marker``."""
    for size in range(min(len(text), len(marker) - 1), 0, -1):
        if marker.startswith(text[-size:]):
            return size
    return 0


class HermesToolCallParser(ToolCallParser):
    """``<tool_call>\\n{"name": NAME, "arguments": {...}}\\n</tool_call>``, the format of the
    Qwen2.5/Qwen3 and Hermes chat templates (vLLM's ``hermes`` tool parser)."""

    start = "<tool_call>"
    end = "</tool_call>"

    def parse_call(self, body: str) -> ParsedCall | InvalidCall:
        text = body.strip()
        call_id = new_call_id()
        try:
            data = json.loads(text)
        except ValueError as exc:
            return InvalidCall(text=text, error=f"not JSON: {exc}", id=call_id)
        if not isinstance(data, dict) or not isinstance(data.get("name"), str):
            return InvalidCall(text=text, error='no "name" string in the call', id=call_id)
        args = data.get("arguments", data.get("parameters", {}))
        if isinstance(args, str):  # some models write the arguments as a JSON string
            with contextlib.suppress(ValueError):
                args = json.loads(args) if args.strip() else {}
        if not isinstance(args, dict):
            return InvalidCall(
                text=text, error='"arguments" is not a JSON object', id=call_id, name=data["name"]
            )
        return ParsedCall(name=data["name"], args=args, id=call_id)

    def format_call(self, name: str, args: dict[str, Any]) -> str:
        call = json.dumps({"name": name, "arguments": args}, ensure_ascii=False)
        return f"{self.start}\n{call}\n{self.end}"

    def tools_prompt(self, tools: list[dict[str, Any]]) -> str:
        listed = "\n".join(json.dumps(tool, ensure_ascii=False) for tool in tools)
        return (
            "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
            "You are provided with function signatures within <tools></tools> XML tags:\n"
            f"<tools>\n{listed}\n</tools>\n\n"
            "For each function call, return a json object with function name and arguments "
            "within <tool_call></tool_call> XML tags:\n<tool_call>\n"
            '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
        )

    def forced(self, tools: list[dict[str, Any]]) -> ForcedCall:
        options = []
        for tool in tools:
            function = _function(tool)
            parameters = function.get("parameters") or {"type": "object", "properties": {}}
            options.append(
                {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string", "enum": [function.get("name")]},
                        "arguments": parameters,
                    },
                    "required": ["name", "arguments"],
                    "additionalProperties": False,
                }
            )
        schema = options[0] if len(options) == 1 else {"anyOf": options}
        return ForcedCall(prefix=f"{self.start}\n", schema=schema, suffix=f"\n{self.end}")
