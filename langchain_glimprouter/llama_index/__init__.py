"""GlimpRouterLLM: the router as a LlamaIndex ``FunctionCallingLLM``.

It wraps a :class:`~langchain_glimprouter.router.Router`, with no LangChain on its path:
LlamaIndex messages become OpenAI-style dicts, the router prepares the call (settings, tools,
the answer's constraint) and runs it, and its events and its
:class:`~langchain_glimprouter.core.answers.RoutedAnswer` become LlamaIndex
``ChatResponse``\\ s. Routing, tool calls and errors are therefore the router's, as for the
LangChain chat model and the proxy. Each finished step is also a :class:`GlimpRouterStepEvent`
on LlamaIndex's instrumentation dispatcher.

Needs the ``llama-index`` extra: ``pip install "langchain-glimprouter[llama-index]"``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator, Sequence
from contextlib import aclosing, closing
from typing import TYPE_CHECKING, Any

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
from pydantic import Field, field_validator

from langchain_glimprouter.core.answers import RouterEvent
from langchain_glimprouter.core.events import StepDone
from langchain_glimprouter.errors import InvalidArgumentError
from langchain_glimprouter.llama_index._messages import (
    Responses,
    arguments,
    from_answer,
    to_openai_messages,
)
from langchain_glimprouter.records import StepRecord
from langchain_glimprouter.router import PreparedCall, Router, aanswer_of, answer_of

if TYPE_CHECKING:
    from llama_index.core.tools.types import BaseTool

__all__ = ["GlimpRouterLLM", "GlimpRouterStepEvent"]

dispatcher = get_dispatcher(__name__)


class GlimpRouterStepEvent(BaseEvent, StepRecord):
    """One finished reasoning step: the fields of a
    :class:`~langchain_glimprouter.records.StepRecord`, as a LlamaIndex instrumentation event."""

    @classmethod
    def class_name(cls) -> str:
        return "GlimpRouterStepEvent"


def step_event(record: StepRecord) -> GlimpRouterStepEvent:
    return GlimpRouterStepEvent(**record.model_dump())


def dispatched(call: PreparedCall) -> Generator[RouterEvent, None, None]:
    """Run ``call``, yielding its events; each finished step also goes to the dispatcher.
    Closing this closes the call's open stream, which the server aborts."""
    with closing(call.events()) as events:
        for event in events:
            if isinstance(event, StepDone):
                dispatcher.event(step_event(event.record))
            yield event


async def adispatched(call: PreparedCall) -> AsyncGenerator[RouterEvent, None]:
    """The async twin of :func:`dispatched`."""
    async with aclosing(call.aevents()) as events:
        async for event in events:
            if isinstance(event, StepDone):
                await dispatcher.aevent(step_event(event.record))
            yield event


class GlimpRouterLLM(FunctionCallingLLM):
    """GlimpRouter as a LlamaIndex LLM: a small model glimpses each reasoning step, a large one
    takes the hard steps and writes the answer.

    Build it from a :class:`~langchain_glimprouter.router.Router`, or from the Router's own
    fields (a :class:`~langchain_glimprouter.GlimpRouterChatModel` is taken too: its router)::

        llm = GlimpRouterLLM(router=Router(small=..., large=..., threshold=0.9))
        llm = GlimpRouterLLM(small=..., large=..., threshold=0.9)

    The answer is the message's text; the chain is ``additional_kwargs["reasoning_content"]`` and
    a ``ThinkingBlock``; the routing record is ``raw["glimprouter"]`` (and the response's
    ``additional_kwargs["glimprouter"]``). Per-call router settings go as keyword arguments
    (``llm.chat(messages, threshold=0)``).
    """

    router: Router
    """The router whose settings, servers and clients every call uses."""
    context_window: int = Field(default=DEFAULT_CONTEXT_WINDOW)
    """Tokens the large model takes in and puts out per call (its server's --max-model-len)."""

    def __init__(self, router: Any = None, **fields: Any) -> None:
        own = {name: fields.pop(name) for name in list(fields) if name in type(self).model_fields}
        if router is None:
            router = Router(**fields)
        elif fields:
            raise InvalidArgumentError(
                f"give the router or its settings, not both (got router and {sorted(fields)})."
            )
        super().__init__(router=router, **own)

    @field_validator("router", mode="before")
    @classmethod
    def _router_of(cls, value: Any) -> Any:
        """A chat model (anything with a Router in ``.router``) gives its Router."""
        inner = getattr(value, "router", None)
        return inner if not isinstance(value, Router) and isinstance(inner, Router) else value

    @classmethod
    def class_name(cls) -> str:
        return "GlimpRouterLLM"

    @property
    def metadata(self) -> LLMMetadata:
        """The large model's name; ``num_output`` is the chain's budget plus the answer's (both
        are generated after the prompt, in the large model's context)."""
        config = self.router.config
        return LLMMetadata(
            context_window=self.context_window,
            num_output=config.max_reasoning_tokens + config.max_tokens,
            is_chat_model=True,
            is_function_calling_model=True,
            model_name=config.large.model,
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
        """Keep only the first tool call unless parallel calls are allowed, in the blocks and
        in ``additional_kwargs["tool_calls"]`` (the OpenAI-style list) alike."""
        if not allow_parallel_tool_calls:
            message = response.message
            calls = [b for b in message.blocks if isinstance(b, ToolCallBlock)]
            message.blocks = [b for b in message.blocks if not isinstance(b, ToolCallBlock)]
            message.blocks.extend(calls[:1])
            extra = message.additional_kwargs
            if extra.get("tool_calls"):
                extra["tool_calls"] = extra["tool_calls"][:1]
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
                tool_kwargs=arguments(call.tool_kwargs),
            )
            for call in calls
        ]

    # -- chat -------------------------------------------------------------------------------------

    def _call(self, messages: Sequence[ChatMessage], kwargs: dict[str, Any]) -> PreparedCall:
        """Check and plan a call (a bad argument fails here, before any request)."""
        return self.router.prepare(to_openai_messages(messages), **kwargs)

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return from_answer(answer_of(dispatched(self._call(messages, kwargs))))

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return from_answer(await aanswer_of(adispatched(self._call(messages, kwargs))))

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        call = self._call(messages, kwargs)

        def gen() -> ChatResponseGen:
            responses = Responses()
            with closing(dispatched(call)) as events:
                for event in events:
                    response = responses.of(event)
                    if response is not None:
                        yield response

        return gen()

    @llm_chat_callback()
    async def astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        call = self._call(messages, kwargs)

        async def gen() -> ChatResponseAsyncGen:
            responses = Responses()
            async with aclosing(adispatched(call)) as events:
                async for event in events:
                    response = responses.of(event)
                    if response is not None:
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
