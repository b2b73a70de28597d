"""``glimprouter proxy`` run as users run it (a child process) with OpenTelemetry on, exporting over
OTLP/HTTP to a real receiver on loopback (:class:`~tests.support.otel.OtlpCapture`), in front of
the scripted pair: a client's ``traceparent`` is the parent of the call's span, the steps and
backend requests hang under it, the backends receive the trace, streams and a client that
leaves end their spans; the spans still batched go out when the proxy stops; and ``glimprouter
ask`` exports its call before it ends."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from langchain_glimprouter.cli.servers import free_port
from tests.support.otel import OtlpCapture, SpanRecord, Spans, parsed_traceparent, traceparent
from tests.support.proxy import QUESTION

BODY = {"model": "glimprouter", "messages": QUESTION}


class TracedProxy:
    """``glimprouter proxy`` in a child process before ``pair``, with ``flags`` and ``env``."""

    def __init__(self, pair: Any, flags: list[str], env: dict[str, str]) -> None:
        small, large = pair
        port = free_port()
        self.root = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "langchain_glimprouter.cli", "proxy", "--port", str(port),
             "--threshold", "1.0", "--small-url", small.base_url, "--small-model", "small-m",
             "--large-url", large.base_url, "--large-model", "large-m", "--no-access-log",
             *flags],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, **env},
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )  # fmt: skip
        deadline = time.monotonic() + 150  # the workers import the package (slow on a busy host)
        while True:
            assert self.process.poll() is None, self.process.communicate()
            try:
                if httpx.get(f"{self.root}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the proxy did not answer /health"
            time.sleep(0.1)

    def stop(self) -> str:
        """Stop as Ctrl-C does; its stderr."""
        self.process.send_signal(signal.SIGINT)
        _, err = self.process.communicate(timeout=30)
        assert self.process.returncode == 0, err
        return err

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def capture() -> Iterator[OtlpCapture]:
    with OtlpCapture() as receiver:
        yield receiver


def client_span() -> tuple[str, str]:
    """A client's own trace id and span id."""
    return secrets.token_hex(16), secrets.token_hex(8)


def check_call(spans: Spans, trace_id: str, parent: str, pair: Any) -> SpanRecord:
    """The call's span is the child of the client's ``parent``; four steps and the answer under
    it, each backend request a CLIENT span under one of them; every request the backends got
    for it carries the trace and names its CLIENT span."""
    call = spans.one("chat ")
    assert (call.trace_id, call.parent_id) == (trace_id, parent)
    assert call.service == "glimprouter-proxy"
    assert call.status == "UNSET", call.attributes
    assert call.attributes["gen_ai.request.model"] == "large-m"
    assert call.attributes["glimprouter.large_steps"] == 2
    assert call.attributes["gen_ai.usage.output_tokens"] > 0
    phases = spans.children(call)
    assert [s.name for s in phases] == ["glimprouter.step"] * 4 + ["glimprouter.answer"]
    roles = [s.attributes["glimprouter.step.role"] for s in phases[:4]]
    assert roles == ["small", "large", "small", "large"]
    assert [s.attributes["glimprouter.step.h_init"] for s in phases[:4]] == pytest.approx(
        [0.2, 1.5, 0.1, 2.0]
    )
    clients = {s.span_id: s for s in spans.spans if s.kind == "CLIENT"}
    assert {s.parent_id for s in clients.values()} <= {p.span_id for p in phases}
    received = [
        log for server in pair for log in server.requests
        if parsed_traceparent(log.headers.get("traceparent", "0-0-0-0"))[0] == trace_id
    ]  # fmt: skip
    assert len(received) == len([s for s in clients.values() if s.name.endswith("completions")])
    for log in received:
        assert parsed_traceparent(log.headers["traceparent"])[1] in clients
    return call


def test_traces_through_two_workers_streams_and_a_client_that_leaves(
    servers: Any, capture: OtlpCapture
) -> None:
    pair = servers(decode_s=0.002)
    proxy = TracedProxy(
        pair, ["--workers", "2", "--otel-endpoint", capture.endpoint],
        {"OTEL_BSP_SCHEDULE_DELAY": "50"},
    )  # fmt: skip
    try:
        trace_id, parent = client_span()
        headers = {"traceparent": traceparent(trace_id, parent)}
        answer = httpx.post(f"{proxy.root}/v1/chat/completions", json=BODY, headers=headers)
        assert answer.status_code == 200, answer.text
        spans = capture.wait(trace_id, {"chat ": 1})
        check_call(spans, trace_id, parent, pair)

        trace_id, parent = client_span()
        headers = {"traceparent": traceparent(trace_id, parent)}
        streamed = {**BODY, "stream": True}
        with httpx.stream(
            "POST", f"{proxy.root}/v1/chat/completions", json=streamed, headers=headers
        ) as response:
            assert response.status_code == 200
            assert "[DONE]" in response.read().decode()
        check_call(capture.wait(trace_id, {"chat ": 1}), trace_id, parent, pair)

        # a client that leaves mid-stream: the call's span and the open step's end as errors
        slow = servers(decode_s=0.2)
        proxy_slow = TracedProxy(
            slow, ["--otel-endpoint", capture.endpoint], {"OTEL_BSP_SCHEDULE_DELAY": "50"}
        )
        try:
            trace_id, parent = client_span()
            headers = {"traceparent": traceparent(trace_id, parent)}
            with httpx.stream(
                "POST", f"{proxy_slow.root}/v1/chat/completions", json=streamed, headers=headers
            ) as response:
                assert response.status_code == 200
                next(response.iter_lines())  # the first event, then the client leaves
            spans = capture.wait(trace_id, {"chat ": 1})
            call = spans.one("chat ")
            assert call.parent_id == parent
            assert call.status == "ERROR"
            assert call.attributes["error.type"] in ("closed", "cancelled")
            assert any(s.status == "ERROR" for s in spans.children(call))
            assert all(s.end_ns >= s.start_ns > 0 for s in spans.spans)
        finally:
            proxy_slow.kill()
        proxy.stop()
    finally:
        proxy.kill()


def test_the_standard_variables_turn_traces_on_and_stopping_flushes_them(
    servers: Any, capture: OtlpCapture
) -> None:
    pair = servers()
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": capture.endpoint,
        "OTEL_SERVICE_NAME": "my-router",
        "OTEL_BSP_SCHEDULE_DELAY": "600000",  # nothing leaves before the proxy stops
    }
    proxy = TracedProxy(pair, [], env)
    try:
        trace_id, parent = client_span()
        headers = {"traceparent": traceparent(trace_id, parent)}
        answer = httpx.post(f"{proxy.root}/v1/chat/completions", json=BODY, headers=headers)
        assert answer.status_code == 200, answer.text
        time.sleep(0.5)
        assert capture.spans(trace_id).spans == []  # still batched
        proxy.stop()
        call = capture.wait(trace_id, {"chat ": 1}, timeout=5).one("chat ")
        assert (call.parent_id, call.service) == (parent, "my-router")
    finally:
        proxy.kill()


def test_no_spans_and_no_traceparent_when_off(servers: Any, capture: OtlpCapture) -> None:
    pair = servers()
    proxy = TracedProxy(pair, [], {})
    try:
        trace_id, parent = client_span()
        headers = {"traceparent": traceparent(trace_id, parent)}
        answer = httpx.post(f"{proxy.root}/v1/chat/completions", json=BODY, headers=headers)
        assert answer.status_code == 200, answer.text
        assert all("traceparent" not in log.headers for s in pair for log in s.requests)
        proxy.stop()
        assert capture.received == []
    finally:
        proxy.kill()


def test_ask_exports_its_call_before_it_ends(servers: Any, capture: OtlpCapture) -> None:
    small, large = servers()
    env = {
        **os.environ,
        "OTEL_EXPORTER_OTLP_ENDPOINT": capture.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "600000",  # only the exit's flush sends them
    }
    done = subprocess.run(
        [sys.executable, "-m", "langchain_glimprouter.cli", "ask", "What is 6 times 7?",
         "--threshold", "1.0", "--small-url", small.base_url, "--small-model", "small-m",
         "--large-url", large.base_url, "--large-model", "large-m"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    spans = capture.spans()
    call = spans.one("chat ")
    assert (call.service, call.parent_id) == ("glimprouter-ask", None)
    assert [s.attributes.get("glimprouter.step.role") for s in spans.children(call)] == [
        "small", "large", "small", "large", None
    ]  # fmt: skip
    assert all("traceparent" in log.headers for log in small.requests + large.requests)
