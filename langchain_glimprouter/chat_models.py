"""GlimpRouterChatModel: the LangChain surface over the routing engine.

Messages in; an ``AIMessage`` (or chunks) out, with the chain in
``additional_kwargs["reasoning_content"]``, the routing record in
``response_metadata["glimprouter"]`` and one ``glimprouter_step`` custom callback event per step.
Everything about routing lives in :mod:`~langchain_glimprouter.routing.engine`.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass, replace
from typing import Any, Literal, cast

from langchain_core.callbacks import (
    AsyncCallbackManager,
    AsyncCallbackManagerForLLMRun,
    CallbackManager,
    CallbackManagerForLLMRun,
    adispatch_custom_event,
    dispatch_custom_event,
)
from langchain_core.language_models import BaseChatModel, LangSmithParams, LanguageModelInput
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
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.output_parsers.openai_tools import (
    JsonOutputKeyToolsParser,
    PydanticToolsParser,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import (
    Runnable,
    RunnableConfig,
    RunnableGenerator,
    RunnableLambda,
    RunnableMap,
    ensure_config,
)
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_json_schema, convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass
from pydantic import ConfigDict, Field, PrivateAttr, SecretStr, model_validator
from typing_extensions import Self

from langchain_glimprouter.backend import DEFAULT_TIMEOUT, Backend
from langchain_glimprouter.errors import (
    BackendResponseError,
    BudgetError,
    GlimpRouterError,
    IncompleteAnswerError,
    InvalidArgumentError,
)
from langchain_glimprouter.http.client import BackendClient
from langchain_glimprouter.http.drivers import Clients, adrive, drive
from langchain_glimprouter.records import STEP_EVENT, StepRecord
from langchain_glimprouter.routing.engine import route
from langchain_glimprouter.routing.entropy import ESTIMATORS, Estimator
from langchain_glimprouter.routing.events import AnswerDelta, ReasoningDelta, Result, StepDone
from langchain_glimprouter.routing.ops import Program
from langchain_glimprouter.routing.settings import (
    AnswerConstraint,
    Probe,
    RouteSettings,
    ServerFacts,
)
from langchain_glimprouter.routing.strategies import (
    SPECS,
    STRATEGIES,
    AdaptiveThreshold,
    Strategy,
)
from langchain_glimprouter.routing.tool_calls import (
    CallSplitter,
    InvalidCall,
    ParsedAnswer,
    ParsedCall,
    ToolCallParser,
    new_call_id,
)

PROVIDER = "glimprouter"
_EVENTS_KWARG = "_glimprouter_events"
_SETTING_KWARGS = frozenset(
    {"threshold", "max_reasoning_tokens", "max_tokens", "temperature", "top_p", "seed"}
)
_ANSWER_KWARGS = frozenset({"tools", "tool_choice", "response_format"})
StructuredOutputMethod = Literal["function_calling", "json_schema", "json_mode"]


@dataclass(frozen=True)
class _Call:
    """One prepared call: the routing program, its clients, and how to read its answer."""

    program: Program[None]
    clients: Clients
    model_name: str
    parser: ToolCallParser | None
    """Parses tool calls out of the answer; None when no tools are bound (or "none")."""
    forced: bool
    """tool_choice forces a call: an answer without one gets an invalid call saying why."""


@dataclass(frozen=True)
class _EventTarget:
    """Where ``glimprouter_step`` events go when ``stream``/``astream`` call ``_stream``."""

    config: RunnableConfig
    run_id: uuid.UUID


class GlimpRouterChatModel(BaseChatModel):
    """A chat model that routes each reasoning step between a small and a large model.

    The small backend glimpses the first token of every step; the step goes to the large
    backend when that token's entropy exceeds ``threshold`` (nats). The large backend always
    writes the final answer. Both backends are OpenAI-compatible completions servers that
    return ``logprobs`` (vLLM, llama.cpp).

    Example:
        .. code-block:: python

            from langchain_glimprouter import Backend, GlimpRouterChatModel

            router = GlimpRouterChatModel(
                small=Backend(base_url="http://localhost:8001/v1", model="Qwen/Qwen3-4B"),
                large=Backend(
                    base_url="http://localhost:8002/v1",
                    model="deepseek-ai/DeepSeek-R1-Distill-Qwen-32B",
                ),
                threshold=0.9,
            )
            msg = router.invoke("Find the sum of all positive divisors of 2024.")
            msg.content  # the answer
            msg.additional_kwargs["reasoning_content"]  # the composite chain
            msg.response_metadata["glimprouter"]  # the routing record

    Per-call ``model=`` names the large backend's served model for that call (the model that
    writes the hard steps and the answer, and the ``model_name`` reported). Per-call
    ``threshold``, ``max_reasoning_tokens``, ``max_tokens``, ``temperature``, ``top_p`` and
    ``seed`` override the fields for that call.
    """

    model_config = ConfigDict(populate_by_name=True)

    small: Backend = Field(description="The small model's server: glimpses every step.")
    large: Backend = Field(description="The large model's server: hard steps and the answer.")
    threshold: float | Literal["auto"] = Field(
        default=0.9,
        description="tau in nats: a step whose H_init exceeds it goes to the large model. "
        "0 sends every step to the large model (no glimpse), inf every step to the small one. "
        "'auto': an online controller keeps the share of large steps near target_rate. With "
        "another strategy, the threshold of its own measure (see strategy).",
    )
    strategy: Strategy = Field(
        default="glimpse",
        description="How a step's writer is chosen: 'glimpse' (the first token's entropy), "
        "the baselines 'large_only', 'small_only' and 'random' (target_rate of the steps "
        "large), or generate-then-measure: 'step_entropy' (mean entropy of the small model's "
        "step > threshold: the large model rewrites it), 'step_ppl' (its perplexity), "
        "'specreason' (the large model's 0-9 score of it < threshold).",
    )
    target_rate: float | None = Field(
        default=None,
        description="The wanted share of large steps, in (0, 1): the target of "
        "threshold='auto', and the probability of strategy='random'.",
    )
    entropy_estimator: Estimator = Field(
        default="topk_renormalized",
        description="How H_init is computed from the top-k logprobs: 'topk_renormalized' (the "
        "paper's, whose thresholds it keeps), 'topk_tail' (a lower bound), or 'topk_bounds' "
        "(bounds of the exact entropy: the exact decision where the threshold lies outside "
        "them, an escalation probe where it is too close to call; see entropy.py).",
    )
    escalation_logprobs: int = Field(
        default=1000,
        description="entropy_estimator='topk_bounds': k of the 1-token probe that settles a "
        "step too close to call (the small server's --max-logprobs must allow it; below that "
        "the router uses the server's cap, and at top_logprobs or less it decides on the "
        "estimate). 0: never escalate.",
    )
    probe: Probe = Field(
        default="stream",
        description="'stream': the glimpse is the start of the small model's step (one "
        "request per delegated step). 'separate': a 1-token probe request, then the step.",
    )
    max_reasoning_tokens: int = Field(
        default=8192, description="Token budget of the whole chain, both models together."
    )
    max_tokens: int = Field(default=2048, description="Token budget of the final answer.")
    temperature: float | None = Field(default=0.6, description="Sampling temperature.")
    top_p: float | None = Field(default=0.95, description="Nucleus sampling.")
    seed: int | None = Field(default=None, description="Sampling seed sent to both servers.")
    top_logprobs: int = Field(
        default=20,
        description="k of the first-token distribution asked of the small server "
        "(vLLM caps it with --max-logprobs, 20 by default).",
    )
    step_delimiter: str | list[str] = Field(
        default="\n\n",
        description="What ends a reasoning step: a string, or several (the one that ended a "
        "step stays at its end in the chain; several need a server that reports stop_reason, "
        "as vLLM does).",
    )
    max_step_tokens: int | None = Field(
        default=None,
        description="Longest step in tokens: a longer one is cut there and the next step, "
        "routed afresh, continues its text. None: no limit.",
    )
    stop: list[str] | None = Field(
        default=None, alias="stop_sequences", description="Stop sequences of the final answer."
    )
    timeout: float | None = Field(
        default=None,
        description=f"Seconds to wait for a connection or the next chunk (default "
        f"{DEFAULT_TIMEOUT:g}); a Backend's own timeout wins.",
    )
    max_retries: int = Field(
        default=2,
        description="Retries, with backoff, of a request that failed in a way that is safe to "
        "repeat (connection refused, 429, 5xx), and resumptions of a stream cut mid-response; "
        "a Backend's own max_retries wins.",
    )
    on_small_failure: Literal["raise", "large"] = Field(
        default="raise",
        description="When the small backend is down or failing (after retries): 'raise', or "
        "'large' to send the steps to the large backend (each such step has fallback=True).",
    )
    api_key: SecretStr | None = Field(
        default=None, description="Bearer token for both servers unless a Backend sets its own."
    )
    streaming: bool = Field(
        default=False,
        description="invoke/ainvoke stream internally, so callbacks see every token "
        "(on_llm_new_token) as it arrives; the result is the same message.",
    )

    _facts: ServerFacts = PrivateAttr(default_factory=ServerFacts)
    _controller: AdaptiveThreshold | None = PrivateAttr(default=None)
    _clients: dict[str, tuple[tuple[Any, ...], list[BackendClient]]] = PrivateAttr(
        default_factory=dict
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        _check_budgets(self.threshold, self.max_reasoning_tokens, self.max_tokens)
        _check_strategy(self.strategy, self.threshold, self.target_rate)
        if self.threshold == "auto" and self.target_rate is not None:
            self._controller = AdaptiveThreshold(self.target_rate, seed=self.seed)
        if self.max_step_tokens is not None and self.max_step_tokens < 1:
            raise InvalidArgumentError(
                f"max_step_tokens must be >= 1 or None (got {self.max_step_tokens})."
            )
        if self.top_logprobs < 1:
            raise InvalidArgumentError(f"top_logprobs must be >= 1 (got {self.top_logprobs}).")
        if self.escalation_logprobs < 0:
            raise InvalidArgumentError(
                f"escalation_logprobs must be >= 0 (got {self.escalation_logprobs}); 0 never "
                "escalates."
            )
        if self.max_retries < 0:
            raise InvalidArgumentError(f"max_retries must be >= 0 (got {self.max_retries}).")
        delimiters = _delimiters(self.step_delimiter)
        if not delimiters or not all(delimiters):
            raise InvalidArgumentError("step_delimiter must not be empty (nor hold an empty one).")
        if self.entropy_estimator not in ESTIMATORS:
            raise InvalidArgumentError(f"entropy_estimator must be one of {ESTIMATORS}.")
        return self

    @property
    def adaptive_threshold(self) -> AdaptiveThreshold | None:
        """The controller of ``threshold="auto"``, shared by every call of this router: its
        ``threshold`` now, ``realised_rate`` and ``decisions``. None with a fixed threshold."""
        return self._controller

    # -- LangChain metadata ----------------------------------------------------------------------

    @property
    def _llm_type(self) -> str:
        return "glimprouter-chat"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "small": {"base_url": self.small.base_url, "model": self.small.model},
            "large": {"base_url": self.large.base_url, "model": self.large.model},
            "threshold": self.threshold,
            "entropy_estimator": self.entropy_estimator,
            "probe": self.probe,
            "max_reasoning_tokens": self.max_reasoning_tokens,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_logprobs": self.top_logprobs,
            "step_delimiter": self.step_delimiter,
            "max_step_tokens": self.max_step_tokens,
            "escalation_logprobs": self.escalation_logprobs,
            "strategy": self.strategy,
            "target_rate": self.target_rate,
        }

    def _get_invocation_params(
        self, stop: list[str] | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        kwargs.pop(_EVENTS_KWARG, None)
        return super()._get_invocation_params(stop=stop, **kwargs)

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(
            ls_provider=PROVIDER,
            ls_model_name=kwargs.get("model") or self.large.model,
            ls_model_type="chat",
            ls_max_tokens=kwargs.get("max_tokens", self.max_tokens),
        )
        temperature = kwargs.get("temperature", self.temperature)
        if temperature is not None:
            params["ls_temperature"] = temperature
        constrained = kwargs.get("response_format") or kwargs.get("tool_choice") not in (
            None, False, "auto", "none",
        )  # fmt: skip
        if (stop := stop or self.stop) and not constrained:  # a constrained answer has no stop
            params["ls_stop"] = stop
        return params

    # -- plumbing ---------------------------------------------------------------------------------

    def _clients_for(self, role: str) -> list[BackendClient]:
        backend: Backend = getattr(self, role)
        key = (
            backend.api_key
            or self.api_key
            or _env_secret(f"GLIMPROUTER_{role.upper()}_API_KEY")
            or _env_secret("OPENAI_API_KEY")
        )
        timeout = backend.timeout or self.timeout or DEFAULT_TIMEOUT
        # model_copy shares private attributes: rebuild when the settings are not this model's.
        spec = (id(backend), key.get_secret_value() if key else None, timeout)
        cached = self._clients.get(role)
        if cached is not None and cached[0] == spec:
            return cached[1]
        clients = [
            BackendClient(role, backend, api_key=key, timeout=timeout, base_url=url)
            for url in backend.urls
        ]
        self._clients[role] = (spec, clients)
        return clients

    def _prepare(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> _Call:
        kwargs.pop(_EVENTS_KWARG, None)
        kwargs.pop("ls_structured_output_format", None)
        large = self.large
        if model := kwargs.pop("model", None):
            large = large.model_copy(update={"model": str(model)})
        answer = {name: kwargs.pop(name) for name in _ANSWER_KWARGS if name in kwargs}
        unknown = set(kwargs) - _SETTING_KWARGS
        if unknown:
            raise InvalidArgumentError(
                f"unsupported call arguments {sorted(unknown)}; supported: "
                f"{sorted(_SETTING_KWARGS | _ANSWER_KWARGS | {'model', 'stop'})}."
            )
        tools = [convert_to_openai_tool(t) for t in answer.get("tools") or []]
        constraint, parse = _answer_plan(
            tools, answer.get("tool_choice"), answer.get("response_format"), large.tool_parser
        )
        fields = {name: getattr(self, name) for name in _SETTING_KWARGS}
        fields.update(kwargs)
        controller = None
        if fields["threshold"] == "auto":
            if self._controller is None:
                raise InvalidArgumentError(
                    "threshold='auto' per call needs a router built with threshold='auto' and "
                    "target_rate (the controller lives across calls)."
                )
            controller, fields["threshold"] = self._controller, 0.0
        settings = RouteSettings(
            estimator=self.entropy_estimator,
            probe=self.probe,
            top_logprobs=self.top_logprobs,
            delimiters=_delimiters(self.step_delimiter),
            max_step_tokens=self.max_step_tokens,
            escalation_logprobs=self.escalation_logprobs,
            strategy=self.strategy,
            target_rate=self.target_rate,
            controller=controller,
            stop=tuple(stop or self.stop or ()),
            max_retries=self.max_retries,
            on_small_failure=self.on_small_failure,
            tools=tuple(tools),
            answer=constraint,
            **fields,
        )
        _check_budgets(settings.threshold, settings.max_reasoning_tokens, settings.max_tokens)
        backends = {"small": self.small, "large": large}
        clients = {role: self._clients_for(role) for role in backends}
        program = route(_to_openai_messages(messages), backends, settings, self._facts)
        forced = parse and constraint is not None
        return _Call(program, clients, large.model, large.tool_parser if parse else None, forced)

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
        _forced_tools(formatted, tool_choice)  # validates tool_choice before any request
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
        if method not in ("function_calling", "json_schema", "json_mode"):
            raise InvalidArgumentError(
                f"method must be 'function_calling', 'json_schema' or 'json_mode' (got {method!r})."
            )
        if schema is None and method != "json_mode":
            raise InvalidArgumentError(f"method={method!r} needs a schema.")
        pydantic = isinstance(schema, type) and is_basemodel_subclass(schema)
        traced = {"kwargs": {"method": method}, "schema": schema}
        parser: Runnable[Any, Any]
        if method == "function_calling":
            tool = convert_to_openai_tool(cast(Any, schema))
            name = tool["function"]["name"]
            llm = self.bind_tools([tool], tool_choice=name, ls_structured_output_format=traced)
            parser = (
                PydanticToolsParser(tools=[cast(Any, schema)], first_tool_only=True)
                if pydantic
                else JsonOutputKeyToolsParser(key_name=name, first_tool_only=True)
            )
        else:
            response_format: dict[str, Any] = {"type": "json_object"}
            if method == "json_schema":
                json_schema = convert_to_json_schema(cast(Any, schema))
                response_format = {
                    "type": "json_schema",
                    "json_schema": {
                        "name": json_schema.get("title", "output"),
                        "schema": json_schema,
                    },
                }
            llm = self.bind(response_format=response_format, ls_structured_output_format=traced)
            parser = (
                PydanticOutputParser(pydantic_object=cast(Any, schema))
                if pydantic
                else JsonOutputParser()
            )
        # The parsers would read what they can of cut JSON (partial JSON is parsed leniently):
        # an answer the router found incomplete raises IncompleteAnswerError first.
        checked = RunnableGenerator(_complete_answers, _acomplete_answers, name="complete_answer")
        if not include_raw:
            return llm | checked | parser
        # One step that catches the parser's error, so that parsing_error holds it in every
        # mode (a fallback would catch it only before a stream's first chunk).
        return RunnableMap(raw=llm) | _with_parsing_error(checked | parser)

    # -- generation -------------------------------------------------------------------------------

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        call = self._prepare(messages, stop, kwargs)
        result: Result | None = None
        for event in drive(call.program, call.clients):
            if isinstance(event, StepDone) and run_manager is not None:
                _manager_of(CallbackManager, run_manager).on_custom_event(
                    STEP_EVENT, _event_data(event.record), run_id=run_manager.run_id
                )
            elif isinstance(event, Result):
                result = event
        return _chat_result(_require(result), call)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        call = self._prepare(messages, stop, kwargs)
        result: Result | None = None
        async for event in adrive(call.program, call.clients):
            if isinstance(event, StepDone) and run_manager is not None:
                await _manager_of(AsyncCallbackManager, run_manager).on_custom_event(
                    STEP_EVENT, _event_data(event.record), run_id=run_manager.run_id
                )
            elif isinstance(event, Result):
                result = event
        return _chat_result(_require(result), call)

    def stream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> Iterator[AIMessageChunk]:
        # BaseChatModel.stream calls _stream without its run manager; give _stream the run id
        # and callbacks so that step events reach the config's handlers under this run.
        config, target = _with_event_target(config)
        yield from super().stream(input, config, stop=stop, **{_EVENTS_KWARG: target}, **kwargs)

    async def astream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[AIMessageChunk]:
        config, target = _with_event_target(config)
        async for chunk in super().astream(
            input, config, stop=stop, **{_EVENTS_KWARG: target}, **kwargs
        ):
            yield chunk

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        manager, run_id = self._step_events(CallbackManager, run_manager, kwargs)
        call = self._prepare(messages, stop, kwargs)
        chunks = _Chunker(call, self.output_version)
        for event in drive(call.program, call.clients):
            if isinstance(event, StepDone):
                data = _event_data(event.record)
                if manager is not None:
                    manager.on_custom_event(STEP_EVENT, data, run_id=run_id)
                else:
                    with suppress(RuntimeError):  # outside any run: the chunk carries it
                        dispatch_custom_event(STEP_EVENT, data)
            for chunk in chunks.of(event):
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
        manager, run_id = self._step_events(AsyncCallbackManager, run_manager, kwargs)
        call = self._prepare(messages, stop, kwargs)
        chunks = _Chunker(call, self.output_version)
        async for event in adrive(call.program, call.clients):
            if isinstance(event, StepDone):
                data = _event_data(event.record)
                if manager is not None:
                    await manager.on_custom_event(STEP_EVENT, data, run_id=run_id)
                else:
                    with suppress(RuntimeError):  # outside any run: the chunk carries it
                        await adispatch_custom_event(STEP_EVENT, data)
            for chunk in chunks.of(event):
                if run_manager is not None and chunk.message.content:
                    text = cast(str, chunk.message.content)
                    await run_manager.on_llm_new_token(text, chunk=chunk)
                yield chunk

    def _step_events(
        self, cls: Any, run_manager: Any, kwargs: dict[str, Any]
    ) -> tuple[Any, uuid.UUID | None]:
        """The callback manager and run id that ``glimprouter_step`` events go to.

        ``_generate`` and the v2 event path get the run manager, whose own ``on_custom_event``
        is a no-op stub, so a manager is built from its handlers. ``stream``/``astream`` call
        ``_stream`` without it; our overrides pass the run's config and id instead. Otherwise
        (an invoke that streams internally) events go through ``dispatch_custom_event``.
        """
        target: _EventTarget | None = kwargs.get(_EVENTS_KWARG)
        if run_manager is not None:
            return _manager_of(cls, run_manager), run_manager.run_id
        if target is not None:
            config = target.config
            manager = cls.configure(
                config.get("callbacks"),
                self.callbacks,
                self.verbose,
                config.get("tags"),
                self.tags,
                config.get("metadata"),
                self.metadata,
            )
            return manager, target.run_id
        return None, None

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
            "messages": _to_openai_messages(messages),
            "add_generation_prompt": True,
        }
        if tools:
            body["tools"] = list(tools)
        return self._count(body)

    def get_num_tokens(self, text: str) -> int:
        """Count the tokens of ``text`` with the large server's own tokenizer (vLLM /tokenize)."""
        return self._count({"model": self.large.model, "prompt": text, "add_special_tokens": False})

    def _count(self, body: dict[str, Any]) -> int:
        try:
            client = self._clients_for("large")[0]
            return int(client.request_json("POST", "/tokenize", body)["count"])
        except BackendResponseError as exc:
            if exc.status_code in (404, 405):
                raise BackendResponseError(
                    "the large server has no /tokenize endpoint, so tokens cannot be counted "
                    "with the model's own tokenizer (vLLM provides it).",
                    role="large",
                    url=self.large.base_url,
                    status_code=exc.status_code,
                ) from exc
            raise


def _check_budgets(
    threshold: float | Literal["auto"], max_reasoning_tokens: int, max_tokens: int
) -> None:
    if threshold != "auto" and (
        not isinstance(threshold, (int, float)) or math.isnan(threshold) or threshold < 0
    ):
        raise InvalidArgumentError(
            f"threshold must be >= 0 nats or 'auto' (got {threshold!r}); 0 sends every step to "
            "the large model, math.inf every step to the small one."
        )
    if max_reasoning_tokens <= 0 or max_tokens <= 0:
        raise BudgetError(
            "max_reasoning_tokens and max_tokens must be positive (got "
            f"{max_reasoning_tokens} and {max_tokens})."
        )


def _check_strategy(
    strategy: str, threshold: float | Literal["auto"], target_rate: float | None
) -> None:
    if strategy not in STRATEGIES:
        raise InvalidArgumentError(f"strategy must be one of {STRATEGIES} (got {strategy!r}).")
    if target_rate is not None and not 0.0 <= target_rate <= 1.0:
        raise InvalidArgumentError(f"target_rate must be in [0, 1] (got {target_rate}).")
    if threshold == "auto":
        if not SPECS[strategy].measured:
            raise InvalidArgumentError(
                f"threshold='auto' needs a strategy with a measure (glimpse, step_entropy, "
                f"step_ppl, specreason), not {strategy!r}."
            )
        if target_rate is None or not 0.0 < target_rate < 1.0:
            raise InvalidArgumentError(
                "threshold='auto' needs target_rate in (0, 1): the share of steps to send to "
                "the large model, e.g. target_rate=0.25."
            )
    elif strategy == "random":
        if target_rate is None:
            raise InvalidArgumentError(
                "strategy='random' needs target_rate: the probability of a large step."
            )
    elif target_rate is not None:
        raise InvalidArgumentError(
            "target_rate is used only with threshold='auto' or strategy='random'; remove it, "
            "or set threshold='auto'."
        )


def _delimiters(step_delimiter: str | list[str]) -> tuple[str, ...]:
    return (step_delimiter,) if isinstance(step_delimiter, str) else tuple(step_delimiter)


def _env_secret(name: str) -> SecretStr | None:
    value = os.environ.get(name)
    return SecretStr(value) if value else None


def _with_event_target(config: RunnableConfig | None) -> tuple[RunnableConfig, _EventTarget]:
    config = ensure_config(config)
    run_id = config.get("run_id") or uuid.uuid4()
    config["run_id"] = run_id
    return config, _EventTarget(config=config, run_id=run_id)


def _manager_of(cls: Any, run_manager: Any) -> Any:
    """A (sync or async) callback manager with the run manager's handlers, tags and metadata."""
    return cls(
        handlers=run_manager.handlers,
        inheritable_handlers=run_manager.inheritable_handlers,
        parent_run_id=run_manager.parent_run_id,
        tags=run_manager.tags,
        inheritable_tags=run_manager.inheritable_tags,
        metadata=run_manager.metadata,
        inheritable_metadata=run_manager.inheritable_metadata,
    )


def _event_data(record: StepRecord) -> dict[str, Any]:
    return record.model_dump()


def _require(result: Result | None) -> Result:
    if result is None:  # the engine always ends with a Result; this guards the contract
        raise GlimpRouterError("the routing program ended without a result")
    return result


def _usage(result: Result) -> UsageMetadata:
    return UsageMetadata(
        input_tokens=result.input_tokens,
        output_tokens=result.output_tokens,
        total_tokens=result.input_tokens + result.output_tokens,
        output_token_details={"reasoning": result.reasoning_tokens},
    )


def _response_metadata(result: Result, model_name: str) -> dict[str, Any]:
    return {
        "model_name": model_name,
        "model_provider": PROVIDER,
        "finish_reason": result.finish_reason,
        PROVIDER: result.record.model_dump(),
    }


def _forced_tools(
    tools: list[dict[str, Any]], tool_choice: dict[str, Any] | str | bool | None
) -> list[dict[str, Any]] | None:
    """The tools one of which the answer must call, or None when the model decides."""
    if tool_choice in (None, False, "auto", "none"):
        return None
    if not tools:
        raise InvalidArgumentError(f"tool_choice={tool_choice!r} needs tools; bind some first.")
    if tool_choice in (True, "any", "required"):
        return tools
    name: Any = tool_choice
    if isinstance(tool_choice, dict):
        name = (tool_choice.get("function") or {}).get("name") or tool_choice.get("name")
    chosen = [t for t in tools if t["function"]["name"] == name]
    if not isinstance(name, str) or not chosen:
        known = [t["function"]["name"] for t in tools]
        raise InvalidArgumentError(
            f"tool_choice={tool_choice!r} names no bound tool; use 'auto', 'none', 'any', "
            f"'required', True or one of {known}."
        )
    return chosen


def _answer_plan(
    tools: list[dict[str, Any]],
    tool_choice: dict[str, Any] | str | bool | None,
    response_format: dict[str, Any] | None,
    parser: ToolCallParser,
) -> tuple[AnswerConstraint | None, bool]:
    """The constraint on the answer, and whether to parse tool calls out of it."""
    forced = _forced_tools(tools, tool_choice)
    if response_format is not None:
        if forced is not None:
            raise InvalidArgumentError(
                "response_format and a forced tool_choice exclude each other."
            )
        kind = response_format.get("type")
        if kind == "json_object":
            return AnswerConstraint(schema={"type": "object"}), False
        schema = (response_format.get("json_schema") or {}).get("schema")
        if kind != "json_schema" or not isinstance(schema, dict):
            raise InvalidArgumentError(
                "response_format must be {'type': 'json_object'} or {'type': 'json_schema', "
                f"'json_schema': {{'schema': {{...}}}}}} (got {response_format!r})."
            )
        return AnswerConstraint(schema=schema), False
    if forced is not None:
        call = parser.forced(forced)
        return AnswerConstraint(schema=call.schema, prefix=call.prefix, suffix=call.suffix), True
    return None, bool(tools) and tool_choice != "none"


class _AnswerCheck:
    """Watches a model's output (one message, or chunks) for the routing record's verdict."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.error: str | None = None

    def see(self, message: BaseMessage) -> None:
        self.text.append(message.text)
        # A chunk's invalid calls are derived from its tool-call chunks: read one or the other.
        calls = (
            message.tool_call_chunks
            if isinstance(message, AIMessageChunk)
            else getattr(message, "invalid_tool_calls", [])
        )
        self.text += [c["args"] or "" for c in calls]
        record = message.response_metadata.get(PROVIDER)
        if isinstance(record, dict) and record.get("answer_error"):
            self.error = str(record["answer_error"])

    def check(self) -> None:
        if self.error is not None:
            raise IncompleteAnswerError(
                f"the structured answer is incomplete: {self.error}.", answer="".join(self.text)
            )


def _with_parsing_error(parser: Runnable[Any, Any]) -> Runnable[dict[str, Any], dict[str, Any]]:
    """``{"raw": message}`` to ``{"raw", "parsed", "parsing_error"}`` (include_raw=True)."""

    def parse(inputs: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
        try:
            parsed = parser.invoke(inputs["raw"], config)
        except Exception as exc:
            return {"raw": inputs["raw"], "parsed": None, "parsing_error": exc}
        return {"raw": inputs["raw"], "parsed": parsed, "parsing_error": None}

    async def aparse(inputs: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
        try:
            parsed = await parser.ainvoke(inputs["raw"], config)
        except Exception as exc:
            return {"raw": inputs["raw"], "parsed": None, "parsing_error": exc}
        return {"raw": inputs["raw"], "parsed": parsed, "parsing_error": None}

    return RunnableLambda(parse, afunc=aparse, name="parse_with_raw")


def _complete_answers(messages: Iterator[BaseMessage]) -> Iterator[BaseMessage]:
    """Pass the model's output through; raise IncompleteAnswerError at its end if the router
    found the constrained answer incomplete."""
    watch = _AnswerCheck()
    for message in messages:
        watch.see(message)
        yield message
    watch.check()


async def _acomplete_answers(messages: AsyncIterator[BaseMessage]) -> AsyncIterator[BaseMessage]:
    watch = _AnswerCheck()
    async for message in messages:
        watch.see(message)
        yield message
    watch.check()


def _tool_call(call: ParsedCall | InvalidCall) -> ToolCall | InvalidToolCall:
    if isinstance(call, ParsedCall):
        return tool_call(name=call.name, args=call.args, id=call.id)
    return invalid_tool_call(name=call.name, args=call.text, id=call.id, error=call.error)


def _require_call(result: Result, invalid: list[InvalidCall], answer: str) -> InvalidCall | None:
    """A forced call is missing: record why, in ``answer_error`` and in the invalid calls (an
    invalid call made of the whole ``answer`` when the model opened none). Returns that new
    invalid call, if any."""
    record = result.record
    reason = record.answer_error or (invalid[0].error if invalid else None)
    record.answer_error = f"tool_choice forced a tool call, but {reason or 'the answer has none'}"
    invalid[:] = [replace(call, error=record.answer_error) for call in invalid]
    if invalid:
        return None
    added = InvalidCall(text=answer, error=record.answer_error, id=new_call_id())
    invalid.append(added)
    return added


def _chat_result(result: Result, call: _Call) -> ChatResult:
    parser = call.parser
    answer = parser.parse(result.answer) if parser is not None else ParsedAnswer(result.answer)
    if call.forced and not answer.calls:
        _require_call(result, answer.invalid, result.answer)
    content = answer.content.strip() if answer.calls or answer.invalid else answer.content
    message = AIMessage(
        content=content,
        additional_kwargs={"reasoning_content": result.reasoning},
        response_metadata=_response_metadata(result, call.model_name),
        usage_metadata=_usage(result),
        tool_calls=[cast(ToolCall, _tool_call(c)) for c in answer.calls],
        invalid_tool_calls=[cast(InvalidToolCall, _tool_call(c)) for c in answer.invalid],
    )
    return ChatResult(generations=[ChatGeneration(message=message)])


class _Chunker:
    """Engine events to message chunks; with a parser, tool calls in the answer become
    ``tool_call_chunks`` (one whole chunk per call, as soon as its end marker arrives)."""

    def __init__(self, call: _Call, output_version: str | None) -> None:
        self.model_name = call.model_name
        self.splitter = CallSplitter(call.parser) if call.parser is not None else None
        self.forced = call.forced
        self.calls = 0
        self.invalid: list[InvalidCall] = []
        self.parsed = False
        # With output_version="v1" a tool-call chunk's index is also its content block's index,
        # and BaseChatModel numbers the other blocks 0, 1, ... as they come: negative indices
        # (-1, -2, ...) keep the calls apart from them, and from each other.
        self.negative_index = output_version == "v1"

    def of(self, event: Any) -> list[ChatGenerationChunk]:
        if isinstance(event, ReasoningDelta):
            reasoning = {"reasoning_content": event.text}
            return [_gen(AIMessageChunk(content="", additional_kwargs=reasoning))]
        if isinstance(event, StepDone):
            # Carried on a chunk too, so a consumer of a bare stream sees every decision. A
            # list, because chunk metadata merges: lists concatenate, dicts would be summed.
            steps = {"glimprouter_steps": [_event_data(event.record)]}
            return [_gen(AIMessageChunk(content="", response_metadata=steps))]
        if isinstance(event, AnswerDelta):
            if self.splitter is None:
                return [_gen(AIMessageChunk(content=event.text))]
            return [self._piece(piece) for piece in self.splitter.feed(event.text)]
        out = [self._piece(p) for p in self.splitter.finish()] if self.splitter else []
        # A forced call is missing: the chunks already sent keep their text, the reason
        # travels in the record (a chunk cannot carry an invalid call's error).
        if (
            self.forced
            and not self.parsed
            and (added := _require_call(event, list(self.invalid), event.answer)) is not None
        ):
            out.append(self._piece(added))
        last = AIMessageChunk(
            content="",
            response_metadata=_response_metadata(event, self.model_name),
            usage_metadata=_usage(event),
            chunk_position="last",
        )
        return [*out, _gen(last)]

    def _piece(self, piece: str | ParsedCall | InvalidCall) -> ChatGenerationChunk:
        if isinstance(piece, str):
            return _gen(AIMessageChunk(content=piece))
        index = -(self.calls + 1) if self.negative_index else self.calls
        self.calls += 1
        if isinstance(piece, ParsedCall):
            self.parsed = True
            args = json.dumps(piece.args, ensure_ascii=False)
            chunk: ToolCallChunk = tool_call_chunk(
                name=piece.name, args=args, id=piece.id, index=index
            )
        else:
            self.invalid.append(piece)
            chunk = tool_call_chunk(name=piece.name, args=piece.text, id=piece.id, index=index)
        return _gen(AIMessageChunk(content="", tool_call_chunks=[chunk]))


def _gen(message: AIMessageChunk) -> ChatGenerationChunk:
    return ChatGenerationChunk(message=message)


def _text_of(message: BaseMessage) -> str:
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
                f"{kind!r} content part. Send text, or describe the content in words."
            )
    return "".join(parts)


def _to_openai_messages(messages: list[BaseMessage]) -> list[dict[str, Any]]:
    if not messages:
        raise InvalidArgumentError("messages must not be empty.")
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
            raise InvalidArgumentError(f"unsupported message type {type(message).__name__}.")
        entry: dict[str, Any] = {"role": role, "content": _text_of(message)}
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
