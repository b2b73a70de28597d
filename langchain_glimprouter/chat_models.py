"""GlimpRouterChatModel: the LangChain surface over the routing core.

Messages in; an ``AIMessage`` (or chunks) out, with the chain in
``additional_kwargs["reasoning_content"]``, the routing record in
``response_metadata["glimprouter"]`` and one ``glimprouter_step`` custom callback event per step.
Routing itself is :mod:`~langchain_glimprouter.core`; this module turns LangChain's calls into
its programs (messages and results: :mod:`._convert`; step events: :mod:`._callbacks`; structured
output: :mod:`._structured`; settings: :mod:`._settings`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, Literal, cast

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel, LangSmithParams, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict, Field, PrivateAttr, SecretStr, model_validator
from typing_extensions import Self

from langchain_glimprouter._callbacks import (
    EVENTS_KWARG,
    astep_sink,
    ls_params,
    step_sink,
    with_event_target,
)
from langchain_glimprouter._convert import (
    Call,
    Chunker,
    chat_result,
    forced_tools,
    prepare_call,
    require_result,
    to_openai_messages,
)
from langchain_glimprouter._settings import (
    check_settings,
    setting_names,
)
from langchain_glimprouter._structured import StructuredOutputMethod, structured_output
from langchain_glimprouter.backend import DEFAULT_TIMEOUT, Backend, identity, resolve_key
from langchain_glimprouter.core.entropy import Estimator
from langchain_glimprouter.core.events import Result, StepDone
from langchain_glimprouter.core.settings import Probe, ServerFacts
from langchain_glimprouter.core.strategies import AdaptiveThreshold, Strategy
from langchain_glimprouter.errors import InvalidArgumentError
from langchain_glimprouter.http.client import BackendClient, count_tokens
from langchain_glimprouter.http.drivers import adrive, drive


class GlimpRouterChatModel(BaseChatModel):
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
    """

    model_config = ConfigDict(populate_by_name=True, use_attribute_docstrings=True)

    small: Backend
    """The small model's server: glimpses every step and writes the easy ones."""
    large: Backend
    """The large model's server: writes the hard steps and the answer."""
    threshold: float | Literal["auto"] = 0.9
    """tau in nats: a step whose H_init exceeds it goes to the large model. 0 sends every step
    to the large model (no glimpse), inf every step to the small one. 'auto': an online
    controller keeps the share of large steps near target_rate. With another strategy, the
    threshold of its own measure (see strategy)."""
    strategy: Strategy = "glimpse"
    """How a step's writer is chosen: 'glimpse' (the first token's entropy), the baselines
    'large_only', 'small_only' and 'random' (target_rate of the steps large), or
    generate-then-measure: 'step_entropy' (mean entropy of the small model's step > threshold:
    the large model rewrites it), 'step_ppl' (its perplexity), 'specreason' (the large model's
    0-9 score of it < threshold)."""
    target_rate: float | None = None
    """The wanted share of large steps, in (0, 1): the target of threshold='auto', and the
    probability of strategy='random'."""
    entropy_estimator: Estimator = "topk_renormalized"
    """How H_init is computed from the top-k logprobs: 'topk_renormalized' (the paper's, whose
    thresholds it keeps), 'topk_tail' (a lower bound), or 'topk_bounds' (bounds of the exact
    entropy: the exact decision where the threshold lies outside them, an escalation probe where
    it is too close to call)."""
    escalation_logprobs: int = 1000
    """entropy_estimator='topk_bounds': k of the 1-token probe that settles a step too close to
    call (the small server's --max-logprobs must allow it; below that the router uses the
    server's cap, and at top_logprobs or less it decides on the estimate). 0: never escalate."""
    probe: Probe = "stream"
    """'stream': the glimpse is the start of the small model's step (one request per delegated
    step). 'separate': a 1-token probe request, then the step."""
    max_reasoning_tokens: int = 8192
    """Token budget of the whole chain, both models together."""
    max_tokens: int = 2048
    """Token budget of the final answer."""
    temperature: float | None = 0.6
    """Sampling temperature of both servers."""
    top_p: float | None = 0.95
    """Nucleus sampling of both servers."""
    seed: int | None = None
    """Sampling seed sent to both servers (and the coin of strategy='random')."""
    top_logprobs: int = 20
    """k of the first-token distribution asked of the small server (vLLM caps it with
    --max-logprobs, 20 by default)."""
    step_delimiter: str | list[str] = "\n\n"
    """What ends a reasoning step: a string, or several (the one that ended a step stays at its
    end in the chain; several need a server that reports stop_reason, as vLLM does)."""
    max_step_tokens: int | None = None
    """Longest step in tokens: a longer one is cut there and the next step, routed afresh,
    continues its text. None: no limit."""
    stop: list[str] | None = Field(default=None, alias="stop_sequences")
    """Stop sequences of the final answer."""
    max_retries: int = 2
    """Retries, with backoff, of a request that failed in a way that is safe to repeat
    (connection refused, 429, 5xx), and resumptions of a stream cut mid-response; a Backend's
    own max_retries wins."""
    on_small_failure: Literal["raise", "large"] = "raise"
    """When the small backend is down or failing (after retries): 'raise', or 'large' to send
    the steps to the large backend (each such step has fallback=True)."""
    timeout: float | None = None
    """Seconds to wait for a connection or the next chunk (default 60); a Backend's own timeout
    wins."""
    api_key: SecretStr | None = None
    """Bearer token for both servers unless a Backend sets its own."""
    streaming: bool = False
    """invoke/ainvoke stream internally, so callbacks see every token (on_llm_new_token) as it
    arrives; the result is the same message."""

    _facts: ServerFacts = PrivateAttr(default_factory=ServerFacts)
    _controller: AdaptiveThreshold | None = PrivateAttr(default=None)
    _clients: dict[str, tuple[tuple[Any, ...], list[BackendClient]]] = PrivateAttr(
        default_factory=dict
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        check_settings(self.router_settings)
        if self.threshold == "auto" and self.target_rate is not None:
            self._controller = AdaptiveThreshold(self.target_rate, seed=self.seed)
        return self

    @property
    def adaptive_threshold(self) -> AdaptiveThreshold | None:
        """The controller of ``threshold="auto"``, shared by every call of this router: its
        ``threshold`` now, ``realised_rate`` and ``decisions``. None with a fixed threshold."""
        return self._controller

    @property
    def router_settings(self) -> dict[str, Any]:
        """Every router setting of this model by field name (see :data:`ROUTER_SETTINGS`)."""
        return {name: getattr(self, name) for name in ROUTER_SETTINGS}

    # -- LangChain metadata ----------------------------------------------------------------------

    @property
    def _llm_type(self) -> str:
        return "glimprouter-chat"

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
        kwargs.pop(EVENTS_KWARG, None)
        # LangChain puts the call's stop over the model's own in the cache key: the stop that
        # applies is the call's, else the router's.
        return super()._get_invocation_params(stop=stop or self.stop, **kwargs)

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        return ls_params(self, stop, kwargs)

    # -- plumbing ---------------------------------------------------------------------------------

    def _clients_for(self, role: str) -> list[BackendClient]:
        backend: Backend = getattr(self, role)
        key = resolve_key(backend, self.api_key, role)
        timeout = backend.timeout or self.timeout or DEFAULT_TIMEOUT
        # model_copy shares private attributes: rebuild when the settings are not this model's.
        # The clients replaced are not closed here (a copy may be mid-call on them): each closes
        # its connections once no call holds it (BackendClient.__del__).
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
    ) -> Call:
        clients = {role: self._clients_for(role) for role in ("small", "large")}
        return prepare_call(self, self._controller, self._facts, clients, messages, stop, kwargs)

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
        emit = step_sink(self, run_manager, kwargs)
        call = self._prepare(messages, stop, kwargs)
        result: Result | None = None
        for event in drive(call.program, call.clients):
            if isinstance(event, StepDone):
                emit(event.record)
            elif isinstance(event, Result):
                result = event
        return chat_result(require_result(result), call)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        emit = astep_sink(self, run_manager, kwargs)
        call = self._prepare(messages, stop, kwargs)
        result: Result | None = None
        async for event in adrive(call.program, call.clients):
            if isinstance(event, StepDone):
                await emit(event.record)
            elif isinstance(event, Result):
                result = event
        return chat_result(require_result(result), call)

    def _generate_with_cache(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        # An invoke that streams calls _stream without its run manager: pass it on (step_events).
        if run_manager is not None:
            kwargs[EVENTS_KWARG] = run_manager
        return super()._generate_with_cache(messages, stop, run_manager, **kwargs)

    async def _agenerate_with_cache(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if run_manager is not None:
            kwargs[EVENTS_KWARG] = run_manager
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
        # and callbacks so that step events reach the config's handlers under this run.
        config, target = with_event_target(config)
        yield from super().stream(input, config, stop=stop, **{EVENTS_KWARG: target}, **kwargs)

    async def astream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[AIMessageChunk]:
        config, target = with_event_target(config)
        async for chunk in super().astream(
            input, config, stop=stop, **{EVENTS_KWARG: target}, **kwargs
        ):
            yield chunk

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        emit = step_sink(self, run_manager, kwargs)
        call = self._prepare(messages, stop, kwargs)
        chunks = Chunker(call, self.output_version)
        for event in drive(call.program, call.clients):
            if isinstance(event, StepDone):
                emit(event.record)
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
        emit = astep_sink(self, run_manager, kwargs)
        call = self._prepare(messages, stop, kwargs)
        chunks = Chunker(call, self.output_version)
        async for event in adrive(call.program, call.clients):
            if isinstance(event, StepDone):
                await emit(event.record)
            for chunk in chunks.of(event):
                if run_manager is not None and chunk.message.content:
                    text = cast(str, chunk.message.content)
                    await run_manager.on_llm_new_token(text, chunk=chunk)
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
        return self._count(body)

    def get_num_tokens(self, text: str) -> int:
        """Count the tokens of ``text`` with the large server's own tokenizer (vLLM /tokenize)."""
        return self._count({"model": self.large.model, "prompt": text, "add_special_tokens": False})

    def _count(self, body: dict[str, Any]) -> int:
        return count_tokens(self._clients_for("large")[0], body)


ROUTER_SETTINGS: tuple[str, ...] = setting_names(
    GlimpRouterChatModel.model_fields, BaseChatModel.model_fields
)
"""The router settings among the fields (all but the connection fields and LangChain's own):
the identifying params, the bench results header and the CLI flags all come from this list."""
