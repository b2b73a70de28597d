"""The proxy's metrics as an operator consumes them: every metric the Grafana dashboard
(docs/grafana/glimprouter-proxy.json) queries is exported by the app, and in multiprocess mode
a scrape sums the workers' files and drops the live gauges of a worker that is gone."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from langchain_glimprouter.proxy import create_app
from langchain_glimprouter.proxy.metrics import MULTIPROC_ENV, Metrics
from tests.support.proxy import QUESTION, asgi_client, proxy_router

DASHBOARD = Path(__file__).parents[2] / "docs" / "grafana" / "glimprouter-proxy.json"
PROMQL_WORDS = {
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile",
    "count_values", "group", "by", "without", "on", "ignoring", "group_left", "group_right",
    "bool", "and", "or", "unless", "offset",
}  # fmt: skip
"""PromQL's aggregations, keywords and operators that read as identifiers."""


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: its identifiers once the label matchers,
    ranges, strings, grouping label lists, function calls and keywords are taken out."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][\w:]*", expr):
        followed = expr[match.end() :].lstrip()
        if match[0] not in PROMQL_WORDS and not followed.startswith("("):
            names.add(match[0])
    return names


def test_metric_names_reads_promql() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, stream) (rate(a_bucket{stream="x"}[$__rate_'
        "interval]))) / ignoring(le) sum(b_total) + max without (pid) (c)"
    )
    assert metric_names(expr) == {"a_bucket", "b_total", "c"}


def exported(text: str) -> set[str]:
    """The sample names of a Prometheus text page (a histogram's ``_bucket``, ``_sum`` and
    ``_count``, a counter's ``_total``: what PromQL selects)."""
    return {
        re.split(r"[{ ]", line, maxsplit=1)[0]
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


async def test_every_metric_the_dashboard_queries_is_exported(servers: Any) -> None:
    small, large = servers()
    app = create_app(proxy_router(small, large))
    async with asgi_client(app) as client:
        body = {"model": "glimprouter", "messages": QUESTION}
        assert (await client.post("/v1/chat/completions", json=body)).status_code == 200
        # errors_total has a series once an error is counted: one refused request.
        refused = await client.post("/v1/chat/completions", json={**body, "model": "nope"})
        assert refused.status_code == 404
        names = exported((await client.get("/metrics")).text)
    panels = json.loads(DASHBOARD.read_text(encoding="utf-8"))["panels"]
    titles = ("Request rate", "Intervention rate", "H_init", "Saved share", "latency", "Errors")
    for title in titles:  # what the dashboard is for
        assert any(title in panel["title"] for panel in panels), title
    for panel in panels:
        used = set().union(*(metric_names(target["expr"]) for target in panel["targets"]))
        assert used, f"panel {panel['title']!r} queries no metric"
        assert used <= names, f"panel {panel['title']!r}: not exported: {used - names}"


WORKER = """
import sys
from langchain_glimprouter.proxy.metrics import Metrics
metrics = Metrics()
metrics.requests.labels("200", "false").inc()
metrics.in_flight.inc()
print("counted", flush=True)
sys.stdin.readline()
"""
"""A worker that counts one request and stays in flight until its stdin closes."""


def sample(metrics: Metrics, name: str) -> float:
    text = metrics.exposition().decode()
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name)]
    assert len(values) == 1, text
    return values[0]


def test_a_scrape_sums_the_workers_and_forgets_the_gauges_of_one_gone(tmp_path: Path) -> None:
    env = {MULTIPROC_ENV: str(tmp_path)}  # set before the worker imports prometheus_client
    workers = [
        subprocess.Popen([sys.executable, "-c", WORKER], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True, env={**os.environ, **env})
        for _ in range(2)
    ]  # fmt: skip
    try:
        for worker in workers:
            assert worker.stdout is not None
            assert worker.stdout.readline() == "counted\n"
        scraper = Metrics(multiprocess_dir=str(tmp_path))
        requests = 'glimprouter_proxy_requests_total{status="200",stream="false"}'
        assert sample(scraper, requests) == 2
        assert sample(scraper, "glimprouter_proxy_requests_in_flight ") == 2  # livesum
        gone = workers.pop()
        assert gone.stdin is not None
        gone.stdin.close()
        gone.wait(timeout=30)
        assert sample(scraper, requests) == 2  # its count stays
        assert sample(scraper, "glimprouter_proxy_requests_in_flight ") == 1  # its gauge goes
        assert not list(tmp_path.glob(f"gauge_live*_{gone.pid}.db"))
    finally:
        for worker in workers:
            worker.kill()
            worker.wait()


def test_without_a_directory_the_metrics_are_the_process_own() -> None:
    metrics = Metrics()
    metrics.requests.labels("200", "false").inc()
    assert metrics.multiprocess_dir is None
    assert sample(metrics, 'glimprouter_proxy_requests_total{status="200"') == 1
