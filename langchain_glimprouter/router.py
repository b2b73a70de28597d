"""The Router: GlimpRouter's own API, with no LangChain and no LlamaIndex.

It takes OpenAI-style message dicts and tools, routes every reasoning step between the small
and the large server (:mod:`langchain_glimprouter.core`, driven over HTTP by
:mod:`langchain_glimprouter.http`), and gives the answer (:meth:`Router.run`) or its events as
they come (:meth:`Router.stream`); :meth:`Router.arun` and :meth:`Router.astream` are the
async twins. :class:`~langchain_glimprouter.GlimpRouterChatModel` (LangChain),
:class:`~langchain_glimprouter.llama_index.GlimpRouterLLM` and the proxy
(:mod:`langchain_glimprouter.proxy`) each wrap one.

.. code-block:: python

    from langchain_glimprouter import Backend, Router

    router = Router(
        small=Backend(base_url="http://localhost:8001/v1", model="Qwen/Qwen3-1.7B"),
        large=Backend(base_url="http://localhost:8002/v1", model="Qwen/Qwen3-8B"),
        threshold=0.9,
    )
    answer = router.run([{"role": "user", "content": "What is 17 * 23?"}])
    answer.content, answer.reasoning, answer.record.intervention_rate
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator, Mapping, Sequence
from contextlib import aclosing, closing
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol, cast

from pydantic import ConfigDict, SecretStr

from langchain_glimprouter.backend import DEFAULT_TIMEOUT, Backend, resolve_key
from langchain_glimprouter.core.answers import (
    AnswerReader,
    RoutedAnswer,
    RouterEvent,
    ToolChoice,
    answer_plan,
)
from langchain_glimprouter.core.engine import route
from langchain_glimprouter.core.messages import check_tools, openai_messages
from langchain_glimprouter.core.ops import Program
from langchain_glimprouter.core.servers import ServerSpec
from langchain_glimprouter.core.settings import (
    RouterSettings,
    ServerFacts,
    check_settings,
    route_settings,
)
from langchain_glimprouter.core.strategies import SPECS, AdaptiveThreshold
from langchain_glimprouter.core.tool_calls import ToolCallParser
from langchain_glimprouter.errors import (
    BackendResponseError,
    GlimpRouterError,
    InvalidArgumentError,
)
from langchain_glimprouter.http.client import BackendClient
from langchain_glimprouter.http.drivers import Client, Clients, adrive, drive
from langchain_glimprouter.telemetry import atraced, traced

Role = Literal["small", "large"]
ROLES: tuple[Role, Role] = ("small", "large")


class RouterConfig(RouterSettings):
    """A router's settings (:class:`~langchain_glimprouter.core.settings.RouterSettings`) and
    its two servers."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    small: Backend
    """The small model's server: glimpses every step and writes the easy ones."""
    large: Backend
    """The large model's server: writes the hard steps and the answer."""
    timeout: float | None = None
    """Seconds to wait for a connection or the next chunk (default 60); a Backend's own timeout
    wins."""
    api_key: SecretStr | None = None
    """Bearer token for both servers unless a Backend sets its own."""


class ClientFactory(Protocol):
    """Builds the client of one server URL (the default is
    :class:`~langchain_glimprouter.http.client.BackendClient`; tests give scripted ones)."""

    def __call__(
        self,
        role: str,
        backend: Backend,
        *,
        api_key: SecretStr | None,
        timeout: float,
        base_url: str,
    ) -> Client: ...


@dataclass
class _Shared:
    """What a router learns and holds across calls; shared with :meth:`Router.rebind`."""

    facts: ServerFacts
    controller: AdaptiveThreshold | None
    clients: dict[str, tuple[tuple[Any, ...], list[Client]]]


@dataclass(frozen=True)
class PreparedCall:
    """One routed call, checked and planned, not yet started: its program, clients and how its
    answer is read. Iterate :meth:`events` (or :meth:`aevents`) once to run it."""

    program: Program[None]
    clients: Clients
    model: str
    """The served model that writes the answer."""
    parser: ToolCallParser | None
    """Parses tool calls out of the answer; None when no tools are bound (or "none")."""
    forced: bool
    """tool_choice forces a call: an answer without one gets an invalid call saying why."""
    trace_parent: Any = None
    """The OpenTelemetry context whose span the call's span is a child of (the proxy's: the
    request's ``traceparent``); None: the current context when the call starts
    (:mod:`~langchain_glimprouter.telemetry`)."""

    def events(self) -> Generator[RouterEvent, None, None]:
        """Run the call, yielding its events; the last is the :class:`RoutedAnswer`. Stopping
        early (``break``, an error) closes the open stream, which the server aborts."""
        reader = AnswerReader(self.model, self.parser, self.forced)
        driving = cast(Generator[Any, None, None], drive(self.program, self.clients))
        with closing(traced(driving, self.model, self.trace_parent)) as driven:
            for event in driven:
                yield from reader.read(event)

    async def aevents(self) -> AsyncGenerator[RouterEvent, None]:
        """The async twin of :meth:`events`; cancelling it closes the open stream."""
        reader = AnswerReader(self.model, self.parser, self.forced)
        driving = cast(AsyncGenerator[Any, None], adrive(self.program, self.clients))
        driving = atraced(driving, self.model, self.trace_parent)
        async with aclosing(driving) as driven:
            async for event in driven:
                for out in reader.read(event):
                    yield out


def answer_of(events: Iterator[RouterEvent]) -> RoutedAnswer:
    """The :class:`RoutedAnswer` that ends ``events``."""
    last: RouterEvent | None = None
    for event in events:
        last = event
    return _checked(last)


async def aanswer_of(events: AsyncIterator[RouterEvent]) -> RoutedAnswer:
    """The async twin of :func:`answer_of`."""
    last: RouterEvent | None = None
    async for event in events:
        last = event
    return _checked(last)


def _checked(last: RouterEvent | None) -> RoutedAnswer:
    if not isinstance(last, RoutedAnswer):  # the engine always ends with a Result
        raise GlimpRouterError("the routing program ended without a result")
    return last


class Router:
    """Routes each reasoning step between a small and a large model (see the module).

    Args:
        config: The settings and servers as one :class:`RouterConfig` (or any subclass, such as
            the LangChain chat model); or give its fields as keywords instead.
        client_factory: Builds each server URL's client (default:
            :attr:`default_client_factory`).
        **fields: :class:`RouterConfig`'s fields: ``small``, ``large``, ``threshold``,
            ``max_reasoning_tokens``, ``strategy``, ... (checked as the chat model checks them).
    """

    default_client_factory: ClientFactory = BackendClient
    """The client factory of routers built without one: the hook through which tests give
    every router scripted servers."""

    def __init__(
        self,
        config: RouterConfig | None = None,
        /,
        *,
        client_factory: ClientFactory | None = None,
        **fields: Any,
    ) -> None:
        if config is None:
            config = RouterConfig(**fields)
        elif fields:
            raise InvalidArgumentError(
                f"give a RouterConfig or its fields, not both (got {sorted(fields)})."
            )
        self.config = config
        self.client_factory = client_factory
        controller = None
        if config.threshold == "auto" and config.target_rate is not None:
            controller = AdaptiveThreshold(config.target_rate, seed=config.seed)
        self._shared = _Shared(ServerFacts(), controller, {})

    def __repr__(self) -> str:
        return f"Router(small={self.config.small.model!r}, large={self.config.large.model!r})"

    def rebind(self, config: RouterConfig) -> Router:
        """A router over ``config`` that shares this one's facts about the servers, its
        ``threshold="auto"`` controller and its clients (a copy of a chat model with changed
        fields routes with its own settings, and keeps what was learned)."""
        router = Router(config, client_factory=self.client_factory)
        router._shared = self._shared
        return router

    @property
    def facts(self) -> ServerFacts:
        """What this router learned about the servers (renders, limits, replicas down)."""
        return self._shared.facts

    @property
    def adaptive_threshold(self) -> AdaptiveThreshold | None:
        """The controller of ``threshold="auto"``, shared by every call of this router: its
        ``threshold`` now, ``realised_rate`` and ``decisions``. None with a fixed threshold."""
        return self._shared.controller

    def clients(self, role: Role) -> list[Client]:
        """The clients of ``role``'s server URLs (``base_url``, then the replicas), built on
        first use and rebuilt when the backend, its key or timeout changes."""
        config = self.config
        backend: Backend = getattr(config, role)
        key = resolve_key(backend, config.api_key, role)
        timeout = backend.timeout or config.timeout or DEFAULT_TIMEOUT
        # The clients replaced are not closed here (another router may be mid-call on them):
        # each closes its connections once no call holds it (BackendClient.__del__).
        spec = (id(backend), key.get_secret_value() if key else None, timeout)
        cached = self._shared.clients.get(role)
        if cached is not None and cached[0] == spec:
            return cached[1]
        factory = self.client_factory or type(self).default_client_factory
        built = [
            factory(role, backend, api_key=key, timeout=timeout, base_url=url)
            for url in backend.urls
        ]
        self._shared.clients[role] = (spec, built)
        return built

    # -- a call ----------------------------------------------------------------------------------

    def prepare(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: ToolChoice = None,
        response_format: Mapping[str, Any] | None = None,
        stop: Sequence[str] | None = None,
        model: str | None = None,
        extra_body: Mapping[str, Any] | None = None,
        chat_template_kwargs: Mapping[str, Any] | None = None,
        **settings: Any,
    ) -> PreparedCall:
        """Check a call and plan it, without any request: the messages and tools, the
        answer's constraint and the call's settings (``settings`` override the router's for
        this call, validated as the constructor validates them; ``stop`` is the answer's stop
        sequences, ``model`` the large server's served model for this call). ``extra_body``
        adds fields to every completions request of this call, to both servers (sampling
        extras such as ``top_k`` or ``repetition_penalty``; not the fields the router sets
        itself, :data:`RESERVED_BODY`), over each Backend's own ``extra_body``;
        ``chat_template_kwargs`` adds variables to both servers' chat templates for this call,
        over each Backend's own. Raises :class:`~langchain_glimprouter.errors.InvalidArgumentError`
        naming the argument."""
        config = self.config
        large = config.large
        if model:
            large = large.model_copy(update={"model": str(model)})
        openai_tools = check_tools(tools)
        form = dict(response_format) if response_format is not None else None
        constraint, parse = answer_plan(openai_tools, tool_choice, form, large.tool_parser)
        values = self._call_settings(settings, stop)
        auto = self._shared.controller if values["threshold"] == "auto" else None
        if auto is not None:
            values["threshold"] = None  # the controller decides in its place
        call_settings = route_settings(
            values, controller=auto, tools=tuple(openai_tools), answer=constraint
        )
        servers = {
            role: _per_call(backend.spec(), extra_body, chat_template_kwargs)
            for role, backend in (("small", config.small), ("large", large))
        }
        program = route(openai_messages(messages), servers, call_settings, self.facts)
        clients: dict[str, list[Client]] = {role: self.clients(role) for role in ROLES}
        forced = parse and constraint is not None
        return PreparedCall(
            program, clients, large.model, large.tool_parser if parse else None, forced
        )

    def _call_settings(self, given: dict[str, Any], stop: Sequence[str] | None) -> dict[str, Any]:
        """The router's settings with a call's, checked together."""
        config = self.config
        values = config.with_overrides(given)
        values["stop"] = list(stop) if stop else config.stop
        coin = SPECS[values["strategy"]].decider == "coin"
        if given.get("threshold", "auto") != "auto" and "target_rate" not in given and not coin:
            values["target_rate"] = None  # a fixed threshold for this call on an "auto" router
        controller = self._shared.controller
        if values["threshold"] == "auto" and (
            controller is None or values["target_rate"] != controller.target_rate
        ):
            raise InvalidArgumentError(
                "threshold='auto' per call needs a router built with threshold='auto' and the "
                "same target_rate (the controller lives across calls).",
                param="threshold",
            )
        check_settings(values)
        return values

    def run(self, messages: Sequence[Mapping[str, Any]], **kwargs: Any) -> RoutedAnswer:
        """Route one call (arguments as :meth:`prepare`) and return its answer."""
        return answer_of(self.prepare(messages, **kwargs).events())

    async def arun(self, messages: Sequence[Mapping[str, Any]], **kwargs: Any) -> RoutedAnswer:
        """The async twin of :meth:`run`."""
        return await aanswer_of(self.prepare(messages, **kwargs).aevents())

    def stream(self, messages: Sequence[Mapping[str, Any]], **kwargs: Any) -> Iterator[RouterEvent]:
        """Route one call, yielding its events as they come (see
        :data:`~langchain_glimprouter.core.answers.RouterEvent`); the arguments are checked
        here, before the first event is asked for."""
        return self.prepare(messages, **kwargs).events()

    def astream(
        self, messages: Sequence[Mapping[str, Any]], **kwargs: Any
    ) -> AsyncIterator[RouterEvent]:
        """The async twin of :meth:`stream` (``async for event in router.astream(...)``)."""
        return self.prepare(messages, **kwargs).aevents()

    # -- tokens ----------------------------------------------------------------------------------

    def count_tokens(self, body: dict[str, Any]) -> int:
        """Tokens by the large server's own tokenizer (vLLM's ``/tokenize`` with ``body``)."""
        try:
            return int(self.clients("large")[0].request_json("POST", "/tokenize", body)["count"])
        except BackendResponseError as exc:
            if exc.status_code not in (404, 405):
                raise
            raise BackendResponseError(
                "the large server has no /tokenize endpoint, so tokens cannot be counted with "
                "the model's own tokenizer (vLLM provides it).",
                role="large",
                url=exc.url,
                status_code=exc.status_code,
            ) from exc


RESERVED_BODY = frozenset(
    {"model", "prompt", "max_tokens", "stream", "stream_options", "stop", "logprobs", "echo",
     "n", "best_of", "temperature", "top_p", "seed", "add_special_tokens", "structured_outputs",
     "response_format", "guided_json", "suffix"}
)  # fmt: skip
"""Fields of a completions request the router sets itself, which a call's ``extra_body`` may
not set (the budgets, the glimpse's logprobs, the sampling settings of the same name)."""


RESERVED_TEMPLATE_VARIABLES = frozenset(
    {"messages", "tools", "add_generation_prompt", "continue_final_message", "chat_template",
     "tokenize", "documents"}
)  # fmt: skip
"""Chat template variables the router sets itself, which ``chat_template_kwargs`` may not."""


def _per_call(
    spec: ServerSpec,
    extra_body: Mapping[str, Any] | None,
    chat_template_kwargs: Mapping[str, Any] | None,
) -> ServerSpec:
    """``spec`` with a call's request fields and template variables over its own."""
    if extra_body:
        reserved = sorted(set(extra_body) & RESERVED_BODY)
        if reserved:
            raise InvalidArgumentError(
                f"extra_body may not set {reserved}: the router sets them itself (give the "
                "router settings of those names instead).",
                param="extra_body",
            )
        spec = replace(spec, extra_body={**spec.extra_body, **extra_body})
    if chat_template_kwargs:
        taken = sorted(set(chat_template_kwargs) & RESERVED_TEMPLATE_VARIABLES)
        if taken:
            raise InvalidArgumentError(
                f"chat_template_kwargs may not set {taken}: the router renders them itself.",
                param="chat_template_kwargs",
            )
        variables = {**spec.chat_template_kwargs, **chat_template_kwargs}
        spec = replace(spec, chat_template_kwargs=variables)
    return spec
