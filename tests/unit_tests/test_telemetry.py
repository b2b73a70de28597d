"""OpenTelemetry's pure parts (:mod:`langchain_glimprouter.telemetry`): the variables and the flag
that turn the proxy's traces on, the extra's error, nothing traced without an SDK or a trace,
and a routed call's spans over the fake servers (no socket): its steps, a failure's type, and
contexts left as they were found."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Generator
from typing import Any

import pytest
from opentelemetry import context, trace

from langchain_glimprouter import telemetry
from langchain_glimprouter.cli import proxy as command
from langchain_glimprouter.errors import GlimpRouterError, InvalidArgumentError
from tests.support.otel import finished, memory_exporter
from tests.support.proxy import QUESTION, proxy_router


@pytest.mark.parametrize(
    ("given", "url"),
    [
        ("http://collector:4318", "http://collector:4318/v1/traces"),
        ("http://collector:4318/", "http://collector:4318/v1/traces"),
        ("https://c.example/otlp/v1/traces", "https://c.example/otlp/v1/traces"),
    ],
)
def test_traces_endpoint_adds_the_signal_path_once(given: str, url: str) -> None:
    assert telemetry.traces_endpoint(given) == url


def test_the_standard_variables_ask_for_traces_unless_the_sdk_is_disabled() -> None:
    assert telemetry.requested({}) is None
    assert telemetry.requested({"OTEL_SERVICE_NAME": "x"}) is None
    base = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}
    assert telemetry.requested(base) == "OTEL_EXPORTER_OTLP_ENDPOINT"
    both = base | {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}
    assert telemetry.requested(both) == "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    assert telemetry.requested(both | {"OTEL_SDK_DISABLED": "true"}) is None
    assert telemetry.install_from_env({}) is None


def without_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name.startswith("opentelemetry") else real(name, *a),
    )


def test_asking_for_traces_without_the_extra_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    without_the_extra(monkeypatch)
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}
    with pytest.raises(InvalidArgumentError, match=r"OTEL_EXPORTER_OTLP_ENDPOINT .*\[otel\]"):
        telemetry.install_from_env(env)
    flags = argparse.Namespace(otel_endpoint="http://c:4318")
    with pytest.raises(InvalidArgumentError, match=r"--otel-endpoint .*\[otel\]"):
        command.otel_env(flags)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    assert command.otel_env(argparse.Namespace(otel_endpoint=None)) == {}  # not asked: fine


def test_the_flag_becomes_the_workers_traces_variable() -> None:
    flags = argparse.Namespace(otel_endpoint="http://collector:4318")
    assert command.otel_env(flags) == {
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"
    }


def events() -> Generator[int, None, None]:
    yield 1


def test_nothing_is_wrapped_without_an_sdk_or_a_trace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trace, "get_tracer_provider", trace.ProxyTracerProvider)
    driven = events()
    assert telemetry.traced(driven, "m", None) is driven  # the untraced path costs nothing
    assert telemetry.incoming({"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}) is None
    parent = trace.set_span_in_context(
        trace.NonRecordingSpan(
            trace.SpanContext(0x1, 0x2, is_remote=True, trace_flags=trace.TraceFlags(1))
        )
    )
    assert telemetry.traced(driven, "m", parent) is not driven  # a trace to pass on


def test_a_call_over_the_fake_servers_is_a_span_per_step(servers: Any) -> None:
    exporter = memory_exporter()
    before = context.get_current()
    answer = proxy_router(*servers()).run(QUESTION)
    assert context.get_current() == before
    spans = finished(exporter)
    call = spans.one("chat ")
    steps = spans.children(call)
    assert [s.name for s in steps] == ["glimprouter.step"] * 4 + ["glimprouter.answer"]
    assert [s.attributes["glimprouter.step.role"] for s in steps[:4]] == [
        step.model for step in answer.record.steps
    ]
    assert steps[-1].attributes["glimprouter.answer.tokens"] == answer.record.answer_tokens
    assert call.attributes["gen_ai.response.finish_reasons"] == [answer.finish_reason]
    assert not any(k.endswith(("text", "first_token")) for s in steps for k in s.attributes)


def test_a_failed_call_ends_its_spans_with_the_error_type(servers: Any) -> None:
    exporter = memory_exporter()
    router = proxy_router(*servers())
    with pytest.raises(GlimpRouterError) as failed:
        router.run(QUESTION, model="no-such-model")  # the large server answers 404
    spans = finished(exporter)
    call = spans.one("chat no-such-model")
    assert call.status == "ERROR"
    assert call.attributes["error.type"] == type(failed.value).__name__
    assert all(s.status == "ERROR" for s in spans.children(call)[-1:])


def test_a_cancelled_async_call_ends_its_spans(servers: Any) -> None:
    exporter = memory_exporter()
    router = proxy_router(*servers())

    async def cancelled() -> None:
        stream = router.astream(QUESTION)
        task = asyncio.ensure_future(anext(stream))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await stream.aclose()  # type: ignore[attr-defined]

    asyncio.run(cancelled())
    for span in finished(exporter).spans:
        assert span.end_ns
