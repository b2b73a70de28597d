"""glimprouter bench against the two real vLLM CPU servers (SmolLM2-135M): the results lines
count what the servers generated, and a two-threshold sweep writes its CSV and plots."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest

from langchain_glimprouter.cli import main as cli
from langchain_glimprouter.cli.bench.summary import SWEEP_FIELDS, read_sweep_csv

from .conftest import Pair, metric, started_requests

PNG = b"\x89PNG\r\n\x1a\n"
BUDGETS = ["--max-reasoning-tokens", "48", "--max-tokens", "16", "--seed", "7"]


def server_flags(pair: Pair) -> list[str]:
    return ["--small-url", pair.small.base_url, "--small-model", pair.small.model,
            "--large-url", pair.large.base_url, "--large-model", pair.large.model]  # fmt: skip


def counts(pair: Pair) -> dict[str, int]:
    """Requests each server started (aborted ones included) and tokens it generated, once
    neither server runs a request (aborts are counted asynchronously)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if sum(metric(b, "vllm:num_requests_running") for b in (pair.small, pair.large)) == 0:
            time.sleep(0.3)
            break
        time.sleep(0.1)
    else:
        pytest.fail("a request is still running on a server")
    return {
        "small": started_requests(pair.small),
        "large": started_requests(pair.large),
        "small_tokens": int(metric(pair.small, "vllm:generation_tokens_total")),
        "large_tokens": int(metric(pair.large, "vllm:generation_tokens_total")),
    }


def test_bench_lines_match_the_server_metrics(vllm_pair: Pair, tmp_path: Path) -> None:
    before = counts(vllm_pair)
    out = io.StringIO()
    code = cli.main(
        ["bench", *server_flags(vllm_pair), "--limit", "3", "--threshold", "1.5",
         "--concurrency", "3", "--out", str(tmp_path), *BUDGETS],
        out=out,
    )  # fmt: skip
    after = counts(vllm_pair)
    assert code == 0
    assert "Bench: glimpse, threshold 1.5: 3 questions, 0 failed" in out.getvalue()
    text = (tmp_path / "glimpse_1.5.jsonl").read_text()
    header, *lines = (json.loads(x) for x in text.splitlines())
    assert header["config"]["max_reasoning_tokens"] == 48
    assert header["config"]["small_model"] == vllm_pair.small.model
    assert len(lines) == 3
    assert all("error" not in line for line in lines)
    assert all(line["n_steps"] == len(line["steps"]) >= 1 for line in lines)
    assert all(line["predicted"] is None or isinstance(line["predicted"], str) for line in lines)
    requests = {role: sum(line["requests"][role] for line in lines) for role in ("small", "large")}
    tokens = {role: sum(line["tokens"][role] for line in lines) for role in ("small", "large")}
    large_steps = sum(line["n_large_steps"] for line in lines)
    # Every request the lines count was started on its server, aborted glimpses included.
    assert after["small"] - before["small"] == requests["small"]
    assert after["large"] - before["large"] == requests["large"] == large_steps + 3
    assert after["large_tokens"] - before["large_tokens"] == tokens["large"]
    # An aborted glimpse may have decoded a few tokens more than the router counted.
    extra = after["small_tokens"] - before["small_tokens"] - tokens["small"]
    assert 0 <= extra <= 3 * large_steps


def test_bench_sweep_of_two_thresholds(vllm_pair: Pair, tmp_path: Path) -> None:
    out = io.StringIO()
    code = cli.main(
        ["bench", *server_flags(vllm_pair), "--limit", "2", "--sweep", "0,inf",
         "--concurrency", "2", "--out", str(tmp_path), *BUDGETS],
        out=out,
    )  # fmt: skip
    assert code == 0
    rows = read_sweep_csv(tmp_path / "sweep.csv")
    assert list(rows[0]) == list(SWEEP_FIELDS)
    assert [(r["threshold"], r["strategy"], r["n"]) for r in rows] == [
        ("0.0", "glimpse", "2"), ("inf", "glimpse", "2"),
    ]  # fmt: skip
    large_only, small_steps = rows
    assert large_only["requests_small"] == "0"  # threshold 0: no glimpse at all
    assert float(large_only["intervention_rate"]) == 1.0
    assert float(small_steps["intervention_rate"]) == 0.0
    assert small_steps["requests_large"] == "2"  # only the answers
    for name in ("pareto.png", "intervention.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG
    assert (tmp_path / "glimpse_0.jsonl").exists()
    assert (tmp_path / "glimpse_inf.jsonl").exists()
