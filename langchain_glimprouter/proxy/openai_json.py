"""The chat model's messages and chunks as OpenAI chat completions JSON.

A whole answer (:meth:`Shaper.completion`) from the ``AIMessage`` of ``chat_result``; a stream
(:meth:`Shaper.chunks`) from the ``ChatGenerationChunk``\\ s of ``Chunker``, one OpenAI chunk
object per LangChain chunk. The chain goes in ``reasoning_content`` and ``reasoning`` (the
names of DeepSeek and vLLM), the routing record in the ``glimprouter`` extension field.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGenerationChunk

from langchain_glimprouter.reasoning_fields import NAMES

EXTENSION = "glimprouter"
"""The one field the proxy adds to OpenAI's objects: the routing record, or a step of it."""


def reasoning_fields(text: str) -> dict[str, str]:
    return dict.fromkeys(NAMES, text)


def usage(message: BaseMessage) -> dict[str, Any]:
    """OpenAI's ``usage`` from a message's ``usage_metadata`` (both servers' tokens)."""
    meta = getattr(message, "usage_metadata", None) or {}
    prompt, completion = meta.get("input_tokens", 0), meta.get("output_tokens", 0)
    reasoning = (meta.get("output_token_details") or {}).get("reasoning", 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }


def finish_reason(message: BaseMessage, called: bool) -> str:
    """``tool_calls`` when the answer called a tool, else the answer's own (stop, length)."""
    if called:
        return "tool_calls"
    return str(message.response_metadata.get("finish_reason") or "stop")


def function_call(call_id: str | None, name: str | None, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def tool_calls(message: AIMessage) -> list[dict[str, Any]]:
    """The answer's calls; one that did not parse keeps its text as ``arguments``, as in a
    stream (the record's ``answer_error`` says why it is invalid)."""
    calls = [
        function_call(c["id"], c["name"], json.dumps(c["args"], ensure_ascii=False))
        for c in message.tool_calls
    ]
    calls += [
        function_call(c["id"], c["name"], c["args"] or "") for c in message.invalid_tool_calls
    ]
    return calls


class Shaper:
    """The OpenAI objects of one response: a shared id, creation time and model name."""

    def __init__(self, model: str) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model
        self.calls = 0
        """Tool calls sent so far in the stream (each its own index)."""

    def _head(self, kind: str) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}

    def completion(self, message: AIMessage) -> dict[str, Any]:
        """The ``chat.completion`` object of a whole answer."""
        calls = tool_calls(message)
        content = message.content if isinstance(message.content, str) else ""
        body: dict[str, Any] = {"role": "assistant", "content": content or (None if calls else "")}
        body |= reasoning_fields(str(message.additional_kwargs.get("reasoning_content", "")))
        if calls:
            body["tool_calls"] = calls
        choice = {"index": 0, "message": body, "logprobs": None}
        choice["finish_reason"] = finish_reason(message, bool(calls))
        out = self._head("chat.completion") | {"choices": [choice], "usage": usage(message)}
        return out | {EXTENSION: message.response_metadata.get(EXTENSION)}

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

    def chunks(self, piece: ChatGenerationChunk, include_usage: bool) -> list[dict[str, Any]]:
        """The OpenAI chunks of one of ``Chunker``'s: reasoning, a finished step, answer text,
        a tool call, or the end (its finish reason, then the usage if asked for; the last of
        them carries the whole record)."""
        message = piece.message
        if text := message.additional_kwargs.get("reasoning_content"):
            return [self.chunk(reasoning_fields(str(text)))]
        if steps := message.response_metadata.get("glimprouter_steps"):
            return [self.chunk(None, glimprouter={"step": step}) for step in steps]
        calls = getattr(message, "tool_call_chunks", None) or []
        if calls:
            self.calls += len(calls)
            deltas = [
                {"index": self.calls - len(calls) + i}
                | function_call(c["id"], c["name"], c["args"] or "")
                for i, c in enumerate(calls)
            ]
            return [self.chunk({"tool_calls": deltas})]
        if message.content:
            return [self.chunk({"content": message.content})]
        if EXTENSION not in message.response_metadata:
            return []
        out = [self.chunk({}, finish_reason(message, self.calls > 0))]
        if include_usage:
            out.append(self.chunk(None, usage=usage(message)))
        out[-1][EXTENSION] = message.response_metadata[EXTENSION]
        return out
