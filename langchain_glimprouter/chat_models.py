"""GlimpRouterChatModel: the LangChain surface over a :class:`~langchain_glimprouter.router.Router`.

Messages in; an ``AIMessage`` (or chunks) out, with the chain in
``additional_kwargs["reasoning_content"]``, the routing record in
``response_metadata["glimprouter"]`` and one ``glimprouter_step`` custom callback event per step.
Routing itself is the Router's; this module turns LangChain's calls into its calls (messages and
answers: :mod:`._convert`; step events: :mod:`._callbacks`; structured output:
:mod:`._structured`).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Iterator, Sequence
from contextlib import aclosing, closing
from typing import Any, Self, cast

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel, LangSmithParams, LanguageModelInput
from langchain_core.language_models.model_profile import ModelProfile
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict, PrivateAttr, model_validator

from langchain_glimprouter._callbacks import (
    astep_sink,
    events_to,
    ls_params,
    step_sink,
    with_event_target,
)
from langchain_glimprouter._convert import Chunker, chat_result, to_openai_messages
from langchain_glimprouter._structured import StructuredOutputMethod, structured_output
from langchain_glimprouter.backend import identity
from langchain_glimprouter.core.answers import RoutedAnswer, forced_tools
from langchain_glimprouter.core.events import StepDone
from langchain_glimprouter.core.strategies import AdaptiveThreshold
from langchain_glimprouter.errors import InvalidArgumentError
from langchain_glimprouter.router import PreparedCall, Router, RouterConfig

LANGCHAIN_ONLY = ("ls_structured_output_format",)
"""Call arguments LangChain adds for its own tracing; not the router's."""


class GlimpRouterChatModel(BaseChatModel, RouterConfig):
    """A chat model that routes each reasoning step between a small and a large model.

    The small model glimpses the first token of every reasoning step; the step goes to the
    large model when that token's entropy ``H_init`` exceeds ``threshold`` (nats), and the
    small model writes it otherwise. The large model always writes the final answer. Both
    backends are OpenAI-compatible ``/v1/completions`` servers that return ``logprobs``
    (vLLM; llama.cpp's server works too).

    Setup:
        Install the package and serve two models of one family with vLLM:

        .. code-block:: bash

            pip install langchain-glimprouter
            glimprouter serve --small Qwen/Qwen3-1.7B --large Qwen/Qwen3-8B

        ``glimprouter serve`` with no models serves the bundled tiny pair on the CPU. A key for
        the servers comes from ``api_key``, a ``Backend``'s own, ``GLIMPROUTER_SMALL_API_KEY`` /
        ``GLIMPROUTER_LARGE_API_KEY`` or ``OPENAI_API_KEY``.

    Instantiate:
        .. code-block:: python

            from langchain_glimprouter import Backend, GlimpRouterChatModel

            router = GlimpRouterChatModel(
                small=Backend(base_url="http://localhost:8001/v1", model="Qwen/Qwen3-1.7B"),
                large=Backend(base_url="http://localhost:8002/v1", model="Qwen/Qwen3-8B"),
                threshold=0.9,
                max_reasoning_tokens=4096,
                # other params...
            )

    Invoke:
        .. code-block:: python

            msg = router.invoke("Find the sum of all positive divisors of 2024.")
            msg.content  # the answer, written by the large model
            msg.additional_kwargs["reasoning_content"]  # the chain, both models' steps

    Stream:
        .. code-block:: python

            for chunk in router.stream("What is 17 * 23?"):
                print(chunk.additional_kwargs.get("reasoning_content", ""), end="")
                print(chunk.content, end="")

        Each finished step also arrives as a ``glimprouter_step`` custom callback event (and in
        ``astream_events``), and on a chunk's ``response_metadata["glimprouter_steps"]``.

    Async:
        .. code-block:: python

            msg = await router.ainvoke("What is 17 * 23?")
            async for chunk in router.astream("What is 17 * 23?"):
                ...
            await router.abatch(["What is 2 + 2?", "What is 3 + 3?"])

    Tool calling:
        .. code-block:: python

            from pydantic import BaseModel, Field

            class GetWeather(BaseModel):
                '''Get the current weather in a given location.'''

                location: str = Field(..., description="The city, e.g. Paris")

            with_tools = router.bind_tools([GetWeather], tool_choice="any")
            with_tools.invoke("What is the weather in Paris?").tool_calls
            # [{'name': 'GetWeather', 'args': {'location': 'Paris'}, 'id': ..., ...}]

        A forced ``tool_choice`` constrains the answer with the server's structured outputs.

    Structured output:
        .. code-block:: python

            class Answer(BaseModel):
                value: int
                unit: str

            router.with_structured_output(Answer).invoke("How many legs have 3 spiders?")
            # Answer(value=24, unit='legs')

    Response metadata:
        .. code-block:: python

            record = msg.response_metadata["glimprouter"]
            record["n_steps"], record["n_large_steps"], record["intervention_rate"]
            [(s["model"], s["h_init"], s["tokens"]) for s in record["steps"]]
            msg.usage_metadata  # input/output tokens of both servers, reasoning tokens

        See docs/reference.md for every field of the record and of a step.

    Per-call ``model=`` names the large backend's served model for that call (the model that
    writes the hard steps and the answer, and the ``model_name`` reported). Every router
    setting (``threshold``, ``strategy``, ``max_reasoning_tokens``, ``temperature``, ...; not
    ``stop``, which is LangChain's own argument) may be given per call, as a keyword of
    ``invoke``/``stream``/``bind``; it is validated as the constructor validates it.

    The routing itself is the :class:`~langchain_glimprouter.router.Router` in ``.router``
    (no LangChain in it): this class converts messages, emits callbacks and events, and
    builds the messages of its answers.
    """

    model_config = ConfigDict(
        populate_by_name=True, use_attribute_docstrings=True, frozen=False, extra="ignore"
    )

    streaming: bool = False
    """invoke/ainvoke stream internally, so callbacks see every token (on_llm_new_token) as it
    arrives; the result is the same message."""

    _router: Router | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _build_router(self) -> Self:
        self._router = Router(self)
        return self

    @property
    def router(self) -> Router:
        """The :class:`~langchain_glimprouter.router.Router` this model routes with (over this
        model's own fields; a copy with other fields gets its own, sharing what was learned)."""
        if self._router is None:
            self._router = Router(self)
        elif self._router.config is not self:  # a model_copy shares private attributes
            self._router = self._router.rebind(self)
        return self._router

    @property
    def adaptive_threshold(self) -> AdaptiveThreshold | None:
        """The controller of ``threshold="auto"``, shared by every call of this router: its
        ``threshold`` now, ``realised_rate`` and ``decisions``. None with a fixed threshold."""
        return self.router.adaptive_threshold

    @property
    def router_settings(self) -> dict[str, Any]:
        """Every router setting of this model by field name
        (:data:`~langchain_glimprouter.core.settings.SETTING_NAMES`)."""
        return self.settings_dict()

    # -- LangChain metadata ----------------------------------------------------------------------

    @property
    def _llm_type(self) -> str:
        return "glimprouter-chat"

    def _resolve_model_profile(self) -> ModelProfile | None:
        """LangChain's model profile (``BaseChatModel.profile``), filled once at construction
        unless ``profile=`` is given: what the router offers whatever its two models are. The
        large model's context window (``max_input_tokens``) is left out: the router learns it
        from the server's ``/v1/models`` at the first call, not before; pass ``profile=`` to set
        it. Text only: a non-text content part is refused before any request."""
        return ModelProfile(
            text_inputs=True,
            text_outputs=True,
            reasoning_output=True,  # the chain, in additional_kwargs["reasoning_content"]
            tool_calling=True,
            tool_choice=True,  # forced calls: "any", "required", True or a tool's name
            tool_call_streaming=True,  # each call a whole tool_call_chunk as it completes
            structured_output=True,  # json_schema constrained by the large server
            temperature=True,
            image_inputs=False,
            image_url_inputs=False,
            pdf_inputs=False,
            audio_inputs=False,
            video_inputs=False,
            image_tool_message=False,
            pdf_tool_message=False,
            image_outputs=False,
            audio_outputs=False,
            video_outputs=False,
        )

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "small": identity(self.small),
            "large": identity(self.large),
            **self.router_settings,
        }

    def _get_invocation_params(
        self, stop: list[str] | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        # LangChain puts the call's stop over the model's own in the cache key: the stop that
        # applies is the call's, else the router's.
        return super()._get_invocation_params(stop=stop or self.stop, **kwargs)

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        return ls_params(self, stop or self.stop, kwargs)

    def _prepare(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> PreparedCall:
        for name in LANGCHAIN_ONLY:
            kwargs.pop(name, None)
        tools = [convert_to_openai_tool(tool) for tool in kwargs.pop("tools", None) or []]
        return self.router.prepare(to_openai_messages(messages), tools=tools, stop=stop, **kwargs)

    def _served(self, kwargs: dict[str, Any]) -> dict[str, str]:
        """The model each backend serves in this call (``model=`` overrides the large one's)."""
        return {"small": self.small.model, "large": kwargs.get("model") or self.large.model}

    # -- tools and structured output ---------------------------------------------------------------

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: dict[str, Any] | str | bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools: both models reason knowing them, the answer may call them.

        The tools are rendered into each backend's prompt by its chat template (vLLM's
        ``/tokenize`` and client-side Jinja take ``tools``; for a template that ignores tools
        they are written into the system message in the ``Backend.tool_parser`` format). The
        large model's answer is parsed by the large backend's ``tool_parser`` into
        ``AIMessage.tool_calls``; text that looks like a call but does not parse becomes
        ``invalid_tool_calls``.

        Args:
            tools: LangChain tools, functions, pydantic models, TypedDicts or OpenAI tool dicts.
            tool_choice: ``None``/``"auto"``: the model decides. ``"none"``: the tools are
                shown but the answer is not parsed. ``"any"``, ``"required"`` or ``True``: the
                answer must call one of the tools; a tool's name (or
                ``{"type": "function", "function": {"name": ...}}``): it must call that one.
                Forcing constrains the answer with the server's structured outputs (vLLM), so
                even a small model writes a well-formed call.
        """
        formatted = [convert_to_openai_tool(tool) for tool in tools]
        forced_tools(formatted, tool_choice)  # validates tool_choice before any request
        return super().bind(tools=formatted, tool_choice=tool_choice, **kwargs)

    def with_structured_output(
        self,
        schema: dict[str, Any] | type | None = None,
        *,
        method: StructuredOutputMethod = "json_schema",
        include_raw: bool = False,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, dict[str, Any] | Any]:
        """Answer as an instance of ``schema`` (pydantic model, TypedDict or JSON schema).

        Every method constrains the final answer with the server's structured outputs, so the
        answer parses even from a small model; the reasoning before it is routed as usual.

        Args:
            schema: The output schema; a pydantic class gives instances, others give dicts.
            method: ``"json_schema"`` (default): the answer is JSON of the schema.
                ``"function_calling"``: the answer is a forced call of a tool built from the
                schema. ``"json_mode"``: the answer is a JSON object; describe the keys in
                the prompt (``schema`` only picks the parser).
            include_raw: Return ``{"raw": AIMessage, "parsed": ..., "parsing_error": ...}``;
                the raw message carries the routing record in its ``response_metadata``.
            strict: Accepted for compatibility; the server always enforces the schema.
        """
        if kwargs:
            raise InvalidArgumentError(f"unsupported arguments {sorted(kwargs)}.")
        return structured_output(self, schema, method, include_raw)

    # -- generation -------------------------------------------------------------------------------

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        emit = step_sink(self, run_manager, self._served(kwargs))
        answer: RoutedAnswer | None = None
        for event in self._prepare(messages, stop, kwargs).events():
            if isinstance(event, StepDone):
                emit(event.record)
            elif isinstance(event, RoutedAnswer):
                answer = event
        return chat_result(cast(RoutedAnswer, answer))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        emit = astep_sink(self, run_manager, self._served(kwargs))
        answer: RoutedAnswer | None = None
        async for event in self._prepare(messages, stop, kwargs).aevents():
            if isinstance(event, StepDone):
                await emit(event.record)
            elif isinstance(event, RoutedAnswer):
                answer = event
        return chat_result(cast(RoutedAnswer, answer))

    def _generate_with_cache(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        # An invoke that streams (streaming=True, a streaming handler) calls _stream without its
        # run manager (langchain-core 1.8's BaseChatModel._generate_with_cache): give the steps'
        # events the run manager for the length of this call.
        with events_to(run_manager):
            return super()._generate_with_cache(messages, stop, run_manager, **kwargs)

    async def _agenerate_with_cache(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        with events_to(run_manager):
            return await super()._agenerate_with_cache(messages, stop, run_manager, **kwargs)

    def stream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> Iterator[AIMessageChunk]:
        # BaseChatModel.stream calls _stream without its run manager; give _stream the run id
        # and callbacks (while each chunk is made, not while the consumer holds it) so that step
        # events reach the config's handlers under this run.
        config, target = with_event_target(config)
        streamed = cast(
            Generator[AIMessageChunk, None, None],
            super().stream(input, config, stop=stop, **kwargs),
        )
        with closing(streamed) as chunks:
            while True:
                with events_to(target):
                    chunk = next(chunks, None)
                if chunk is None:
                    return
                yield chunk

    async def astream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[AIMessageChunk]:
        config, target = with_event_target(config)
        streamed = cast(
            AsyncGenerator[AIMessageChunk, None],
            super().astream(input, config, stop=stop, **kwargs),
        )
        async with aclosing(streamed) as chunks:
            while True:
                with events_to(target):
                    chunk = await anext(chunks, None)
                if chunk is None:
                    return
                yield chunk

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        emit = step_sink(self, run_manager, self._served(kwargs))
        chunks = Chunker(self.output_version)
        for event in self._prepare(messages, stop, kwargs).events():
            if isinstance(event, StepDone):
                emit(event.record)
            chunk = chunks.of(event)
            if run_manager is not None and chunk.message.content:
                run_manager.on_llm_new_token(cast(str, chunk.message.content), chunk=chunk)
            yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        emit = astep_sink(self, run_manager, self._served(kwargs))
        chunks = Chunker(self.output_version)
        async for event in self._prepare(messages, stop, kwargs).aevents():
            if isinstance(event, StepDone):
                await emit(event.record)
            chunk = chunks.of(event)
            if run_manager is not None and chunk.message.content:
                await run_manager.on_llm_new_token(cast(str, chunk.message.content), chunk=chunk)
            yield chunk

    # -- token counting ---------------------------------------------------------------------------

    def get_num_tokens_from_messages(
        self, messages: list[BaseMessage], tools: Sequence[Any] | None = None
    ) -> int:
        """Count the prompt tokens of ``messages`` with the large server's own tokenizer.

        Uses vLLM's ``/tokenize`` with the chat template applied; raises a
        :class:`~langchain_glimprouter.errors.GlimpRouterError` where the server cannot count.
        """
        body: dict[str, Any] = {
            "model": self.large.model,
            "messages": to_openai_messages(messages),
            "add_generation_prompt": True,
        }
        if tools:
            body["tools"] = list(tools)
        return self.router.count_tokens(body)

    def get_num_tokens(self, text: str) -> int:
        """Count the tokens of ``text`` with the large server's own tokenizer (vLLM /tokenize)."""
        body = {"model": self.large.model, "prompt": text, "add_special_tokens": False}
        return self.router.count_tokens(body)
