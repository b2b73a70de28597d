"""The Router's events and answer as OpenAI Responses JSON (``POST /v1/responses``).

One :class:`ResponseShaper` per response reads the router's events in order
(:data:`~langchain_glimprouter.core.answers.RouterEvent`) and keeps the output items they make:
one ``reasoning`` item whose ``content`` is the routed chain as one ``reasoning_text`` part
(its ``summary`` empty: the router writes no summary), then ``message`` items with one
``output_text`` part, and ``function_call`` items (``call_id``, ``name``, ``arguments`` as a JSON
string). :meth:`ResponseShaper.events` gives each router event's Responses stream events, each
with its ``sequence_number``, in the order OpenAI's and vLLM's servers send them (vLLM's
``simple_streaming_events.py``: the reasoning item's part is opened and closed with
``response.content_part.added``/``.done`` too); :meth:`ResponseShaper.response` the whole
``response`` object.

Call text that did not parse is never a call: it stays ``output_text``, as in chat completions
(:mod:`.openai_json`). Each finished step is the extension event ``{"type": "glimprouter.step",
"step": <StepRecord dict>, "sequence_number": n}``, which the openai SDK and the Agents SDK pass
over (an event type they do not know); the whole record is the ``glimprouter`` field of the
response (:data:`~langchain_glimprouter.proxy.openai_json.EXTENSION`).
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from langchain_glimprouter.core.answers import RoutedAnswer, RouterEvent, ToolCallDone, Usage
from langchain_glimprouter.core.events import AnswerDelta, ReasoningDelta, StepDone
from langchain_glimprouter.core.tool_calls import ParsedCall
from langchain_glimprouter.proxy.errors import ApiError
from langchain_glimprouter.proxy.openai_json import EXTENSION, record_json

STEP_EVENT = f"{EXTENSION}.step"
"""The type of the extension event of a finished step."""


FAILED_CODE = f"{EXTENSION}_code"
"""The extension field of a failed response's ``error`` that holds the proxy's own code."""


def response_error(failure: ApiError) -> dict[str, Any]:
    """A failed response's ``error`` as OpenAI's ``ResponseError``: its ``code`` a member of
    OpenAI's enum (``server_error`` for the proxy's 5xx, ``invalid_prompt`` for a 4xx that
    only shows mid-call, such as a chain outgrowing a server's context), ``message``,
    ``param``, ``type`` (the error's type, as in chat completions), and the proxy's own code
    (``backend_unreachable``, ``stream_interrupted``, ...) in :data:`FAILED_CODE`."""
    return {
        "code": "server_error" if failure.status >= 500 else "invalid_prompt",
        "message": failure.message,
        "param": failure.param,
        "type": failure.type,
        FAILED_CODE: failure.code,
    }


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def usage(counts: Usage) -> dict[str, Any]:
    """The Responses API's ``usage``: both servers' tokens."""
    return {
        "input_tokens": counts.input_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": counts.output_tokens,
        "output_tokens_details": {"reasoning_tokens": counts.reasoning_tokens},
        "total_tokens": counts.total_tokens,
    }


class ResponseShaper:
    """The output items of one response and its stream events, as the router's events tell
    them; ``echo`` is what the response repeats of the request (``instructions``, ``tools``,
    ``tool_choice``, ``temperature``, ...)."""

    def __init__(self, model: str, echo: dict[str, Any]) -> None:
        self.id = new_id("resp")
        self.created_at = int(time.time())
        self.model, self.echo = model, echo
        self.sequence = 0
        self.output: list[dict[str, Any]] = []
        """The output items so far (the open one last, its text growing)."""
        self.open: dict[str, Any] | None = None
        """The item being written (reasoning or message), if any."""
        self.reasoning_done = False
        self.spaces = ""
        """Answer text that is only whitespace, held until text follows (no blank message)."""
        self.content: list[str] = []
        """The answer's text so far (as chat's Shaper: to tell a missing forced call)."""
        self.called = False

    # -- the stream ---------------------------------------------------------------------------

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"type": kind, **fields, "sequence_number": self.sequence}
        self.sequence += 1
        return event

    def _item_event(self, kind: str, **fields: Any) -> dict[str, Any]:
        assert self.open is not None
        index = len(self.output) - 1
        return self._event(kind, item_id=self.open["id"], output_index=index, **fields)

    def _snapshot(self, status: str, **fields: Any) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "error": None,
            "incomplete_details": None,
            "model": self.model,
            "output": [],
            **self.echo,
            **fields,
        }

    def start(self) -> list[dict[str, Any]]:
        """The events that open the stream: ``response.created``, ``response.in_progress``."""
        opened = self._snapshot("in_progress")
        return [
            self._event("response.created", response=opened),
            self._event("response.in_progress", response=opened),
        ]

    def events(self, event: RouterEvent) -> list[dict[str, Any]]:
        """The Responses stream events of one router event (also the way a whole response
        is read: its events are then dropped)."""
        if isinstance(event, ReasoningDelta):
            out = self._open_reasoning()
            if event.text:
                self.open["content"][0]["text"] += event.text  # type: ignore[index]
                out.append(
                    self._item_event(
                        "response.reasoning_text.delta", content_index=0, delta=event.text
                    )
                )
            return out
        if isinstance(event, StepDone):
            return [self._event(STEP_EVENT, step=record_json(event.record))]
        out = self._close_reasoning()
        if isinstance(event, AnswerDelta):
            return out + self._text(event.text)
        if isinstance(event, ToolCallDone):
            first, self.called = not self.called, True
            call = event.call
            if isinstance(call, ParsedCall):
                return out + self._call(call)
            if not call.text or (first and call.text == "".join(self.content)):
                return out  # a forced call is missing: the answer, all prose, is already text
            return out + self._text(call.text)
        cut = event.finish_reason == "length"
        return out + self._close_message("incomplete" if cut else "completed")

    def delta(self, event: RouterEvent) -> None:
        """Read ``event`` into the output items (a whole response: no stream)."""
        self.events(event)

    def _open_reasoning(self) -> list[dict[str, Any]]:
        if self.reasoning_done or self.open is not None:
            return []
        item: dict[str, Any] = {
            "id": new_id("rs"),
            "type": "reasoning",
            "summary": [],
            "status": "in_progress",
        }
        self.output.append(item | {"content": []})
        self.open = self.output[-1]
        added = self._event("response.output_item.added", output_index=0, item=item)
        part = {"type": "reasoning_text", "text": ""}
        self.open["content"].append(dict(part))
        return [added, self._item_event("response.content_part.added", content_index=0, part=part)]

    def _close_reasoning(self) -> list[dict[str, Any]]:
        """The reasoning item's end (it is opened first when the chain was empty)."""
        if self.reasoning_done:
            return []
        out = self._open_reasoning()
        self.reasoning_done = True
        assert self.open is not None
        text = self.open["content"][0]["text"]
        part = {"type": "reasoning_text", "text": text}
        out += [
            self._item_event("response.reasoning_text.done", content_index=0, text=text),
            self._item_event("response.content_part.done", content_index=0, part=part),
        ]
        return out + self._finish_item("completed")

    def _finish_item(self, status: str) -> list[dict[str, Any]]:
        assert self.open is not None
        self.open["status"] = status
        done = self._event(
            "response.output_item.done", output_index=len(self.output) - 1, item=self.open
        )
        self.open = None
        return [done]

    def _text(self, text: str) -> list[dict[str, Any]]:
        self.content.append(text)
        if self.open is None and not text.strip():
            self.spaces += text
            return []
        text, self.spaces = self.spaces + text, ""
        out: list[dict[str, Any]] = []
        if self.open is None:
            item: dict[str, Any] = {
                "id": new_id("msg"),
                "type": "message",
                "role": "assistant",
                "status": "in_progress",
                "content": [],
            }
            self.output.append(item)
            out.append(
                self._event(
                    "response.output_item.added", output_index=len(self.output) - 1, item=dict(item)
                )
            )
            part: dict[str, Any] = {
                "type": "output_text",
                "text": "",
                "annotations": [],
                "logprobs": [],
            }
            item["content"] = [dict(part)]
            self.open = item
            out.append(self._item_event("response.content_part.added", content_index=0, part=part))
        self.open["content"][0]["text"] += text
        out.append(
            self._item_event("response.output_text.delta", content_index=0, delta=text, logprobs=[])
        )
        return out

    def _close_message(self, status: str) -> list[dict[str, Any]]:
        self.spaces = ""
        if self.open is None:
            return []
        part = self.open["content"][0]
        return [
            self._item_event(
                "response.output_text.done", content_index=0, text=part["text"], logprobs=[]
            ),
            self._item_event("response.content_part.done", content_index=0, part=dict(part)),
            *self._finish_item(status),
        ]

    def _call(self, call: ParsedCall) -> list[dict[str, Any]]:
        out = self._close_message("completed")
        arguments = json.dumps(call.args, ensure_ascii=False)
        item: dict[str, Any] = {
            "id": new_id("fc"),
            "type": "function_call",
            "call_id": call.id,
            "name": call.name,
            "arguments": "",
            "status": "in_progress",
        }
        self.output.append(item)
        out.append(
            self._event(
                "response.output_item.added", output_index=len(self.output) - 1, item=dict(item)
            )
        )
        self.open = item
        item["arguments"] = arguments
        out += [
            self._item_event("response.function_call_arguments.delta", delta=arguments),
            self._item_event("response.function_call_arguments.done", arguments=arguments),
        ]
        return out + self._finish_item("completed")

    # -- the end ------------------------------------------------------------------------------

    def response(self, answer: RoutedAnswer) -> dict[str, Any]:
        """The whole ``response`` object of the answer whose events this shaper has read:
        ``completed``, or ``incomplete`` (``max_output_tokens``) when the budget cut the
        answer."""
        cut = answer.finish_reason == "length"
        if cut:
            for item in self.output:
                if item["type"] == "message":
                    item["status"] = "incomplete"
        extra = {"incomplete_details": {"reason": "max_output_tokens"}} if cut else {}
        return self._snapshot(
            "incomplete" if cut else "completed",
            output=self.output,
            usage=usage(answer.usage),
            completed_at=None if cut else int(time.time()),
            **extra,
        ) | {EXTENSION: record_json(answer.record)}

    def end(self, answer: RoutedAnswer) -> dict[str, Any]:
        """The last event: ``response.completed`` (``response.incomplete`` when cut)."""
        whole = self.response(answer)
        return self._event(f"response.{whole['status']}", response=whole)

    def failed(self, failure: ApiError) -> dict[str, Any]:
        """The last event of a stream that failed after it started: ``response.failed``, with
        the items made so far and OpenAI's ``error`` (:func:`response_error`)."""
        error = response_error(failure)
        return self._event(
            "response.failed", response=self._snapshot("failed", output=self.output, error=error)
        )
