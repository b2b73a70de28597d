"""The proxy's Prometheus metrics, in a registry of each app's own (``GET /metrics``).

Every name starts ``glimprouter_proxy_``. Per request: ``requests_total{status,stream}`` (a
stream that fails midway counts under its error's status, one whose client left under 499),
``request_duration_seconds{stream}``, ``time_to_first_token_seconds{stream}`` (the first token
of the chain or answer), ``requests_in_flight``, ``errors_total{type}`` (the router's error
class, or the proxy's error code). Per finished call, from its routing record:
``steps_total{model}``, ``tokens_total{model}`` (generated, wasted glimpses included),
``h_init_nats`` (each glimpse's entropy), ``intervention_rate`` (each call's share of large
steps) and ``intervention_rate_recent`` (the share of large steps among the last 1000).

With ``uvicorn --workers N`` each worker has its own registry: a scrape sees one worker.
"""

from __future__ import annotations

from collections import deque

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from langchain_glimprouter.records import Role, RoutingRecord

PREFIX = "glimprouter_proxy_"
RECENT_STEPS = 1000
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_RATES = tuple(i / 10 for i in range(11))
_NATS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0)
_SECONDS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


class Metrics:
    """The metrics of one app (see the module docstring)."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()

        def counter(name: str, doc: str, *labels: str) -> Counter:
            return Counter(PREFIX + name, doc, labels, registry=registry)

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(PREFIX + name, doc, registry=registry)

        def histogram(name: str, doc: str, buckets: tuple[float, ...], *labels: str) -> Histogram:
            return Histogram(PREFIX + name, doc, labels, buckets=buckets, registry=registry)

        self.requests = counter(
            "requests", "Chat completions requests by HTTP status (499: the client left)",
            "status", "stream",
        )  # fmt: skip
        self.errors = counter("errors", "Failed requests by error type", "type")
        self.in_flight = gauge("requests_in_flight", "Chat completions being answered")
        self.duration = histogram(
            "request_duration_seconds", "Wall time of a chat completions request", _SECONDS,
            "stream",
        )  # fmt: skip
        self.first_token = histogram(
            "time_to_first_token_seconds",
            "Time from the request to the first token of the chain or answer", _SECONDS, "stream",
        )  # fmt: skip
        self.steps = counter("steps", "Reasoning steps by the model that wrote them", "model")
        self.tokens = counter("tokens", "Generated tokens by backend", "model")
        self.h_init = histogram(
            "h_init_nats", "Entropy of the small model's first-token glimpse of a step", _NATS
        )
        self.intervention = histogram(
            "intervention_rate", "Share of a call's reasoning steps written by the large model",
            _RATES,
        )  # fmt: skip
        self.recent = gauge(
            "intervention_rate_recent",
            f"Share of large steps among the last {RECENT_STEPS} reasoning steps",
        )
        self._recent: deque[bool] = deque(maxlen=RECENT_STEPS)
        for role in ("small", "large"):  # both series exist from the start, at 0
            self.steps.labels(role)
            self.tokens.labels(role)

    def routed(self, record: RoutingRecord) -> None:
        """Count a finished call's steps, tokens and glimpses."""
        for step in record.steps:
            self.steps.labels(step.model).inc()
            self._recent.append(step.model == "large")
            if step.h_init is not None:
                self.h_init.observe(step.h_init)
        role: Role
        for role, count in record.tokens.items():
            self.tokens.labels(role).inc(count)
        if record.steps:
            self.intervention.observe(record.intervention_rate)
            self.recent.set(sum(self._recent) / len(self._recent))

    def finished(
        self, *, stream: bool, status: int, seconds: float, error: str | None = None
    ) -> None:
        """Count a request that has ended."""
        kind = "true" if stream else "false"
        self.requests.labels(str(status), kind).inc()
        self.duration.labels(kind).observe(seconds)
        if error is not None:
            self.errors.labels(error).inc()

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric."""
        return generate_latest(self.registry)
