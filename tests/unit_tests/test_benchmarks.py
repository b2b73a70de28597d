"""The benchmarks' own bookkeeping: what their results files record."""

from __future__ import annotations

import math
import re

from langchain_core.messages import AIMessage

from benchmarks import bench_router, entropy_speed, real_overhead, soak
from benchmarks._common import run_header
from langchain_glimprouter import ContextLengthExceededError, StreamInterruptedError


def test_client_benchmarks_record_the_transport_the_router_uses() -> None:
    """The router's requests go through the openai SDK over httpx2/httpcore2, not httpx."""
    for names in (bench_router.versions(), real_overhead.versions(None)):
        assert {"openai", "httpx2", "httpcore2"} <= set(names)


def _answer(models: list[str]) -> AIMessage:
    steps = [
        {"index": i, "model": m, "text": (soak.SMALL if m == "small" else soak.LARGE)[i]}
        for i, m in enumerate(models)
    ]
    record = {"steps": steps, "retries": 1, "resumed_streams": 2}
    return AIMessage(content="42", response_metadata={"glimprouter": record})


def test_the_soak_counts_every_outcome_zeros_included() -> None:
    whole = _answer(["small", "large"] * (soak.STEPS // 2))
    counts = soak.tally([whole, whole])
    assert counts == {
        "answered": 2,
        "failed_unrecoverable": {},
        "failed_recoverable": {},
        "hangs": 0,
        "untyped_errors": 0,
        "duplicated_or_lost_steps": 0,
        "recovered": {"retries": 2, "resumed_streams": 4},
    }
    short = _answer(["small"] * (soak.STEPS - 1))
    doubled = _answer(["small"] * soak.STEPS)
    doubled.response_metadata["glimprouter"]["steps"][1]["text"] *= 2
    cut = StreamInterruptedError("cut", role="large", url="http://x/v1")
    too_long = ContextLengthExceededError("too long", role="large", url="http://x/v1")
    counts = soak.tally([short, doubled, cut, too_long, "hang", ("untyped", "KeyError()")])
    assert counts["duplicated_or_lost_steps"] == 2
    assert counts["failed_recoverable"] == {"StreamInterruptedError": 1}
    assert counts["failed_unrecoverable"] == {"ContextLengthExceededError": 1}
    assert (counts["hangs"], counts["untyped_errors"]) == (1, 1)


def test_the_soak_fails_on_a_recoverable_fault_that_ended_a_question() -> None:
    counts = dict.fromkeys(soak.MUST_BE_ZERO, 0)
    report = {"counts": {**counts, "failed_recoverable": {}, "failed_unrecoverable": {"X": 1}}}
    assert soak.failures(report) == []
    report["counts"]["failed_recoverable"] = {"BackendResponseError": 1}
    report["counts"]["hangs"] = 1
    assert soak.failures(report) == ["hangs=1", "failed_recoverable {'BackendResponseError': 1}"]


def test_results_files_record_the_commit() -> None:
    commit = run_header()["commit"]
    assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", commit)


def test_the_entropy_speed_benchmark_times_the_routers_calls() -> None:
    tops = entropy_speed.glimpse(20)
    values = list(tops.values())
    assert values == sorted(values, reverse=True)
    assert 0 < sum(math.exp(v) for v in values) < 1  # a real top 20: mass left outside
    calls = entropy_speed.cases(20, 1000)
    assert len(calls) == 4
    assert all(call() for call in calls.values())
