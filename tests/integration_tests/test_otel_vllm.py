"""vLLM joins the trace of a routed call: a vLLM CPU server of its own, started with its
``--otlp-traces-endpoint`` (OTLP/HTTP) towards a real receiver on loopback, as both the small and
the large backend of a Router traced by an SDK provider. Each ``llm_request`` span vLLM exports
for the call is in the application's trace, the child of the router's CLIENT span of that
request: the ``traceparent`` arrived and vLLM used it.

Marked ``before_vllm_pair``: it runs before the session's pair starts, so no more than two vLLM
servers share the cores (this one takes one, for about a minute).
"""

from __future__ import annotations

import pytest
from opentelemetry import trace

from langchain_glimprouter import Backend
from langchain_glimprouter.cli.servers import LocalServer, free_port
from langchain_glimprouter.router import Router
from tests.support.otel import OtlpCapture, finished, memory_exporter

pytestmark = pytest.mark.vllm


@pytest.mark.before_vllm_pair
def test_vllm_exports_its_spans_under_the_routers_requests() -> None:
    with OtlpCapture() as capture:
        server = LocalServer(
            "smollm2-traced",
            free_port(),
            cpu=0,
            max_model_len=2048,
            extra_args=["--otlp-traces-endpoint", f"{capture.endpoint}/v1/traces"],
            env={"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
                 "OTEL_BSP_SCHEDULE_DELAY": "100"},
        )  # fmt: skip
        server.start()
        try:
            server.wait_ready()
            exporter = memory_exporter()
            backend = Backend(base_url=server.base_url, model=server.served_name)
            router = Router(
                small=backend, large=backend, threshold=1.5, max_reasoning_tokens=48,
                max_tokens=8, temperature=0.0,
            )  # fmt: skip
            with trace.get_tracer("the-application").start_as_current_span("app") as app:
                answer = router.run([{"role": "user", "content": "What is 6 times 7?"}])
            trace_id = f"{app.get_span_context().trace_id:032x}"
            ours = finished(exporter)
            requests = {s.span_id: s for s in ours.spans if s.name == "POST /v1/completions"}
            assert requests, [s.name for s in ours.spans]
            assert answer.record.requests["large"] >= 1

            # vLLM exports a request's span once the request ends; the streams the router
            # closed early (a glimpse) may end a moment after the call
            theirs = capture.wait(trace_id, {"llm_request": 1}, timeout=60).named("llm_request")
            assert theirs
            for span in theirs:
                assert span.kind == "SERVER"
                assert span.parent_id in requests, (span.parent_id, list(requests))
            assert {requests[s.parent_id].attributes["glimprouter.role"] for s in theirs} <= {
                "small",
                "large",
            }
            assert all(s.trace_id == trace_id for s in capture.spans(trace_id).spans)
        finally:
            server.stop()
