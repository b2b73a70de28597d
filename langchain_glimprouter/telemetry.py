"""OpenTelemetry traces of routed calls (docs/tracing.md#opentelemetry).

A library's pattern: nothing here is traced, and OpenTelemetry is not even imported, until the
application has imported it (``opentelemetry.trace`` in ``sys.modules``; an application that
never did cannot have installed a tracer provider). From then on every routed call is a span
(:func:`traced`, :func:`atraced`, wrapped around the drivers' events by
:class:`~langchain_glimprouter.router.PreparedCall`), each reasoning step a child span, and each
backend request a CLIENT span (:func:`backend_span`) whose W3C ``traceparent`` goes to the
server in the request's headers, so that vLLM's own spans join the trace. Without an SDK
provider the spans are OpenTelemetry's no-ops and only the incoming context is propagated.

The proxy (an application) installs an SDK provider with the OTLP/HTTP exporter when the
standard variables ask for it (:func:`install_from_env`), and parents each call on the
request's own ``traceparent`` (:func:`incoming`). Spans never carry message text or keys.

Contexts are never left attached across a ``yield``: each wrapper attaches the call's context
only while it advances the drivers, and the backend spans are started with an explicit parent.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncGenerator, Generator, Iterator, Mapping
from contextlib import aclosing, closing, contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from langchain_glimprouter.core.events import Result, StepDone
from langchain_glimprouter.errors import InvalidArgumentError

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

_END = object()
"""What ``next`` gives when the drivers' events end."""
TRACER_NAME = "langchain_glimprouter"
EXTRA = "pip install 'langchain-glimprouter[otel]'"
ENDPOINT_ENVS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
"""The standard variables that turn the proxy's traces on (the first names the full URL of
traces, the second the collector's base URL, to which ``/v1/traces`` is added)."""
SERVICE_NAME = "glimprouter-proxy"
"""The proxy's ``service.name`` (``glimprouter ask``'s is ``glimprouter-ask``) unless
``OTEL_SERVICE_NAME`` (or ``OTEL_RESOURCE_ATTRIBUTES``) names one."""
STEP, ANSWER = "glimprouter.step", "glimprouter.answer"
"""The names of a step's span and of the answer's (the requests after the last step)."""

_tracer: Tracer | None = None


def tracer() -> Tracer | None:
    """The package's tracer once the application has imported OpenTelemetry, else None."""
    global _tracer
    if _tracer is None and sys.modules.get("opentelemetry.trace") is not None:
        from importlib.metadata import version

        from opentelemetry import trace

        # follows a provider installed later (a ProxyTracer until then)
        _tracer = trace.get_tracer(TRACER_NAME, version("langchain-glimprouter"))
    return _tracer


def _ended_by(exc: BaseException) -> str:
    """The ``error.type`` of a call or request that ``exc`` ended (a class name, never its
    message: a server's error text may quote the prompt)."""
    if isinstance(exc, GeneratorExit):
        return "closed"  # the consumer stopped reading (a client that left)
    if type(exc).__name__ == "CancelledError":
        return "cancelled"
    return type(exc).__name__


def _fail(span: Span, exc: BaseException) -> None:
    from opentelemetry.trace import Status, StatusCode

    kind = _ended_by(exc)
    span.set_attribute("error.type", kind)
    span.set_status(Status(StatusCode.ERROR, kind))


class CallTrace:
    """The spans of one routed call: the call's, and the open step's (the next step's from the
    previous step's end on; after the last step, the answer's)."""

    def __init__(self, tracer: Tracer, model: str, parent: Context | None) -> None:
        from opentelemetry import trace

        self._tracer, self._trace = tracer, trace
        self.span = tracer.start_span(
            f"chat {model}",
            context=parent,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "glimprouter",
                "gen_ai.request.model": model,
            },
        )
        self._call = trace.set_span_in_context(self.span, parent)
        self.finished = False
        self.step: Span | None = None
        self.context: Context = self._call
        """The context the call's requests run in (the open step's)."""
        self._open_step()

    def _open_step(self) -> None:
        self.step = self._tracer.start_span(STEP, context=self._call)
        self.context = self._trace.set_span_in_context(self.step, self._call)

    def observe(self, event: Any) -> None:
        """Close the step that ``event`` finished, or the whole call at its result."""
        if isinstance(event, StepDone) and self.step is not None:
            step = event.record
            self.step.set_attributes(
                {
                    "glimprouter.step.index": step.index,
                    "glimprouter.step.role": step.model,
                    "glimprouter.step.tokens": step.tokens,
                    "glimprouter.step.latency_s": step.latency_s,
                    "glimprouter.step.finish": step.finish,
                    "glimprouter.step.wasted_tokens": step.wasted_tokens,
                    "glimprouter.step.escalation_tokens": step.escalation_tokens,
                    "glimprouter.step.escalation_requests": step.escalation_requests,
                    "glimprouter.step.fallback": step.fallback,
                }
            )
            optional = (("h_init", step.h_init), ("threshold", step.threshold))
            for name, value in (*optional, ("decision", step.decision)):
                if value is not None:
                    self.step.set_attribute(f"glimprouter.step.{name}", value)
            self.step.end()
            self._open_step()
        elif isinstance(event, Result):
            self._finish(event)

    def _finish(self, result: Result) -> None:
        record = result.record
        if self.step is not None:
            self.step.update_name(ANSWER)
            self.step.set_attribute("glimprouter.answer.tokens", record.answer_tokens)
            self.step.end()
            self.step = None
        attributes: dict[str, Any] = {
            "gen_ai.usage.input_tokens": result.input_tokens,
            "gen_ai.usage.output_tokens": result.output_tokens,
            "glimprouter.steps": record.n_steps,
            "glimprouter.large_steps": record.n_large_steps,
            "glimprouter.intervention_rate": record.intervention_rate,
            "glimprouter.strategy": record.strategy,
            "glimprouter.reasoning_tokens": record.reasoning_tokens,
            "glimprouter.retries": record.retries,
            "glimprouter.failovers": record.failovers,
        }
        if result.finish_reason:
            attributes["gen_ai.response.finish_reasons"] = [result.finish_reason]
        if record.threshold is not None:
            attributes["glimprouter.threshold"] = record.threshold
        if record.chain_end is not None:
            attributes["glimprouter.chain_end"] = str(record.chain_end)
        self.span.set_attributes(attributes)
        self.span.end()
        self.finished = True

    @contextmanager
    def attached(self) -> Iterator[None]:
        """The open step's context attached while the drivers advance (never across a
        ``yield`` of the call's events)."""
        from opentelemetry import context

        token = context.attach(self.context)
        try:
            yield
        finally:
            context.detach(token)

    def __enter__(self) -> CallTrace:
        return self

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        """End the spans; an exception (``GeneratorExit``: the consumer closed the events)
        as their error."""
        if exc is None:
            self.end()
        else:
            self.fail(exc)

    def fail(self, exc: BaseException) -> None:
        """End the open spans with ``exc``'s type as their error (unless the call had ended)."""
        if self.finished:
            return
        for span in (self.step, self.span):
            if span is not None:
                _fail(span, exc)
        self.end()

    def end(self) -> None:
        """End whatever is still open (the call's span last)."""
        if self.finished:
            return
        if self.step is not None:
            self.step.end()
            self.step = None
        self.span.end()
        self.finished = True


def _call_tracer(parent: Context | None) -> Tracer | None:
    """The tracer of a call under ``parent``, if it has anything to do: an SDK provider is
    installed, or there is a trace to propagate."""
    found = tracer()
    if found is None:
        return None
    from opentelemetry import trace

    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        return found
    return found if trace.get_current_span(parent).get_span_context().is_valid else None


def traced(
    events: Generator[Any, None, None], model: str, parent: Context | None
) -> Generator[Any, None, None]:
    """``events`` (the drivers' events of one call), traced when OpenTelemetry is on: the
    call's span is a child of ``parent`` (default: the current context)."""
    found = _call_tracer(parent)
    if found is None:
        return events
    return _traced(events, CallTrace(found, model, parent))


def _traced(events: Generator[Any, None, None], call: CallTrace) -> Generator[Any, None, None]:
    with call, closing(events):
        while True:
            with call.attached():
                event = next(events, _END)
            if event is _END:
                return
            call.observe(event)
            yield event


def atraced(
    events: AsyncGenerator[Any, None], model: str, parent: Context | None
) -> AsyncGenerator[Any, None]:
    """The async twin of :func:`traced`."""
    found = _call_tracer(parent)
    if found is None:
        return events
    return _atraced(events, CallTrace(found, model, parent))


async def _atraced(events: AsyncGenerator[Any, None], call: CallTrace) -> AsyncGenerator[Any, None]:
    with call:
        async with aclosing(events):
            while True:
                with call.attached():
                    event = await anext(events, _END)
                if event is _END:
                    return
                call.observe(event)
                yield event


@contextmanager
def backend_span(
    role: str, method: str, url: str, body: Mapping[str, Any] | None
) -> Iterator[dict[str, str]]:
    """A CLIENT span around one backend request made within a trace (none outside one, as the
    proxy's health checks), and the headers that carry it to the server (``traceparent``)."""
    found = tracer()
    if found is None:
        yield {}
        return
    from opentelemetry import propagate, trace

    if not trace.get_current_span().get_span_context().is_valid:
        yield {}
        return
    parts = urlsplit(url)
    attributes: dict[str, Any] = {
        "http.request.method": method,
        "server.address": parts.hostname or "",
        "server.port": parts.port or (443 if parts.scheme == "https" else 80),
        "url.path": parts.path,
        "glimprouter.role": role,
    }
    if body is not None and isinstance(body.get("model"), str):
        attributes["gen_ai.request.model"] = body["model"]
    span = found.start_span(
        f"{method} {parts.path}", kind=trace.SpanKind.CLIENT, attributes=attributes
    )
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    try:
        yield carrier
    except BaseException as exc:
        status = getattr(exc, "status_code", None)
        if isinstance(status, int):
            span.set_attribute("http.response.status_code", status)
        _fail(span, exc)
        raise
    finally:
        span.end()


def incoming(headers: Mapping[str, str]) -> Context | None:
    """The context of an incoming request's ``traceparent``: None without one, or unless the
    application installed an SDK provider (a proxy that does not trace passes no trace on)."""
    if tracer() is None or "traceparent" not in headers:
        return None
    from opentelemetry import propagate, trace

    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        return None
    return propagate.extract(headers)


# -- the application's side: an SDK provider with the OTLP/HTTP exporter ------------------------


def traces_endpoint(url: str) -> str:
    """The traces URL of a collector's ``url`` (its base, as ``OTEL_EXPORTER_OTLP_ENDPOINT``,
    to which ``/v1/traces`` is added; a URL ending in ``/v1/traces`` is kept)."""
    url = url.rstrip("/")
    return url if url.endswith("/v1/traces") else f"{url}/v1/traces"


def requested(environ: Mapping[str, str] = os.environ) -> str | None:
    """The variable that asks for traces (the first of :data:`ENDPOINT_ENVS` set), unless
    ``OTEL_SDK_DISABLED`` is true."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    return next((name for name in ENDPOINT_ENVS if environ.get(name)), None)


def require_sdk(asked_by: str) -> None:
    """Raise :class:`InvalidArgumentError` unless the ``otel`` extra is installed."""
    from importlib.util import find_spec

    try:
        found = find_spec("opentelemetry.sdk") and find_spec(
            "opentelemetry.exporter.otlp.proto.http"
        )
    except ModuleNotFoundError:
        found = None
    if not found:
        raise InvalidArgumentError(
            f"{asked_by} asks for OpenTelemetry traces, which need the SDK and the OTLP/HTTP "
            f"exporter: {EXTRA} (or unset it)."
        )


def install_from_env(
    environ: Mapping[str, str] = os.environ, service: str = SERVICE_NAME
) -> TracerProvider | None:
    """Install an SDK tracer provider exporting over OTLP/HTTP (batched; flushed when the
    process exits) when the standard variables ask for traces, and none is installed yet.
    Returns the provider installed, if any; raises :class:`InvalidArgumentError` when they
    ask without the ``otel`` extra."""
    asked_by = requested(environ)
    if asked_by is None:
        return None
    require_sdk(asked_by)
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        return None  # the application (or opentelemetry-instrument) installed its own
    named = environ.get("OTEL_SERVICE_NAME") or "service.name=" in environ.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    )
    resource = Resource.create({} if named else {"service.name": service})
    provider = TracerProvider(resource=resource)  # shuts down (flushes) at exit
    traces, base = (environ.get(name) for name in ENDPOINT_ENVS)
    endpoint = traces or traces_endpoint(base or "")
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    trace.set_tracer_provider(provider)
    return provider
