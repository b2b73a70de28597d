"""The step-event plumbing around ``BaseChatModel``: where ``glimprouter_step`` custom events and
the steps' child runs (:mod:`._tracing`) go, in each of the ways LangChain calls a chat model
(invoke, stream, the v2 events path)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManager,
    AsyncCallbackManagerForLLMRun,
    CallbackManager,
    CallbackManagerForLLMRun,
    adispatch_custom_event,
    dispatch_custom_event,
)
from langchain_core.language_models import BaseChatModel, LangSmithParams
from langchain_core.runnables import (
    RunnableConfig,
    ensure_config,
)

from langchain_glimprouter._tracing import atrace_step, step_run, trace_step
from langchain_glimprouter.records import PROVIDER, STEP_EVENT, StepRecord

_TARGET: ContextVar[Any] = ContextVar("glimprouter_step_events", default=None)
"""Where the step events of the call being made in this context go, when LangChain calls
``_stream`` without its run manager: an :class:`EventTarget` (``stream``/``astream``) or the run
manager (an invoke that streams internally). Set only around LangChain's own calls
(:func:`events_to`) and taken by the first ``_stream`` that starts under it, so a nested call
never sees another call's target."""


@contextmanager
def events_to(target: Any) -> Iterator[None]:
    """Step events of the call LangChain makes inside this block go to ``target``."""
    token = _TARGET.set(target)
    try:
        yield
    finally:
        _TARGET.reset(token)


def _take_target() -> Any:
    target = _TARGET.get()
    if target is not None:
        _TARGET.set(None)  # undone when the events_to block ends
    return target


@dataclass(frozen=True)
class EventTarget:
    """Where ``glimprouter_step`` events go when ``stream``/``astream`` call ``_stream``."""

    config: RunnableConfig
    run_id: uuid.UUID


def with_event_target(config: RunnableConfig | None) -> tuple[RunnableConfig, EventTarget]:
    """The config of a ``stream``/``astream`` call with its run id fixed, and its callbacks
    resolved into a manager: the LangSmith tracer that tracing by environment adds is then one
    and the same in the chat model's run and in its steps' child runs."""
    config = ensure_config(config)
    config["callbacks"] = CallbackManager.configure(config.get("callbacks"))
    run_id = config.get("run_id") or uuid.uuid4()
    config["run_id"] = run_id
    return config, EventTarget(config=config, run_id=run_id)


def manager_of(cls: Any, run_manager: Any) -> Any:
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


def step_events(model: BaseChatModel, cls: Any, run_manager: Any) -> tuple[Any, uuid.UUID | None]:
    """The callback manager and run id that ``glimprouter_step`` events go to.

    ``_generate`` and the v2 event path get the run manager, whose own ``on_custom_event`` is a
    no-op stub, so a manager is built from its handlers. ``stream``/``astream`` call ``_stream``
    without it; the model's overrides give the run's config and id instead
    (:func:`with_event_target`, through :func:`events_to`). An invoke that streams internally
    (``streaming=True``, or under ``astream_events``) calls it without either; the model's
    ``_generate_with_cache`` overrides give the run manager itself (:func:`events_to`).
    Otherwise there is none, and events go through ``dispatch_custom_event``.
    """
    target: EventTarget | Any = _take_target()
    run_manager = run_manager or (None if isinstance(target, EventTarget) else target)
    if run_manager is not None:
        return manager_of(cls, run_manager), run_manager.run_id
    if target is not None:
        config = target.config
        manager = cls.configure(
            config.get("callbacks"),
            model.callbacks,
            model.verbose,
            config.get("tags"),
            model.tags,
            config.get("metadata"),
            model.metadata,
        )
        return manager, target.run_id
    return None, None


def step_sink(
    model: BaseChatModel,
    run_manager: CallbackManagerForLLMRun | None,
    served: dict[str, str],
) -> Callable[[StepRecord], None]:
    """What to call with each finished step's record: a ``glimprouter_step`` custom event under
    the model's run (see :func:`step_events`) and, when some handler is inherited, a child run
    of it (:func:`~._tracing.trace_step`) naming the model in ``served`` that wrote it."""
    manager, run_id = step_events(model, CallbackManager, run_manager)

    def emit(record: StepRecord) -> None:
        if manager is not None and run_id is not None:
            manager.on_custom_event(STEP_EVENT, record.model_dump(), run_id=run_id)
            if manager.inheritable_handlers:
                trace_step(manager, run_id, step_run(record, served[record.model], manager))
        else:
            with suppress(RuntimeError):  # outside any run: the chunk carries the step
                dispatch_custom_event(STEP_EVENT, record.model_dump())

    return emit


def astep_sink(
    model: BaseChatModel,
    run_manager: AsyncCallbackManagerForLLMRun | None,
    served: dict[str, str],
) -> Callable[[StepRecord], Awaitable[None]]:
    """The async twin of :func:`step_sink`."""
    manager, run_id = step_events(model, AsyncCallbackManager, run_manager)

    async def emit(record: StepRecord) -> None:
        if manager is not None and run_id is not None:
            await manager.on_custom_event(STEP_EVENT, record.model_dump(), run_id=run_id)
            if manager.inheritable_handlers:
                run = step_run(record, served[record.model], manager)
                await atrace_step(manager, run_id, run)
        else:
            with suppress(RuntimeError):  # outside any run: the chunk carries the step
                await adispatch_custom_event(STEP_EVENT, record.model_dump())

    return emit


def ls_params(model: Any, stop: list[str] | None, kwargs: dict[str, Any]) -> LangSmithParams:
    """What LangSmith records of a call of the chat ``model``: the large model (it writes the
    answer), its budget and temperature, and the answer's stop sequences (none for a
    constrained answer)."""
    params = LangSmithParams(
        ls_provider=PROVIDER,
        ls_model_name=kwargs.get("model") or model.large.model,
        ls_model_type="chat",
        ls_max_tokens=kwargs.get("max_tokens", model.max_tokens),
    )
    temperature = kwargs.get("temperature", model.temperature)
    if temperature is not None:
        params["ls_temperature"] = temperature
    constrained = kwargs.get("response_format") or kwargs.get("tool_choice") not in (
        None, False, "auto", "none",
    )  # fmt: skip
    if stop and not constrained:  # a constrained answer has no stop
        params["ls_stop"] = stop
    return params
