"""The proxy's Prometheus metrics, in a registry of each app's own (``GET /metrics``).

Every name starts ``glimprouter_proxy_``. Per request: ``requests_total{status,stream}`` (a
stream that fails midway counts under its error's status, one whose client left under 499),
``request_duration_seconds{stream}``, ``time_to_first_token_seconds{stream}`` (the first token
of the chain or answer), ``requests_in_flight``, ``errors_total{type}`` (the router's error
class, or the proxy's error code). Per finished call, from its routing record:
``steps_total{model}``, ``tokens_total{model}`` (generated, wasted glimpses included),
``h_init_nats`` (each glimpse's entropy), ``intervention_rate`` (each call's share of large
steps), ``intervention_rate_recent`` (the share of large steps among the last 1000), and what
routing saved on the large model: ``large_tokens_saved_total``, ``saved_share`` (each call's
share of output tokens the small model wrote), ``large_seconds_saved_total`` (the record's
estimate) and ``large_seconds_total`` (the large backend's stream time).

Several worker processes (``glimprouter proxy --workers N``, or any server that forks workers)
share one ``/metrics`` through prometheus-client's multiprocess mode: with
``PROMETHEUS_MULTIPROC_DIR`` set before the process imports prometheus_client, every worker
writes its values to files there and a scrape of any worker sums the files
(:class:`MultiProcessCollector`). Counters and histograms are summed over every worker that
ever ran; ``requests_in_flight`` over the live ones (``livesum``); ``intervention_rate_recent``
is the window of the worker that last finished a call (``livemostrecent``; a sum or a mean of
windows would not be a share of steps). A worker's live gauges leave the sum at the first
scrape after its process is gone (:func:`drop_dead_workers`), whether it exited or crashed.
"""

from __future__ import annotations

import os
import re
from collections import deque
from pathlib import Path
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from langchain_glimprouter.records import Role, RoutingRecord

PREFIX = "glimprouter_proxy_"
RECENT_STEPS = 1000
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""prometheus-client's directory of the workers' values (multiprocess mode)."""
_LIVE_GAUGE_FILE = re.compile(r"gauge_live\w+?_(\d+)\.db")

_RATES = tuple(i / 10 for i in range(11))
_NATS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0)
_SECONDS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


GaugeMode = Literal["livesum", "livemostrecent"]


def alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (of any user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def drop_dead_workers(path: str) -> None:
    """Drop the live gauges of the worker processes that are gone from ``path``
    (prometheus-client's ``mark_process_dead``): their counters stay in the sums."""
    pids = {int(m[1]) for f in Path(path).iterdir() if (m := _LIVE_GAUGE_FILE.fullmatch(f.name))}
    for pid in pids:
        if not alive(pid):
            mark_process_dead(pid, path)  # type: ignore[no-untyped-call]


class Metrics:
    """The metrics of one app (see the module docstring). ``multiprocess_dir``: the
    directory of the workers' values (default ``$PROMETHEUS_MULTIPROC_DIR``; none: this
    process's own values)."""

    def __init__(self, multiprocess_dir: str | None = None) -> None:
        self.multiprocess_dir = multiprocess_dir or os.environ.get(MULTIPROC_ENV) or None
        self.registry = registry = CollectorRegistry()

        def counter(name: str, doc: str, *labels: str) -> Counter:
            return Counter(PREFIX + name, doc, labels, registry=registry)

        def gauge(name: str, doc: str, mode: GaugeMode) -> Gauge:
            return Gauge(PREFIX + name, doc, registry=registry, multiprocess_mode=mode)

        def histogram(name: str, doc: str, buckets: tuple[float, ...], *labels: str) -> Histogram:
            return Histogram(PREFIX + name, doc, labels, buckets=buckets, registry=registry)

        self.requests = counter(
            "requests", "Chat completions requests by HTTP status (499: the client left)",
            "status", "stream",
        )  # fmt: skip
        self.errors = counter("errors", "Failed requests by error type", "type")
        self.in_flight = gauge("requests_in_flight", "Chat completions being answered", "livesum")
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
            f"Share of large steps among the last {RECENT_STEPS} reasoning steps (of one "
            "worker: the last to finish a call)",
            "livemostrecent",
        )
        self.tokens_saved = counter(
            "large_tokens_saved",
            "Tokens the large model did not generate: the small model's kept steps (its tokenizer)",
        )
        self.saved_share = histogram(
            "saved_share",
            "Share of a call's output tokens (steps and answer) written by the small model",
            _RATES,
        )
        self.seconds_saved = counter(
            "large_seconds_saved",
            "Estimated large-model seconds saved: saved tokens times the large backend's "
            "decode time per token observed on the same call",
        )
        self.large_seconds = counter(
            "large_seconds", "Wall time of the large backend's streams (request to last chunk)"
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
        self.tokens_saved.inc(record.large_tokens_saved)
        if record.large_tokens_saved or record.large_share:  # the call has output
            self.saved_share.observe(1.0 - record.large_share)
        if record.large_seconds_saved is not None:
            self.seconds_saved.inc(record.large_seconds_saved)
        self.large_seconds.inc(record.large_s)

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
        """The Prometheus text format of every metric: this process's, or in multiprocess
        mode the sum over the workers."""
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        drop_dead_workers(self.multiprocess_dir)
        workers = CollectorRegistry()
        MultiProcessCollector(workers, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        return generate_latest(workers)
