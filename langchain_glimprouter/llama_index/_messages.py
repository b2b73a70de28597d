"""Between LlamaIndex and the :class:`~langchain_glimprouter.router.Router`: LlamaIndex messages
to OpenAI-style dicts, and the router's events and answer to ``ChatResponse``\\ s. No LangChain.

Imported by :mod:`langchain_glimprouter.llama_index` only after it has checked that
llama-index-core is installed."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    MessageRole,
    TextBlock,
    ThinkingBlock,
    ToolCallBlock,
)

from langchain_glimprouter.core.answers import RoutedAnswer, RouterEvent, ToolCallDone
from langchain_glimprouter.core.events import AnswerDelta, ReasoningDelta
from langchain_glimprouter.core.tool_calls import InvalidCall, ParsedCall
from langchain_glimprouter.errors import InvalidArgumentError
from langchain_glimprouter.records import PROVIDER, RECORD_KEY

# -- LlamaIndex messages in -----------------------------------------------------------------------

ROLES = {
    MessageRole.FUNCTION: "tool",
    MessageRole.CHATBOT: "assistant",  # Cohere's name for it
    MessageRole.MODEL: "assistant",  # Gemini's
}
"""LlamaIndex's roles under OpenAI's names; the others (``developer`` too) are OpenAI's own."""


def to_openai_messages(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """LlamaIndex messages as the router's OpenAI-style dicts. Past reasoning is not re-sent: a
    ThinkingBlock is dropped, and so are ``additional_kwargs["reasoning_content"]`` and
    ``["reasoning"]`` (vLLM's name for it since vllm#27752)."""
    out: list[dict[str, Any]] = []
    for message in messages:
        role = ROLES.get(message.role, message.role.value)
        entry: dict[str, Any] = {"role": role, "content": "".join(_text_of(message))}
        if role == "assistant":
            calls = _calls_of(message)
            if calls:
                entry["tool_calls"] = calls
        elif role == "tool":
            entry["tool_call_id"] = str(message.additional_kwargs.get("tool_call_id", ""))
        out.append(entry)
    return out


def _text_of(message: ChatMessage) -> Iterator[str]:
    for block in message.blocks:
        if isinstance(block, TextBlock):
            yield block.text
        elif not isinstance(block, (ThinkingBlock, ToolCallBlock)):
            raise InvalidArgumentError(
                f"GlimpRouterLLM takes text only; a {message.role.value} message has a "
                f"{block.block_type!r} block. Send text, or describe the content in words.",
                param="messages",
            )


def _calls_of(message: ChatMessage) -> list[dict[str, Any]]:
    """An assistant message's tool calls, OpenAI-style: its ToolCallBlocks, else
    ``additional_kwargs["tool_calls"]`` (as older LlamaIndex integrations keep them)."""
    named = [
        (b.tool_call_id, b.tool_name, b.tool_kwargs)
        for b in message.blocks
        if isinstance(b, ToolCallBlock)
    ]
    if not named:
        for raw in message.additional_kwargs.get("tool_calls") or []:
            entry = raw if isinstance(raw, dict) else raw.model_dump()
            function = entry["function"]
            named.append((entry.get("id"), function["name"], function.get("arguments") or {}))
    return [
        {"id": call_id, "type": "function",
         "function": {"name": name, "arguments": arguments(args)}}
        for call_id, name, args in named
    ]  # fmt: skip


def arguments(value: dict[str, Any] | str) -> dict[str, Any]:
    """A call's arguments as a dict: a JSON string is parsed (a non-object kept as ``value``)."""
    if isinstance(value, str):
        parsed = json.loads(value) if value.strip() else {}
        return parsed if isinstance(parsed, dict) else {"value": parsed}
    return value


# -- ChatResponses out ----------------------------------------------------------------------------


def response_of(
    text: str,
    reasoning: str,
    calls: Sequence[ParsedCall],
    invalid: Sequence[InvalidCall],
    answer: RoutedAnswer | None = None,
    delta: str | None = None,
) -> ChatResponse:
    """A response of the answer ``text``, the chain and the calls so far; the ``answer`` (at
    the end) adds the record and the token counts."""
    blocks: list[Any] = [ThinkingBlock(content=reasoning)] if reasoning else []
    blocks.append(TextBlock(text=text))
    blocks += [
        ToolCallBlock(tool_call_id=c.id, tool_name=c.name, tool_kwargs=c.args) for c in calls
    ]
    kwargs: dict[str, Any] = {"reasoning_content": reasoning}
    if calls:
        kwargs["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": json.dumps(call.args)},
            }
            for call in calls
        ]
    if invalid:
        kwargs["invalid_tool_calls"] = [
            {"name": c.name, "args": c.text, "id": c.id, "error": c.error} for c in invalid
        ]
    message = ChatMessage(role=MessageRole.ASSISTANT, blocks=blocks, additional_kwargs=kwargs)
    if answer is None:
        return ChatResponse(message=message, delta=delta)
    usage = answer.usage
    counts = {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
    }
    if reasoning:
        blocks[0].num_tokens = usage.reasoning_tokens
    record = answer.record.model_dump()
    raw = {
        "model_name": answer.model,
        "model_provider": PROVIDER,
        "finish_reason": answer.finish_reason,
        RECORD_KEY: record,
        "usage": counts,
    }
    return ChatResponse(
        message=message, delta=delta, raw=raw, additional_kwargs={RECORD_KEY: record, **counts}
    )


def from_answer(answer: RoutedAnswer) -> ChatResponse:
    """A routed call's answer as a LlamaIndex response."""
    return response_of(
        answer.content, answer.reasoning, answer.tool_calls, answer.invalid_tool_calls, answer
    )


class Responses:
    """The router's events as cumulative ``ChatResponse``\\ s: each holds the text so far and
    its ``delta``; a reasoning delta is ``additional_kwargs["thinking_delta"]``; the last (of the
    :class:`RoutedAnswer`) has the record, the token counts and the calls with their final
    errors. A finished step gives none (it is an instrumentation event)."""

    def __init__(self) -> None:
        self.text = ""
        self.reasoning = ""
        self.calls: list[ParsedCall] = []
        self.invalid: list[InvalidCall] = []

    def of(self, event: RouterEvent) -> ChatResponse | None:
        if isinstance(event, ReasoningDelta):
            self.reasoning += event.text
            response = self._so_far("")
            response.additional_kwargs["thinking_delta"] = event.text
            return response
        if isinstance(event, AnswerDelta):
            self.text += event.text
            return self._so_far(event.text)
        if isinstance(event, ToolCallDone):
            if isinstance(event.call, ParsedCall):
                self.calls.append(event.call)
            else:
                self.invalid.append(event.call)
            return self._so_far("")
        if isinstance(event, RoutedAnswer):
            # The answer's calls, not ours: a forced call that is missing has its reason there.
            return response_of(
                self.text, event.reasoning, event.tool_calls, event.invalid_tool_calls, event, ""
            )
        return None

    def _so_far(self, delta: str) -> ChatResponse:
        return response_of(self.text, self.reasoning, self.calls, self.invalid, delta=delta)
