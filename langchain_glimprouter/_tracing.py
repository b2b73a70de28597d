"""Each finished reasoning step as a child ``llm`` run of the chat model's run.

A step is reported once it is finished, but LangChain's callbacks start a run at the moment
``on_llm_start`` is called. So the run goes two ways: LangSmith tracers (``LangChainTracer``)
get it as a ``langsmith`` run tree under the chat model's run, with the step's own start
(``latency_s`` before its end) and end; every other inheritable handler (run collectors,
``astream_events``) gets ``on_llm_start``/``on_llm_end`` under the chat model's run, at the
step's end. Both carry the same run id, name, prompt, metadata and result. The chat model's
run tree is found by public API (langchain-core's ``set_config_context`` and langsmith's
``get_current_run_tree``), not in a tracer's internals.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from langchain_core.callbacks import AsyncCallbackManager, BaseCallbackManager, CallbackManager
from langchain_core.outputs import Generation, LLMResult
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import set_config_context
from langchain_core.tracers.langchain import LangChainTracer
from langchain_core.utils.uuid import uuid7
from langsmith import get_tracing_context
from langsmith.run_helpers import get_current_run_tree
from langsmith.run_trees import RunTree

from langchain_glimprouter.records import PROVIDER, StepRecord

SERIALIZED = {"name": "glimprouter step"}


@dataclass(frozen=True)
class StepRun:
    """What a step's child run shows, in any tracer."""

    run_id: uuid.UUID
    name: str
    prompt: str
    metadata: dict[str, Any]
    tags: list[str]
    result: LLMResult
    start: datetime
    end: datetime


def step_run(record: StepRecord, served: str, parent: BaseCallbackManager) -> StepRun:
    """The child run of ``record``, written by the backend serving ``served``, with the
    inheritable tags and metadata of the chat model's run (less its ``ls_*`` keys, which describe
    the answer)."""
    end = datetime.now(UTC)
    start = end - timedelta(seconds=record.latency_s)
    inherited = {k: v for k, v in parent.inheritable_metadata.items() if not k.startswith("ls_")}
    usage = {"input_tokens": 0, "output_tokens": record.tokens, "total_tokens": record.tokens}
    token_usage = {"prompt_tokens": 0, "completion_tokens": record.tokens}
    return StepRun(
        run_id=uuid7(int(start.timestamp() * 1e9)),  # time-ordered, as LangChain's run ids
        name=f"glimprouter step {record.index} ({record.model})",
        prompt=f"reasoning step {record.index}, written by the {record.model} model ({served})",
        metadata={
            **inherited,
            **record.model_dump(exclude={"text"}),
            "ls_provider": PROVIDER,
            "ls_model_name": served,
            "ls_model_type": "llm",
            "usage_metadata": usage,
        },
        tags=list(parent.inheritable_tags),
        result=LLMResult(
            generations=[[Generation(text=record.text)]],
            llm_output={"model_name": served, "token_usage": token_usage},
        ),
        start=start,
        end=end,
    )


def trace_step(parent: CallbackManager, run_id: uuid.UUID, run: StepRun) -> None:
    """Report ``run`` as a child of the chat model run ``run_id`` to ``parent``'s inheritable
    handlers (see the module docstring)."""
    _post_to_langsmith(parent, run_id, run)
    child = CallbackManager(**_child_of(parent, run_id, run))
    for step in child.on_llm_start(SERIALIZED, [run.prompt], run_id=run.run_id, name=run.name):
        step.on_llm_end(run.result)


async def atrace_step(parent: AsyncCallbackManager, run_id: uuid.UUID, run: StepRun) -> None:
    """The async twin of :func:`trace_step`."""
    _post_to_langsmith(parent, run_id, run)
    child = AsyncCallbackManager(**_child_of(parent, run_id, run))
    steps = await child.on_llm_start(SERIALIZED, [run.prompt], run_id=run.run_id, name=run.name)
    for step in steps:
        await step.on_llm_end(run.result)


def _child_of(parent: BaseCallbackManager, run_id: uuid.UUID, run: StepRun) -> dict[str, Any]:
    """A child manager's arguments: the inheritable handlers but LangSmith's, under ``run_id``."""
    handlers = [h for h in parent.inheritable_handlers if not isinstance(h, LangChainTracer)]
    return {
        "handlers": handlers,
        "inheritable_handlers": handlers,
        "parent_run_id": run_id,
        "tags": run.tags,
        "inheritable_tags": run.tags,
        "metadata": run.metadata,
        "inheritable_metadata": run.metadata,
    }


def _langsmith_parent(tracer: LangChainTracer, run_id: uuid.UUID) -> RunTree | None:
    """The chat model run's run tree in ``tracer``, by public API only: langchain-core's
    ``set_config_context`` puts a traced parent run in langsmith's context, where langsmith's
    ``get_current_run_tree`` reads it (None when the tracer does not trace that run)."""
    config = RunnableConfig(callbacks=CallbackManager(handlers=[tracer], parent_run_id=run_id))
    with set_config_context(config) as context:
        return context.run(get_current_run_tree)


def _post_to_langsmith(parent: BaseCallbackManager, run_id: uuid.UUID, run: StepRun) -> None:
    """Post ``run`` under the chat model's run tree of each LangSmith tracer that traces it
    (none when tracing is disabled by ``tracing_context(enabled=False)``, as the tracer does)."""
    if get_tracing_context().get("enabled") is False:
        return
    posted: set[int] = set()
    for tracer in parent.inheritable_handlers:
        if not isinstance(tracer, LangChainTracer):
            continue
        tree = _langsmith_parent(tracer, run_id)
        if tree is None or id(tree) in posted:  # copies of one tracer share their runs
            continue
        posted.add(id(tree))
        child = tree.create_child(
            run.name,
            "llm",
            run_id=run.run_id,
            serialized=SERIALIZED,
            inputs={"prompts": [run.prompt]},
            outputs=run.result.model_dump(),
            start_time=run.start,
            end_time=run.end,
            tags=run.tags,
        )
        child.extra["metadata"] = run.metadata  # not the answer's ls_* keys of the parent
        child.post()
