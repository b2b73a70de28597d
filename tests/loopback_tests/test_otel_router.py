"""The Router under an OpenTelemetry SDK provider (in-memory exporter), over the scripted pair on
loopback: one span per call under the application's span, a span per step with its routing, a
CLIENT span per backend request, and each request's ``traceparent`` naming its CLIENT span;
sync, async and streamed, and a stream abandoned mid-way."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry import trace

from langchain_glimprouter.core.answers import RoutedAnswer
from langchain_glimprouter.router import Router
from tests.support.otel import SpanRecord, Spans, finished, memory_exporter, parsed_traceparent
from tests.support.proxy import QUESTION, proxy_router

APP = trace.get_tracer("the-application")


def check_tree(spans: Spans, app: SpanRecord | None, servers: Any, answer: RoutedAnswer) -> None:
    """The call's span under ``app`` (a root span without one), its steps and answer in order
    with the record's routing, every backend request a CLIENT span under a step (or the
    answer), and each request the scripted servers got carrying its CLIENT span's
    ``traceparent``."""
    call = spans.one("chat ")
    assert call.name == "chat large-m"
    if app is None:
        assert call.parent_id is None
    else:
        assert (call.trace_id, call.parent_id) == (app.trace_id, app.span_id)
    record = answer.record
    assert call.status == "UNSET"
    assert call.attributes["gen_ai.operation.name"] == "chat"
    assert call.attributes["gen_ai.request.model"] == "large-m"
    assert call.attributes["gen_ai.usage.input_tokens"] == answer.usage.input_tokens > 0
    assert call.attributes["gen_ai.usage.output_tokens"] == answer.usage.output_tokens > 0
    assert call.attributes["glimprouter.steps"] == record.n_steps == 4
    assert call.attributes["glimprouter.large_steps"] == record.n_large_steps == 2
    assert call.attributes["glimprouter.intervention_rate"] == 0.5
    assert call.attributes["glimprouter.threshold"] == 1.0
    assert call.attributes["glimprouter.strategy"] == "glimpse"

    phases = spans.children(call)
    assert [s.name for s in phases] == ["glimprouter.step"] * 4 + ["glimprouter.answer"]
    for span, step in zip(phases, record.steps, strict=False):
        assert span.attributes["glimprouter.step.index"] == step.index
        assert span.attributes["glimprouter.step.role"] == step.model
        assert span.attributes["glimprouter.step.h_init"] == step.h_init
        assert span.attributes.get("glimprouter.step.decision") == step.decision
        assert span.attributes["glimprouter.step.tokens"] == step.tokens
    assert [s.attributes["glimprouter.step.role"] for s in phases[:4]] == [
        "small", "large", "small", "large"
    ]  # fmt: skip

    requests = [s for s in spans.spans if s.kind == "CLIENT"]
    assert requests
    assert all(r.parent_id in {p.span_id for p in phases} for r in requests)
    assert all(r.trace_id == call.trace_id for r in requests)
    by_id = {r.span_id: r for r in requests}
    small, large = servers
    sent = [(log, "small-m") for log in small.requests]
    sent += [(log, "large-m") for log in large.requests]
    assert sent
    for log, model in sent:
        trace_id, span_id = parsed_traceparent(log.headers["traceparent"])
        assert trace_id == call.trace_id
        assert by_id[span_id].attributes["gen_ai.request.model"] == model
        assert by_id[span_id].name == "POST /v1/completions"
    texts = [str(v) for s in spans.spans for v in s.attributes.values()]
    assert not any("6 times 7" in text or "step one" in text for text in texts)  # no messages


def test_a_call_is_a_span_tree_under_the_application_span(servers: Any) -> None:
    exporter = memory_exporter()
    pair = servers()
    router = proxy_router(*pair)
    with APP.start_as_current_span("app"):
        answer = router.run(QUESTION)
    spans = finished(exporter)
    check_tree(spans, spans.one("app"), pair, answer)


async def test_async_stream_is_the_same_tree(servers: Any) -> None:
    exporter = memory_exporter()
    pair = servers()
    router = proxy_router(*pair)
    with APP.start_as_current_span("app") as app:
        events = [event async for event in router.astream(QUESTION)]
        assert trace.get_current_span() is app  # nothing left attached
    answer = events[-1]
    assert isinstance(answer, RoutedAnswer)
    spans = finished(exporter)
    check_tree(spans, spans.one("app"), pair, answer)


async def test_arun_without_a_current_span_starts_a_trace(servers: Any) -> None:
    exporter = memory_exporter()
    pair = servers()
    answer = await proxy_router(*pair).arun(QUESTION)
    check_tree(finished(exporter), None, pair, answer)


@pytest.mark.parametrize("asynchronous", [False, True])
async def test_a_stream_closed_early_ends_its_spans_as_errors(
    servers: Any, asynchronous: bool
) -> None:
    exporter = memory_exporter()
    router: Router = proxy_router(*servers())
    with APP.start_as_current_span("app") as app:
        if asynchronous:
            stream = router.astream(QUESTION)
            await anext(stream)
            await stream.aclose()  # type: ignore[attr-defined]
        else:
            events = router.stream(QUESTION)
            next(events)
            events.close()  # type: ignore[attr-defined]
        assert trace.get_current_span() is app  # nothing left attached
    spans = finished(exporter)
    call = spans.one("chat ")
    assert call.status == "ERROR"
    assert call.attributes["error.type"] == "closed"
    step = spans.children(call)[0]
    assert (step.name, step.status) == ("glimprouter.step", "ERROR")
    assert all(s.end_ns for s in spans.spans)
    assert spans.spans[-1].name == "app"  # the call's spans ended when it was closed
