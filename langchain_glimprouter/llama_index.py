"""GlimpRouterLLM: the router as a LlamaIndex ``FunctionCallingLLM``.

It holds a :class:`~langchain_glimprouter.GlimpRouterChatModel` and runs the same routing
programs with the same drivers: LlamaIndex messages become the chat model's messages, the
chat model prepares the call (settings, tools, the answer's constraint), and its result (or its
stream of chunks) becomes a LlamaIndex ``ChatResponse``. Routing, tool calls and errors are
therefore exactly the chat model's. Each finished step is also a :class:`GlimpRouterStepEvent`
on LlamaIndex's instrumentation dispatcher.

Needs the ``llama-index`` extra: ``pip install "langchain-glimprouter[llama-index]"``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, cast

try:
    from llama_index.core.base.llms.generic_utils import (
        achat_to_completion_decorator,
        astream_chat_to_completion_decorator,
        chat_to_completion_decorator,
        stream_chat_to_completion_decorator,
    )
    from llama_index.core.base.llms.types import (
        ChatMessage,
        ChatResponse,
        ChatResponseAsyncGen,
        ChatResponseGen,
        CompletionResponse,
        CompletionResponseAsyncGen,
        CompletionResponseGen,
        LLMMetadata,
        MessageRole,
        TextBlock,
        ThinkingBlock,
        ToolCallBlock,
    )
    from llama_index.core.constants import DEFAULT_CONTEXT_WINDOW
    from llama_index.core.instrumentation import (  # type: ignore[attr-defined]
        get_dispatcher,  # re-exported by a plain import, which mypy strict does not count
    )
    from llama_index.core.instrumentation.events import BaseEvent
    from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
    from llama_index.core.llms.function_calling import FunctionCallingLLM
    from llama_index.core.llms.llm import ToolSelection
except ImportError as exc:
    raise ImportError(
        'GlimpRouterLLM needs LlamaIndex: pip install "langchain-glimprouter[llama-index]"'
    ) from exc
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
from pydantic import Field

from langchain_glimprouter._convert import Call, Chunker, chat_result, require_result
from langchain_glimprouter.chat_models import GlimpRouterChatModel
from langchain_glimprouter.errors import InvalidArgumentError
from langchain_glimprouter.http.drivers import adrive, drive
from langchain_glimprouter.records import StepRecord
from langchain_glimprouter.routing.events import Result, StepDone

if TYPE_CHECKING:
    from llama_index.core.tools.types import BaseTool

__all__ = ["GlimpRouterLLM", "GlimpRouterStepEvent"]

dispatcher = get_dispatcher(__name__)
RECORD = "glimprouter"
"""Key of the routing record in ``ChatResponse.raw`` and ``ChatResponse.additional_kwargs``."""


class GlimpRouterStepEvent(BaseEvent, StepRecord):
    """One finished reasoning step: the fields of a
    :class:`~langchain_glimprouter.records.StepRecord`, as a LlamaIndex instrumentation event."""

    @classmethod
    def class_name(cls) -> str:
        return "GlimpRouterStepEvent"


def step_event(record: StepRecord) -> GlimpRouterStepEvent:
    return GlimpRouterStepEvent(**record.model_dump())


class GlimpRouterLLM(FunctionCallingLLM):
    """GlimpRouter as a LlamaIndex LLM: a small model glimpses each reasoning step, a large one
    takes the hard steps and writes the answer.

    Build it from a chat model, or from the chat model's own fields::

        llm = GlimpRouterLLM(router=GlimpRouterChatModel(small=..., large=..., threshold=0.9))
        llm = GlimpRouterLLM(small=..., large=..., threshold=0.9)

    The answer is the message's text; the chain is ``additional_kwargs["reasoning_content"]`` and
    a ``ThinkingBlock``; the routing record is ``raw["glimprouter"]`` (and the response's
    ``additional_kwargs["glimprouter"]``). Per-call router settings go as keyword arguments
    (``llm.chat(messages, threshold=0)``).
    """

    router: GlimpRouterChatModel
    """The chat model whose settings, servers and clients every call uses."""
    context_window: int = Field(default=DEFAULT_CONTEXT_WINDOW)
    """Tokens the large model takes in and puts out per call (its server's --max-model-len)."""

    def __init__(self, router: GlimpRouterChatModel | None = None, **fields: Any) -> None:
        own = {name: fields.pop(name) for name in list(fields) if name in type(self).model_fields}
        if router is None:
            router = GlimpRouterChatModel(**fields)
        elif fields:
            raise InvalidArgumentError(
                f"give the router or its settings, not both (got router and {sorted(fields)})."
            )
        super().__init__(router=router, **own)

    @classmethod
    def class_name(cls) -> str:
        return "GlimpRouterLLM"

    @property
    def metadata(self) -> LLMMetadata:
        """The large model's name; ``num_output`` is the chain's budget plus the answer's (both
        are generated after the prompt, in the large model's context)."""
        return LLMMetadata(
            context_window=self.context_window,
            num_output=self.router.max_reasoning_tokens + self.router.max_tokens,
            is_chat_model=True,
            is_function_calling_model=True,
            model_name=self.router.large.model,
        )

    # -- tools ------------------------------------------------------------------------------------

    def _prepare_chat_with_tools(
        self,
        tools: Sequence[BaseTool],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """The chat arguments of a call with ``tools``. ``tool_required`` forces a call of one of
        them, a ``tool_choice`` naming a tool a call of that one: the answer is then constrained
        by the server's structured outputs."""
        messages = list(chat_history or [])
        if isinstance(user_msg, str):
            user_msg = ChatMessage(role=MessageRole.USER, content=user_msg)
        if user_msg is not None:
            messages.append(user_msg)
        specs = [tool.metadata.to_openai_tool(skip_length_check=True) for tool in tools]
        choice = kwargs.pop("tool_choice", None)  # a tool's name forces that tool
        if tool_required and choice in (None, "auto"):
            choice = "required"
        return {"messages": messages, "tools": specs, "tool_choice": choice, **kwargs}

    def _validate_chat_with_tools_response(
        self,
        response: ChatResponse,
        tools: Sequence[BaseTool],
        allow_parallel_tool_calls: bool = False,
        **kwargs: Any,
    ) -> ChatResponse:
        """Keep only the first tool call unless parallel calls are allowed."""
        if not allow_parallel_tool_calls:
            blocks = response.message.blocks
            calls = [b for b in blocks if isinstance(b, ToolCallBlock)]
            response.message.blocks = [b for b in blocks if not isinstance(b, ToolCallBlock)]
            response.message.blocks.extend(calls[:1])
        return response

    def get_tool_calls_from_response(
        self, response: ChatResponse, error_on_no_tool_call: bool = True, **kwargs: Any
    ) -> list[ToolSelection]:
        """The answer's tool calls. Text that looked like a call but did not parse is in
        ``message.additional_kwargs["invalid_tool_calls"]``, with the reason."""
        calls = [b for b in response.message.blocks if isinstance(b, ToolCallBlock)]
        if not calls and error_on_no_tool_call:
            invalid = response.message.additional_kwargs.get("invalid_tool_calls") or []
            why = f": {invalid[0]['error']}" if invalid else ""
            raise ValueError(f"Expected at least one tool call, but got none{why}")
        return [
            ToolSelection(
                tool_id=call.tool_call_id or call.tool_name,
                tool_name=call.tool_name,
                tool_kwargs=_arguments(call.tool_kwargs),
            )
            for call in calls
        ]

    # -- chat -------------------------------------------------------------------------------------

    def _call(self, messages: Sequence[ChatMessage], kwargs: dict[str, Any]) -> Call:
        stop = kwargs.pop("stop", None)
        return self.router._prepare(to_langchain_messages(messages), stop, kwargs)

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        call = self._call(messages, kwargs)
        result: Result | None = None
        for event in drive(call.program, call.clients):
            if isinstance(event, StepDone):
                dispatcher.event(step_event(event.record))
            elif isinstance(event, Result):
                result = event
        return from_result(result, call)

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        call = self._call(messages, kwargs)
        result: Result | None = None
        async for event in adrive(call.program, call.clients):
            if isinstance(event, StepDone):
                await dispatcher.aevent(step_event(event.record))
            elif isinstance(event, Result):
                result = event
        return from_result(result, call)

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        call = self._call(messages, kwargs)  # a bad argument fails here, before any request

        def gen() -> ChatResponseGen:
            stream = Stream(call)
            for event in drive(call.program, call.clients):
                if isinstance(event, StepDone):
                    dispatcher.event(step_event(event.record))
                yield from stream.of(event)

        return gen()

    @llm_chat_callback()
    async def astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        call = self._call(messages, kwargs)

        async def gen() -> ChatResponseAsyncGen:
            stream = Stream(call)
            async for event in adrive(call.program, call.clients):
                if isinstance(event, StepDone):
                    await dispatcher.aevent(step_event(event.record))
                for response in stream.of(event):
                    yield response

        return gen()

    # -- completion: a chat of one user message ---------------------------------------------------

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return chat_to_completion_decorator(self.chat)(prompt, **kwargs)

    @llm_completion_callback()
    async def acomplete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponse:
        return await achat_to_completion_decorator(self.achat)(prompt, **kwargs)

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        return stream_chat_to_completion_decorator(self.stream_chat)(prompt, **kwargs)

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        return await astream_chat_to_completion_decorator(self.astream_chat)(prompt, **kwargs)


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
            tool_call(name=b.tool_name, args=_arguments(b.tool_kwargs), id=b.tool_call_id)
            for b in blocks
        ]
    calls = []
    for raw in message.additional_kwargs.get("tool_calls") or []:
        entry = raw if isinstance(raw, dict) else raw.model_dump()
        function = entry["function"]
        args = _arguments(function.get("arguments") or {})
        calls.append(tool_call(name=function["name"], args=args, id=entry.get("id")))
    return calls


def _arguments(value: dict[str, Any] | str) -> dict[str, Any]:
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
                kwargs = _arguments(args)
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
