"""GlimpRouterChatModel: the LangChain surface over the routing engine.

Messages in; an ``AIMessage`` (or chunks) out, with the chain in
``additional_kwargs["reasoning_content"]``, the routing record in
``response_metadata["glimprouter"]`` and one ``glimprouter_step`` custom callback event per step.
Everything about routing lives in :mod:`~langchain_glimprouter.engine`.
"""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass
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
    SystemMessage,
    ToolMessage,
)
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import RunnableConfig, ensure_config
from pydantic import ConfigDict, Field, PrivateAttr, SecretStr, model_validator
from typing_extensions import Self

from langchain_glimprouter.backends import DEFAULT_TIMEOUT, Backend, BackendClient
from langchain_glimprouter.engine import (
    AnswerDelta,
    Probe,
    ReasoningDelta,
    Result,
    RouteSettings,
    ServerFacts,
    StepDone,
    route,
)
from langchain_glimprouter.entropy import ESTIMATORS, Estimator
from langchain_glimprouter.errors import (
    BackendResponseError,
    BudgetError,
    GlimpRouterError,
    InvalidArgumentError,
)
from langchain_glimprouter.program import Clients, Program, adrive, drive
from langchain_glimprouter.records import STEP_EVENT, StepRecord

PROVIDER = "glimprouter"
_EVENTS_KWARG = "_glimprouter_events"
_SETTING_KWARGS = frozenset(
    {"threshold", "max_reasoning_tokens", "max_tokens", "temperature", "top_p", "seed"}
)


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
    threshold: float = Field(
        default=0.9,
        description="tau in nats: a step whose H_init exceeds it goes to the large model. "
        "0 sends every step to the large model (no glimpse), inf every step to the small one.",
    )
    entropy_estimator: Estimator = Field(
        default="topk_renormalized",
        description="How H_init is computed from the top-k logprobs (see entropy.py).",
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
    step_delimiter: str = Field(default="\n\n", description="What separates reasoning steps.")
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

    _facts: ServerFacts = PrivateAttr(default_factory=ServerFacts)
    _clients: dict[str, tuple[tuple[Any, ...], list[BackendClient]]] = PrivateAttr(
        default_factory=dict
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        _check_budgets(self.threshold, self.max_reasoning_tokens, self.max_tokens)
        if self.top_logprobs < 1:
            raise InvalidArgumentError(f"top_logprobs must be >= 1 (got {self.top_logprobs}).")
        if self.max_retries < 0:
            raise InvalidArgumentError(f"max_retries must be >= 0 (got {self.max_retries}).")
        if not self.step_delimiter:
            raise InvalidArgumentError("step_delimiter must not be empty.")
        if self.entropy_estimator not in ESTIMATORS:
            raise InvalidArgumentError(f"entropy_estimator must be one of {ESTIMATORS}.")
        return self

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
        if stop := stop or self.stop:
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
    ) -> tuple[Program[None], Clients, str]:
        kwargs.pop(_EVENTS_KWARG, None)
        large = self.large
        if model := kwargs.pop("model", None):
            large = large.model_copy(update={"model": str(model)})
        unknown = set(kwargs) - _SETTING_KWARGS
        if unknown:
            raise InvalidArgumentError(
                f"unsupported call arguments {sorted(unknown)}; supported: "
                f"{sorted(_SETTING_KWARGS | {'model', 'stop'})}."
            )
        fields = {name: getattr(self, name) for name in _SETTING_KWARGS}
        fields.update(kwargs)
        settings = RouteSettings(
            estimator=self.entropy_estimator,
            probe=self.probe,
            top_logprobs=self.top_logprobs,
            step_delimiter=self.step_delimiter,
            stop=tuple(stop or self.stop or ()),
            max_retries=self.max_retries,
            on_small_failure=self.on_small_failure,
            **fields,
        )
        _check_budgets(settings.threshold, settings.max_reasoning_tokens, settings.max_tokens)
        backends = {"small": self.small, "large": large}
        clients = {role: self._clients_for(role) for role in backends}
        program = route(_to_openai_messages(messages), backends, settings, self._facts)
        return program, clients, large.model

    # -- generation -------------------------------------------------------------------------------

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        program, clients, model_name = self._prepare(messages, stop, kwargs)
        result: Result | None = None
        for event in drive(program, clients):
            if isinstance(event, StepDone) and run_manager is not None:
                _manager_of(CallbackManager, run_manager).on_custom_event(
                    STEP_EVENT, _event_data(event.record), run_id=run_manager.run_id
                )
            elif isinstance(event, Result):
                result = event
        return _chat_result(_require(result), model_name)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        program, clients, model_name = self._prepare(messages, stop, kwargs)
        result: Result | None = None
        async for event in adrive(program, clients):
            if isinstance(event, StepDone) and run_manager is not None:
                await _manager_of(AsyncCallbackManager, run_manager).on_custom_event(
                    STEP_EVENT, _event_data(event.record), run_id=run_manager.run_id
                )
            elif isinstance(event, Result):
                result = event
        return _chat_result(_require(result), model_name)

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
        program, clients, model_name = self._prepare(messages, stop, kwargs)
        for event in drive(program, clients):
            if isinstance(event, StepDone):
                data = _event_data(event.record)
                if manager is not None:
                    manager.on_custom_event(STEP_EVENT, data, run_id=run_id)
                else:
                    with suppress(RuntimeError):  # outside any run: the chunk carries it
                        dispatch_custom_event(STEP_EVENT, data)
            chunk = _chunk(event, model_name)
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
        program, clients, model_name = self._prepare(messages, stop, kwargs)
        async for event in adrive(program, clients):
            if isinstance(event, StepDone):
                data = _event_data(event.record)
                if manager is not None:
                    await manager.on_custom_event(STEP_EVENT, data, run_id=run_id)
                else:
                    with suppress(RuntimeError):  # outside any run: the chunk carries it
                        await adispatch_custom_event(STEP_EVENT, data)
            chunk = _chunk(event, model_name)
            if run_manager is not None and chunk.message.content:
                await run_manager.on_llm_new_token(cast(str, chunk.message.content), chunk=chunk)
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


def _check_budgets(threshold: float, max_reasoning_tokens: int, max_tokens: int) -> None:
    if math.isnan(threshold) or threshold < 0:
        raise InvalidArgumentError(
            f"threshold must be >= 0 nats (got {threshold}); 0 sends every step to the large "
            "model, math.inf every step to the small one."
        )
    if max_reasoning_tokens <= 0 or max_tokens <= 0:
        raise BudgetError(
            "max_reasoning_tokens and max_tokens must be positive (got "
            f"{max_reasoning_tokens} and {max_tokens})."
        )


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


def _chat_result(result: Result, model_name: str) -> ChatResult:
    message = AIMessage(
        content=result.answer,
        additional_kwargs={"reasoning_content": result.reasoning},
        response_metadata=_response_metadata(result, model_name),
        usage_metadata=_usage(result),
    )
    return ChatResult(generations=[ChatGeneration(message=message)])


def _chunk(event: Any, model_name: str) -> ChatGenerationChunk:
    if isinstance(event, ReasoningDelta):
        message = AIMessageChunk(content="", additional_kwargs={"reasoning_content": event.text})
    elif isinstance(event, AnswerDelta):
        message = AIMessageChunk(content=event.text)
    elif isinstance(event, StepDone):
        # Carried on a chunk too, so a consumer of a bare stream sees every decision. A list,
        # because chunk metadata merges: lists concatenate, dicts would be summed field by field.
        message = AIMessageChunk(
            content="", response_metadata={"glimprouter_steps": [_event_data(event.record)]}
        )
    else:
        message = AIMessageChunk(
            content="",
            response_metadata=_response_metadata(event, model_name),
            usage_metadata=_usage(event),
            chunk_position="last",
        )
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
        if isinstance(message, ToolMessage):
            entry["tool_call_id"] = message.tool_call_id
        out.append(entry)
    return out
