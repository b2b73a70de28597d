"""What the OpenTelemetry tests share: an SDK provider with an in-memory exporter for the
library's tests (:func:`memory_exporter`), a real OTLP/HTTP receiver on loopback for the
proxy's (:class:`OtlpCapture`), and spans as plain records (:class:`Spans`) to assert trees on."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

KINDS = {0: "UNSPECIFIED", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
STATUS = {0: "UNSET", 1: "OK", 2: "ERROR"}


@dataclass
class SpanRecord:
    """One finished span, from the SDK or off the wire."""

    name: str
    trace_id: str
    span_id: str
    parent_id: str | None
    kind: str
    status: str
    attributes: dict[str, Any]
    service: str = ""
    start_ns: int = 0
    end_ns: int = 0


@dataclass
class Spans:
    """Finished spans, with the tree's look-ups."""

    spans: list[SpanRecord] = field(default_factory=list)

    def named(self, prefix: str) -> list[SpanRecord]:
        return [s for s in self.spans if s.name.startswith(prefix)]

    def one(self, prefix: str) -> SpanRecord:
        found = self.named(prefix)
        assert len(found) == 1, [s.name for s in self.spans]
        return found[0]

    def children(self, parent: SpanRecord) -> list[SpanRecord]:
        return sorted(
            (s for s in self.spans if s.parent_id == parent.span_id), key=lambda s: s.start_ns
        )


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


def _sdk_record(span: ReadableSpan) -> SpanRecord:
    context = span.get_span_context()
    assert context is not None
    return SpanRecord(
        name=span.name,
        trace_id=f"{context.trace_id:032x}",
        span_id=f"{context.span_id:016x}",
        parent_id=f"{span.parent.span_id:016x}" if span.parent else None,
        kind=span.kind.name,
        status=span.status.status_code.name,
        attributes={k: list(v) if isinstance(v, tuple) else v for k, v in span.attributes.items()}
        if span.attributes
        else {},
        start_ns=span.start_time or 0,
        end_ns=span.end_time or 0,
    )


_EXPORTER: InMemorySpanExporter | None = None


def memory_exporter() -> InMemorySpanExporter:
    """The in-memory exporter of this process's SDK provider, installed on first use (a
    process has one global provider), emptied."""
    global _EXPORTER
    if _EXPORTER is None:
        _EXPORTER = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)
    _EXPORTER.clear()
    return _EXPORTER


def finished(exporter: InMemorySpanExporter) -> Spans:
    return Spans([_sdk_record(span) for span in exporter.get_finished_spans()])


def wire_records(body: bytes) -> list[SpanRecord]:
    """The spans of one OTLP/HTTP export (an ``ExportTraceServiceRequest`` in protobuf)."""
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    out = []
    for resource_spans in request.resource_spans:
        resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                out.append(
                    SpanRecord(
                        name=span.name,
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_id=span.parent_span_id.hex() or None,
                        kind=KINDS[span.kind].removeprefix("SPAN_KIND_"),
                        status=STATUS[span.status.code],
                        attributes={a.key: _value(a.value) for a in span.attributes},
                        service=str(resource.get("service.name", "")),
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                    )
                )
    return out


class OtlpCapture:
    """An OTLP/HTTP traces receiver on loopback (``POST /v1/traces``, protobuf), as a collector
    is: it keeps every span it is sent. ``endpoint`` is its base URL."""

    def __init__(self) -> None:
        self.received: list[SpanRecord] = []
        self.lock = threading.Lock()
        capture = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                ok = self.path == "/v1/traces"
                if ok:
                    with capture.lock:
                        capture.received.extend(wire_records(body))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200 if ok else 404)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> OtlpCapture:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def spans(self, trace_id: str | None = None) -> Spans:
        with self.lock:
            found = [s for s in self.received if trace_id in (None, s.trace_id)]
        return Spans(found)

    def wait(
        self, trace_id: str, done: Mapping[str, int] | None = None, timeout: float = 30.0
    ) -> Spans:
        """The spans of ``trace_id`` once ``done`` (name prefix: how many) have arrived."""
        want = dict(done or {})
        deadline = time.monotonic() + timeout
        while True:
            spans = self.spans(trace_id)
            if all(len(spans.named(name)) >= n for name, n in want.items()):
                return spans
            if time.monotonic() > deadline:
                raise AssertionError(f"spans {want} not received: {[s.name for s in spans.spans]}")
            time.sleep(0.05)


def traceparent(trace_id: str, span_id: str) -> str:
    return f"00-{trace_id}-{span_id}-01"


def parsed_traceparent(header: str) -> tuple[str, str]:
    """The trace id and parent span id of a W3C ``traceparent``."""
    version, trace_id, span_id, _flags = header.split("-")
    assert version == "00"
    return trace_id, span_id


def walk(spans: Spans, root: SpanRecord) -> Iterator[SpanRecord]:
    """``root`` and every span under it."""
    yield root
    for child in spans.children(root):
        yield from walk(spans, child)
