"""Real servers for the integration tests: two vLLM CPU servers on SmolLM2-135M.

Started once per test session (about two minutes on two cores). To reuse servers that are already
running, set GLIMPROUTER_TEST_SMALL_URL / _SMALL_MODEL / _LARGE_URL / _LARGE_MODEL.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NoReturn

import httpx
import pytest

from langchain_glimprouter import Backend
from langchain_glimprouter.cli.servers import LocalServer, start_pair
from tests.support.accounting import closed_early

_ORDER = {"before_vllm_pair": 0, "after_vllm_pair": 2}
"""Where a marked test runs, whatever the file names: ``before_vllm_pair`` first (it starts vLLM
servers of its own: before the session pair starts, no more than two share the cores),
``after_vllm_pair`` last (it kills a server of the session pair); the others (1) in between."""

_SAMPLE = re.compile(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+([-+0-9.eEinfNa]+)$")


@dataclass(frozen=True)
class Pair:
    small: Backend
    large: Backend
    servers: tuple[LocalServer, ...] = ()
    """The server processes, when this session started them (empty for reused servers)."""


def metric(server: Backend | str, name: str, **labels: str) -> float:
    """Sum of a Prometheus metric on the backend's server (or the server at a root URL), over
    samples matching ``labels``."""
    root = server if isinstance(server, str) else server.root_url
    text = httpx.get(root + "/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if not match or match.group(1) != name:
            continue
        sample_labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        if all(sample_labels.get(k) == v for k, v in labels.items()):
            total += float(match.group(3))
    return total


def started_requests(backend: Backend) -> int:
    """Requests that produced a first token, aborted ones included (request_success_total
    does not count requests whose client disconnected)."""
    return int(metric(backend, "vllm:time_to_first_token_seconds_count"))


def running(pair: Pair) -> float:
    """Requests either server runs now."""
    return sum(metric(b, "vllm:num_requests_running") for b in (pair.small, pair.large))


def settle(pair: Pair, seconds: float = 10.0) -> float:
    """Seconds until neither server runs a request (fails after ``seconds``); then a moment
    more, since vLLM updates its other counters (aborts among them) asynchronously."""
    started = time.monotonic()
    while running(pair) > 0:
        if time.monotonic() - started > seconds:
            pytest.fail(f"a request still runs on a server {seconds:g} s on")
        time.sleep(0.1)
    took = time.monotonic() - started
    time.sleep(0.3)
    return took


def counts(pair: Pair) -> dict[str, int]:
    """Requests each server started generating (aborted ones included) and tokens it generated."""
    settle(pair)
    return {
        "small": started_requests(pair.small),
        "large": started_requests(pair.large),
        "small_tokens": int(metric(pair.small, "vllm:generation_tokens_total")),
        "large_tokens": int(metric(pair.large, "vllm:generation_tokens_total")),
    }


def assert_tokens(
    after: dict[str, int], before: dict[str, int], rec: dict[str, Any], role: str, cap: int
) -> None:
    """The server decoded exactly the tokens the record counts for ``role``, or, for each stream
    the router closed before its end (:func:`closed_early`), up to ``cap`` more: vLLM decodes on
    until the abort reaches its engine, a number of tokens its scheduler decides and the
    request's ``max_tokens`` (the reasoning budget) caps. That a close does abort is shown by
    ``test_closing_a_stream_aborts_it_on_vllm``."""
    extra = after[f"{role}_tokens"] - before[f"{role}_tokens"] - rec["tokens"][role]
    closed = closed_early(rec)[role]
    assert 0 <= extra <= cap * closed, (role, extra, closed)


def vllm_counters(server: Backend | str) -> dict[str, int]:
    """What one vLLM server (a backend, or a root URL) counted so far, once it runs no request:
    requests started (aborted ones included), prompt tokens and generated tokens."""
    deadline = time.monotonic() + 10
    while metric(server, "vllm:num_requests_running") and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.3)  # aborts are counted asynchronously
    return {
        "requests": int(metric(server, "vllm:time_to_first_token_seconds_count")),
        "prompt": int(metric(server, "vllm:prompt_tokens_total")),
        "generated": int(metric(server, "vllm:generation_tokens_total")),
    }


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    """How much each count grew."""
    return {key: after[key] - before[key] for key in after}


def tiny_model_missed(what: str) -> NoReturn:
    """End a test whose every run kept the router's promises (each checked: its record against
    the servers' counters, a parsed call or the reason there is none), but in which what the
    tiny model sampled never showed the case it looks for (a chain that mixes both kinds of
    step, a forced call the model completed): an expected failure that says so, as for the
    standard tests the tiny model misses (docs/compatibility.md), never a silent pass."""
    pytest.xfail(f"SmolLM2-135M on this machine: {what}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Order the marked tests (see ``_ORDER``); a stable sort keeps the rest as collected."""

    def position(item: pytest.Item) -> int:
        return min((_ORDER[m.name] for m in item.iter_markers() if m.name in _ORDER), default=1)

    items.sort(key=position)


@pytest.fixture(scope="session")
def vllm_pair() -> Iterator[Pair]:
    env = os.environ.get
    if env("GLIMPROUTER_TEST_SMALL_URL") and env("GLIMPROUTER_TEST_LARGE_URL"):
        yield Pair(
            small=Backend(base_url=env("GLIMPROUTER_TEST_SMALL_URL", ""),
                          model=env("GLIMPROUTER_TEST_SMALL_MODEL", "smollm2")),
            large=Backend(base_url=env("GLIMPROUTER_TEST_LARGE_URL", ""),
                          model=env("GLIMPROUTER_TEST_LARGE_MODEL", "smollm2")),
        )  # fmt: skip
        return
    servers = start_pair()
    try:
        small, large = (Backend(base_url=s.base_url, model=s.served_name) for s in servers)
        yield Pair(small=small, large=large, servers=tuple(servers))
    finally:
        for server in servers:
            server.stop()
