"""Between LlamaIndex and the chat model: LlamaIndex messages to the chat model's, and the chat
model's result (or its stream of chunks) to ``ChatResponse``\\ s.

Imported by :mod:`langchain_glimprouter.llama_index` only after it has checked that
llama-index-core is installed."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any, cast

from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.messages import ChatMessage as LangChainMessage
from langchain_core.messages.tool import ToolCall, tool_call
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    MessageRole,
    TextBlock,
    ThinkingBlock,
    ToolCallBlock,
)

from langchain_glimprouter._convert import Call, Chunker, chat_result, require_result
from langchain_glimprouter.core.events import Result, StepDone
from langchain_glimprouter.errors import InvalidArgumentError

RECORD = "glimprouter"
"""Key of the routing record in ``ChatResponse.raw`` and ``ChatResponse.additional_kwargs``."""


# -- LlamaIndex messages in -----------------------------------------------------------------------


def to_langchain_messages(messages: Sequence[ChatMessage]) -> list[BaseMessage]:
    """LlamaIndex messages as the chat model's. Past reasoning is not re-sent: a ThinkingBlock
    is dropped, and so are ``additional_kwargs["reasoning_content"]`` and ``["reasoning"]``
    (vLLM's name for it since vllm#27752), as the chat model drops an AIMessage's."""
    out: list[BaseMessage] = []
    for message in messages:
        text = "".join(_text_of(message))
        role = message.role
        if role == MessageRole.ASSISTANT:
            out.append(AIMessage(content=text, tool_calls=_calls_of(message)))
        elif role in (MessageRole.TOOL, MessageRole.FUNCTION):
            call_id = message.additional_kwargs.get("tool_call_id", "")
            out.append(ToolMessage(content=text, tool_call_id=str(call_id)))
        elif role in (MessageRole.SYSTEM, MessageRole.DEVELOPER):
            out.append(SystemMessage(content=text))
        elif role == MessageRole.USER:
            out.append(HumanMessage(content=text))
        else:
            out.append(LangChainMessage(content=text, role=role.value))
    return out


def _text_of(message: ChatMessage) -> Iterator[str]:
    for block in message.blocks:
        if isinstance(block, TextBlock):
            yield block.text
        elif not isinstance(block, (ThinkingBlock, ToolCallBlock)):
            raise InvalidArgumentError(
                f"GlimpRouterLLM takes text only; a {message.role.value} message has a "
                f"{block.block_type!r} block. Send text, or describe the content in words."
            )


def _calls_of(message: ChatMessage) -> list[ToolCall]:
    """An assistant message's tool calls: its ToolCallBlocks, else OpenAI-style
    ``additional_kwargs["tool_calls"]`` (as older LlamaIndex integrations keep them)."""
    blocks = [b for b in message.blocks if isinstance(b, ToolCallBlock)]
    if blocks:
        return [
            tool_call(name=b.tool_name, args=arguments(b.tool_kwargs), id=b.tool_call_id)
            for b in blocks
        ]
    calls = []
    for raw in message.additional_kwargs.get("tool_calls") or []:
        entry = raw if isinstance(raw, dict) else raw.model_dump()
        function = entry["function"]
        args = arguments(function.get("arguments") or {})
        calls.append(tool_call(name=function["name"], args=args, id=entry.get("id")))
    return calls


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
    calls: list[ToolCallBlock],
    invalid: list[dict[str, Any]],
    last: AIMessage | None,
    delta: str | None = None,
) -> ChatResponse:
    """A response of the answer ``text``, the chain and the calls so far; ``last`` (the chat
    model's final message, or last chunk) adds the record and the token counts."""
    blocks: list[Any] = [ThinkingBlock(content=reasoning)] if reasoning else []
    blocks += [TextBlock(text=text), *calls]  # copies: a stream's responses do not share lists
    kwargs: dict[str, Any] = {"reasoning_content": reasoning}
    if calls:
        kwargs["tool_calls"] = [
            {
                "id": call.tool_call_id,
                "type": "function",
                "function": {"name": call.tool_name, "arguments": json.dumps(call.tool_kwargs)},
            }
            for call in calls
        ]
    if invalid:
        kwargs["invalid_tool_calls"] = list(invalid)
    message = ChatMessage(role=MessageRole.ASSISTANT, blocks=blocks, additional_kwargs=kwargs)
    if last is None:
        return ChatResponse(message=message, delta=delta)
    usage = last.usage_metadata
    counts = {} if usage is None else {
        "prompt_tokens": usage["input_tokens"],
        "completion_tokens": usage["output_tokens"],
        "total_tokens": usage["total_tokens"],
    }  # fmt: skip
    record = last.response_metadata[RECORD]
    if isinstance(blocks[0], ThinkingBlock) and usage is not None:
        blocks[0].num_tokens = (usage.get("output_token_details") or {}).get("reasoning")
    raw = {**last.response_metadata, "usage": counts}
    return ChatResponse(
        message=message, delta=delta, raw=raw, additional_kwargs={RECORD: record, **counts}
    )


def from_result(result: Result | None, call: Call) -> ChatResponse:
    """A call's result, read as the chat model reads it, as a LlamaIndex response."""
    message = cast(AIMessage, chat_result(require_result(result), call).generations[0].message)
    calls = [
        ToolCallBlock(tool_call_id=c["id"], tool_name=c["name"], tool_kwargs=c["args"])
        for c in message.tool_calls
    ]
    invalid = [dict(c) for c in message.invalid_tool_calls]
    reasoning = str(message.additional_kwargs.get("reasoning_content", ""))
    return response_of(str(message.content), reasoning, calls, invalid, message)


class Stream:
    """Engine events to cumulative ``ChatResponse``\\ s, through the chat model's
    :class:`~langchain_glimprouter._convert.Chunker` (so tool calls split out of the answer
    exactly as they do for the chat model): each response holds the text so far and its
    ``delta``; a reasoning delta is ``additional_kwargs["thinking_delta"]``."""

    def __init__(self, call: Call) -> None:
        self.chunker = Chunker(call, None)
        self.text = ""
        self.reasoning = ""
        self.calls: list[ToolCallBlock] = []
        self.invalid: list[dict[str, Any]] = []

    def of(self, event: Any) -> list[ChatResponse]:
        if isinstance(event, StepDone):
            return []  # a step arrives as an instrumentation event
        return [self._response(cast(AIMessageChunk, c.message)) for c in self.chunker.of(event)]

    def _response(self, chunk: AIMessageChunk) -> ChatResponse:
        thinking = str(chunk.additional_kwargs.get("reasoning_content", ""))
        delta = str(chunk.content)
        self.reasoning += thinking
        self.text += delta
        invalid = {call.id: call for call in self.chunker.invalid}
        for piece in chunk.tool_call_chunks:
            name, args, call_id = piece["name"] or "", piece["args"] or "", piece["id"]
            if call_id in invalid:
                error = invalid[call_id].error
                self.invalid.append({"name": name, "args": args, "id": call_id, "error": error})
            else:
                kwargs = arguments(args)
                self.calls.append(ToolCallBlock(tool_call_id=call_id, tool_name=name,
                                                tool_kwargs=kwargs))  # fmt: skip
        last = chunk if RECORD in chunk.response_metadata else None
        if last is not None and self.chunker.forced and not self.chunker.parsed:
            for entry in self.invalid:  # as chat_result does: the forced call's reason
                entry["error"] = last.response_metadata[RECORD]["answer_error"]
        response = response_of(self.text, self.reasoning, self.calls, self.invalid, last, delta)
        if thinking:
            response.additional_kwargs["thinking_delta"] = thinking
        return response
