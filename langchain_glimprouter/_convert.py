"""Between LangChain and the :class:`~langchain_glimprouter.router.Router`: LangChain messages
to OpenAI-style dicts, and the router's events and answer to message chunks and an
``AIMessage`` (the chain in ``additional_kwargs["reasoning_content"]``, the record in
``response_metadata["glimprouter"]``, tool calls parsed)."""

from __future__ import annotations

import json
from typing import Any, cast

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

from langchain_glimprouter.core.answers import RoutedAnswer, RouterEvent, ToolCallDone, Usage
from langchain_glimprouter.core.events import AnswerDelta, ReasoningDelta, StepDone
from langchain_glimprouter.core.tool_calls import InvalidCall, ParsedCall
from langchain_glimprouter.errors import InvalidArgumentError
from langchain_glimprouter.records import PROVIDER, RECORD_KEY, STEPS_KEY


def usage(counts: Usage) -> UsageMetadata:
    return UsageMetadata(
        input_tokens=counts.input_tokens,
        output_tokens=counts.output_tokens,
        total_tokens=counts.total_tokens,
        output_token_details={"reasoning": counts.reasoning_tokens},
    )


def response_metadata(answer: RoutedAnswer) -> dict[str, Any]:
    return {
        "model_name": answer.model,
        "model_provider": PROVIDER,
        "finish_reason": answer.finish_reason,
        RECORD_KEY: answer.record.model_dump(),
    }


def tool_call_of(call: ParsedCall | InvalidCall) -> ToolCall | InvalidToolCall:
    if isinstance(call, ParsedCall):
        return tool_call(name=call.name, args=call.args, id=call.id)
    return invalid_tool_call(name=call.name, args=call.text, id=call.id, error=call.error)


def chat_result(answer: RoutedAnswer) -> ChatResult:
    message = AIMessage(
        content=answer.content,
        additional_kwargs={"reasoning_content": answer.reasoning},
        response_metadata=response_metadata(answer),
        usage_metadata=usage(answer.usage),
        tool_calls=[cast(ToolCall, tool_call_of(c)) for c in answer.tool_calls],
        invalid_tool_calls=[
            cast(InvalidToolCall, tool_call_of(c)) for c in answer.invalid_tool_calls
        ],
    )
    return ChatResult(generations=[ChatGeneration(message=message)])


class Chunker:
    """The router's events as message chunks: reasoning deltas, each finished step (on a
    chunk's ``response_metadata["glimprouter_steps"]``), answer text, one whole
    ``tool_call_chunk`` per call, and a last chunk with the record and usage."""

    def __init__(self, output_version: str | None) -> None:
        self.calls = 0
        # With output_version="v1" a tool-call chunk's index is also its content block's index,
        # and BaseChatModel numbers the other blocks 0, 1, ... as they come: negative indices
        # (-1, -2, ...) keep the calls apart from them, and from each other.
        self.negative_index = output_version == "v1"

    def of(self, event: RouterEvent) -> ChatGenerationChunk:
        if isinstance(event, ReasoningDelta):
            reasoning = {"reasoning_content": event.text}
            return gen(AIMessageChunk(content="", additional_kwargs=reasoning))
        if isinstance(event, StepDone):
            # Carried on a chunk too, so a consumer of a bare stream sees every decision. A
            # list, because chunk metadata merges: lists concatenate, dicts would be summed.
            steps = {STEPS_KEY: [event.record.model_dump()]}
            return gen(AIMessageChunk(content="", response_metadata=steps))
        if isinstance(event, AnswerDelta):
            return gen(AIMessageChunk(content=event.text))
        if isinstance(event, ToolCallDone):
            return gen(AIMessageChunk(content="", tool_call_chunks=[self._call(event.call)]))
        return gen(
            AIMessageChunk(
                content="",
                response_metadata=response_metadata(event),
                usage_metadata=usage(event.usage),
                chunk_position="last",
            )
        )

    def _call(self, call: ParsedCall | InvalidCall) -> ToolCallChunk:
        index = -(self.calls + 1) if self.negative_index else self.calls
        self.calls += 1
        if isinstance(call, ParsedCall):
            args = json.dumps(call.args, ensure_ascii=False)
            return tool_call_chunk(name=call.name, args=args, id=call.id, index=index)
        return tool_call_chunk(name=call.name, args=call.text, id=call.id, index=index)


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
