"""Each reasoning step as a child run of the chat model's run, for every way of calling it: as
callback runs (a run collector, astream_events) and as LangSmith run trees (a LangChainTracer
over a client that records what it would post)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from langchain_core.runnables import RunnableLambda
from langchain_core.tracers.langchain import LangChainTracer
from langchain_core.tracers.run_collector import RunCollectorCallbackHandler
from langchain_core.tracers.schemas import Run
from langsmith import tracing_context
from pydantic import SecretStr

import langchain_glimprouter._callbacks as callbacks
from langchain_glimprouter import STEP_EVENT, GlimpRouterChatModel
from tests.support.pair import LARGE_STEPS, SMALL_STEPS, router_for

QUESTION = "What is 6 times 7?"
ROUTED = [("small", "small-m", 0), ("large", "large-m", 1), ("small", "small-m", 2),
          ("large", "large-m", 3)]  # fmt: skip
"""The scripted steps: who writes each (role, model served) and which script step it is."""


def assert_step_runs(model_run: Run, steps: list[Run]) -> None:
    """``steps`` are the scripted four, children of ``model_run``, with their fields."""
    assert [s.name for s in steps] == [f"glimprouter step {i} ({r})" for r, _, i in ROUTED]
    record = model_run.outputs["generations"][0][0]["message"]["kwargs"]["response_metadata"]
    for step, (role, served, i), kept in zip(
        steps, ROUTED, record["glimprouter"]["steps"], strict=True
    ):
        assert step.run_type == "llm"
        assert step.parent_run_id == model_run.id
        assert step.inputs == {"prompts": [f"reasoning step {i}, written by the {role} model "
                                           f"({served})"]}  # fmt: skip
        text = (SMALL_STEPS if role == "small" else LARGE_STEPS)[i]
        assert step.outputs["generations"][0][0]["text"] == text
        assert step.outputs["llm_output"]["model_name"] == served
        assert step.outputs["llm_output"]["token_usage"]["completion_tokens"] == kept["tokens"]
        meta = step.extra["metadata"]
        fields = ("threshold", "decision", "first_token", "finish", "fallback")
        assert {k: meta[k] for k in fields} == {k: kept[k] for k in fields}
        assert (meta["index"], meta["model"], meta["h_init"]) == (i, role, kept["h_init"])
        assert (meta["tokens"], meta["latency_s"]) == (kept["tokens"], kept["latency_s"])
        assert meta["ls_model_name"] == served
        assert (meta["ls_provider"], meta["ls_model_type"]) == ("glimprouter", "llm")
        assert meta["usage_metadata"]["output_tokens"] == kept["tokens"]
        assert "ls_max_tokens" not in meta  # the answer's, not a step's


def collected(handler: RunCollectorCallbackHandler) -> list[Run]:
    """The chat model runs a collector saw (roots, or children of a chain run)."""
    runs = [run for root in handler.traced_runs for run in [root, *root.child_runs]]
    return [run for run in runs if run.name == "GlimpRouterChatModel"]


def sync_calls(model: GlimpRouterChatModel) -> list[tuple[str, Callable[[Any], Any], int]]:
    streaming = model.model_copy(update={"streaming": True})
    return [
        ("invoke", lambda cfg: model.invoke(QUESTION, config=cfg), 1),
        ("stream", lambda cfg: list(model.stream(QUESTION, config=cfg)), 1),
        ("batch", lambda cfg: model.batch([QUESTION, QUESTION], config=cfg), 2),
        ("streaming invoke", lambda cfg: streaming.invoke(QUESTION, config=cfg), 1),
        ("in a chain", lambda cfg: (RunnableLambda(str) | model).invoke(QUESTION, cfg), 1),
    ]


def test_step_runs_in_sync_modes(servers: Any) -> None:
    model = router_for(*servers())
    for mode, call, n_calls in sync_calls(model):
        handler = RunCollectorCallbackHandler()
        call({"callbacks": [handler]})
        runs = collected(handler)
        assert len(runs) == n_calls, mode
        for run in runs:
            assert_step_runs(run, run.child_runs)


async def test_step_runs_in_async_modes(servers: Any) -> None:
    model = router_for(*servers())
    streaming = model.model_copy(update={"streaming": True})

    async def astream(cfg: Any) -> None:
        async for _ in model.astream(QUESTION, config=cfg):
            pass

    for call, n_calls in (
        (lambda cfg: model.ainvoke(QUESTION, config=cfg), 1),
        (astream, 1),
        (lambda cfg: model.abatch([QUESTION, QUESTION], config=cfg), 2),
        (lambda cfg: streaming.ainvoke(QUESTION, config=cfg), 1),
    ):
        handler = RunCollectorCallbackHandler()
        await call({"callbacks": [handler]})
        runs = collected(handler)
        assert len(runs) == n_calls
        for run in runs:
            assert_step_runs(run, run.child_runs)


async def test_step_runs_in_astream_events(servers: Any) -> None:
    model = router_for(*servers())
    events = [e async for e in model.astream_events(QUESTION, version="v2")]
    model_run = next(e for e in events if e["event"] == "on_chat_model_start")["run_id"]
    starts = [e for e in events if e["event"] == "on_llm_start"]
    ends = [e for e in events if e["event"] == "on_llm_end"]
    assert [e["name"] for e in starts] == [f"glimprouter step {i} ({r})" for r, _, i in ROUTED]
    assert all(e["parent_ids"] == [model_run] for e in starts)
    assert [e["data"]["output"]["generations"][0][0]["text"] for e in ends][:1] == [SMALL_STEPS[0]]
    custom = [e for e in events if e["event"] == "on_custom_event"]
    assert [e["name"] for e in custom] == [STEP_EVENT] * 4

    async def node(question: str) -> str:  # an invoke that streams inside a node
        return str((await model.ainvoke(question)).content)

    nested = [e async for e in RunnableLambda(node).astream_events(QUESTION, version="v2")]
    model_run = next(e for e in nested if e["event"] == "on_chat_model_start")["run_id"]
    starts = [e for e in nested if e["event"] == "on_llm_start"]
    assert len(starts) == 4
    assert all(e["parent_ids"][-1] == model_run for e in starts)


def test_plain_calls_build_no_step_runs(servers: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: Any) -> None:
        raise AssertionError("a step run without any handler")

    monkeypatch.setattr(callbacks, "step_run", fail)
    model = router_for(*servers())
    assert model.invoke(QUESTION).content == "The answer is 42."
    assert "".join(str(c.content) for c in model.stream(QUESTION)) == "The answer is 42."


class RecordingClient:
    """What a LangSmith client is asked to post and patch, and no I/O."""

    def __init__(self) -> None:
        self.created: list[dict[str, Any]] = []
        self.updated: list[dict[str, Any]] = []

    def create_run(self, **run: Any) -> None:
        self.created.append(run)

    def update_run(self, **run: Any) -> None:
        self.updated.append(run)


def langsmith_tracer() -> tuple[LangChainTracer, RecordingClient]:
    client = RecordingClient()
    return LangChainTracer(client=client, project_name="glimprouter-tests"), client  # type: ignore[arg-type]


def posted_steps(client: RecordingClient) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The chat model's run and its step runs, as the client was asked to post them."""
    (model_run,) = [r for r in client.created if r["name"] == "GlimpRouterChatModel"]
    steps = [r for r in client.created if r.get("parent_run_id") == model_run["id"]]
    return model_run, steps


def assert_posted_steps(client: RecordingClient) -> None:
    model_run, steps = posted_steps(client)
    assert [s["name"] for s in steps] == [f"glimprouter step {i} ({r})" for r, _, i in ROUTED]
    for step, (_, served, _i) in zip(steps, ROUTED, strict=True):
        assert step["run_type"] == "llm"
        assert step["trace_id"] == model_run["trace_id"]
        assert step["dotted_order"].startswith(model_run["dotted_order"] + ".")
        meta = step["extra"]["metadata"]
        assert meta["ls_model_name"] == served
        # The step's own times: it started latency_s before it ended.
        assert step["end_time"] - step["start_time"] == timedelta(seconds=meta["latency_s"])
        assert step["start_time"] >= model_run["start_time"]
        assert step["outputs"]["generations"][0][0]["text"] in SMALL_STEPS + LARGE_STEPS
    # Step runs are posted whole, once: never patched, and not posted again by the callbacks.
    assert {u["run_id"] for u in client.updated} == {model_run["id"]}
    assert len(client.created) == 5


def test_langsmith_step_runs_in_sync_modes(servers: Any) -> None:
    model = router_for(*servers())
    for mode, call, n_calls in sync_calls(model):
        if n_calls > 1 or mode == "in a chain":
            continue
        tracer, client = langsmith_tracer()
        call({"callbacks": [tracer]})
        assert_posted_steps(client)


async def test_langsmith_step_runs_in_async_modes(servers: Any) -> None:
    model = router_for(*servers())
    tracer, client = langsmith_tracer()
    await model.ainvoke(QUESTION, config={"callbacks": [tracer]})
    assert_posted_steps(client)
    tracer, client = langsmith_tracer()
    async for _ in model.astream(QUESTION, config={"callbacks": [tracer]}):
        pass
    assert_posted_steps(client)


@pytest.mark.parametrize("mode", ["invoke", "stream", "ainvoke", "astream"])
async def test_langsmith_step_runs_when_tracing_without_callbacks(servers: Any, mode: str) -> None:
    """Tracing turned on by the context (as by LANGSMITH_TRACING): LangChain adds a LangSmith
    tracer of its own to each call, and the steps' child runs go to the one of the chat model's
    run."""
    client = RecordingClient()
    model = router_for(*servers())
    with tracing_context(enabled=True, client=client):  # type: ignore[arg-type]
        if mode == "invoke":
            model.invoke(QUESTION)
        elif mode == "stream":
            list(model.stream(QUESTION))
        elif mode == "ainvoke":
            await model.ainvoke(QUESTION)
        else:
            [c async for c in model.astream(QUESTION)]
    assert_posted_steps(client)


def test_no_langsmith_step_runs_when_tracing_is_disabled(servers: Any) -> None:
    model = router_for(*servers())
    tracer, client = langsmith_tracer()
    with tracing_context(enabled=False):
        model.invoke(QUESTION, config={"callbacks": [tracer]})
    assert client.created == []


def test_step_runs_hold_no_secret(servers: Any) -> None:
    model = router_for(*servers(), api_key=SecretStr("sk-very-secret"))
    tracer, client = langsmith_tracer()
    collector = RunCollectorCallbackHandler()
    model.invoke(QUESTION, config={"callbacks": [tracer, collector]})
    _, steps = posted_steps(client)
    (run,) = collected(collector)
    dumped = json.dumps([steps, [s.model_dump() for s in run.child_runs]], default=str)
    assert "sk-very-secret" not in dumped
