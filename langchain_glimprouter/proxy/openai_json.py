"""The Router's events and answer as OpenAI chat completions JSON.

One :class:`Shaper` per response reads the router's events in order
(:data:`~langchain_glimprouter.core.answers.RouterEvent`): for a stream, each event's chunks
(:meth:`Shaper.chunks`); for a whole answer, the ``chat.completion`` object once the
:class:`~langchain_glimprouter.core.answers.RoutedAnswer` came (:meth:`Shaper.completion`). The
chain goes in ``reasoning_content`` and ``reasoning`` (the names of DeepSeek and vLLM), the
routing record in the ``glimprouter`` extension field.

Every tool call sent has a name and an id. Call text that did not parse is never sent as a
call: it is part of the content, as vLLM's tool parsers leave it (the record's
``answer_error`` says why, when tool_choice forced a call); ``finish_reason`` is
``"tool_calls"`` only when at least one call parsed.

Every object is strict JSON: the record's non-finite numbers (``threshold=inf``, the baseline
that sends every step to the small model) are written as ``"inf"`` (:func:`record_json`).
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from langchain_glimprouter.core.answers import RoutedAnswer, RouterEvent, ToolCallDone, Usage
from langchain_glimprouter.core.events import AnswerDelta, ReasoningDelta, StepDone
from langchain_glimprouter.core.tool_calls import ParsedCall
from langchain_glimprouter.proxy.strict_json import finite
from langchain_glimprouter.reasoning_fields import NAMES
from langchain_glimprouter.records import RECORD_KEY, RoutingRecord

EXTENSION = RECORD_KEY
"""The one field the proxy adds to OpenAI's objects: the routing record, or a step of it."""


def record_json(record: Any) -> Any:
    """A routing or step record as strict JSON: an infinity as ``"inf"``, NaN as null."""
    return finite(record.model_dump())


def reasoning_fields(text: str) -> dict[str, str]:
    return dict.fromkeys(NAMES, text)


def usage(counts: Usage) -> dict[str, Any]:
    """OpenAI's ``usage``: both servers' tokens."""
    return {
        "prompt_tokens": counts.input_tokens,
        "completion_tokens": counts.output_tokens,
        "total_tokens": counts.total_tokens,
        "completion_tokens_details": {"reasoning_tokens": counts.reasoning_tokens},
    }


def record_headers(record: RoutingRecord) -> dict[str, str]:
    """The headers of a whole answer, for a gateway or a log that reads no body."""
    return {
        "x-glimprouter-steps": str(record.n_steps),
        "x-glimprouter-large-steps": str(record.n_large_steps),
        "x-glimprouter-intervention-rate": f"{record.intervention_rate:.4g}",
        "x-glimprouter-large-share": f"{record.large_share:.4g}",
        "x-glimprouter-saved-tokens": str(record.large_tokens_saved),
    }


def function_call(call: ParsedCall) -> dict[str, Any]:
    arguments = json.dumps(call.args, ensure_ascii=False)
    return {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": arguments},
    }


class Shaper:
    """The OpenAI objects of one response (a shared id, creation time and model name), and
    the answer as its events have told it so far."""

    def __init__(self, model: str) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model
        self.content: list[str] = []
        """The answer's content so far: its prose, and call text that did not parse."""
        self.calls: list[dict[str, Any]] = []
        """The calls that parsed, as sent (each with its index)."""
        self.called = False
        """A call, parsed or not, was seen (the content is then stripped, as the Router's)."""

    def _head(self, kind: str) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}

    def delta(self, event: RouterEvent) -> dict[str, Any] | None:
        """What ``event`` adds to the assistant's message (None: nothing): reasoning, answer
        text, or a tool call; call text that did not parse is content."""
        if isinstance(event, ReasoningDelta):
            return reasoning_fields(event.text)
        if isinstance(event, AnswerDelta):
            self.content.append(event.text)
            return {"content": event.text} if event.text else None
        if not isinstance(event, ToolCallDone):
            return None
        first, self.called = not self.called, True
        call = event.call
        if isinstance(call, ParsedCall):
            self.calls.append({"index": len(self.calls)} | function_call(call))
            return {"tool_calls": [self.calls[-1]]}
        if not call.text or (first and call.text == "".join(self.content)):
            return None  # a forced call is missing: the answer, all prose, is already content
        self.content.append(call.text)
        return {"content": call.text}

    def finish_reason(self, answer: RoutedAnswer) -> str:
        """``tool_calls`` when a call parsed, else the answer's own (stop, length)."""
        return "tool_calls" if self.calls else str(answer.finish_reason or "stop")

    def completion(self, answer: RoutedAnswer) -> dict[str, Any]:
        """The ``chat.completion`` object of the answer whose events this shaper has read."""
        content = "".join(self.content)
        if self.called:
            content = content.strip()
        message: dict[str, Any] = {
            "role": "assistant",
            "content": content or (None if self.calls else ""),
        } | reasoning_fields(answer.reasoning)
        if self.calls:
            message["tool_calls"] = [
                {k: v for k, v in call.items() if k != "index"} for call in self.calls
            ]
        choice = {"index": 0, "message": message, "logprobs": None}
        choice["finish_reason"] = self.finish_reason(answer)
        out = self._head("chat.completion") | {"choices": [choice], "usage": usage(answer.usage)}
        return out | {EXTENSION: record_json(answer.record)}

    def chunk(
        self, delta: dict[str, Any] | None, finish: str | None = None, **extra: Any
    ) -> dict[str, Any]:
        """A ``chat.completion.chunk`` with ``extra`` fields; with no delta, one with no choices
        (a step, the usage)."""
        choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
        return self._head("chat.completion.chunk") | {"choices": choices} | extra

    def first(self) -> dict[str, Any]:
        """The opening chunk: the assistant's role, as OpenAI sends it."""
        return self.chunk({"role": "assistant", "content": ""})

    def chunks(self, event: RouterEvent, include_usage: bool) -> list[dict[str, Any]]:
        """The OpenAI chunks of one router event: reasoning, a finished step, answer text, a
        tool call, or the end (its finish reason, then the usage if asked for; the last of
        them carries the whole record)."""
        if isinstance(event, StepDone):
            step = self.chunk(None)
            step[EXTENSION] = {"step": record_json(event.record)}
            return [step]
        if not isinstance(event, RoutedAnswer):
            delta = self.delta(event)
            return [] if delta is None else [self.chunk(delta)]
        out = [self.chunk({}, self.finish_reason(event))]
        if include_usage:
            out.append(self.chunk(None, usage=usage(event.usage)))
        out[-1][EXTENSION] = record_json(event.record)
        return out
