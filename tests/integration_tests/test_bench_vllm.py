"""glimprouter bench against the two real vLLM CPU servers (SmolLM2-135M): the results lines
count what the servers generated, and a two-threshold sweep writes its CSV and plots."""

from __future__ import annotations

import io
import json
from pathlib import Path

from langchain_glimprouter.cli import main as cli
from langchain_glimprouter.cli.bench.summary import SWEEP_FIELDS, read_sweep_csv

from .conftest import Pair, counts

PNG = b"\x89PNG\r\n\x1a\n"
REASONING_BUDGET = 48
BUDGETS = ["--max-reasoning-tokens", str(REASONING_BUDGET), "--max-tokens", "16", "--seed", "7"]


def server_flags(pair: Pair) -> list[str]:
    return ["--small-url", pair.small.base_url, "--small-model", pair.small.model,
            "--large-url", pair.large.base_url, "--large-model", pair.large.model]  # fmt: skip


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
    assert header["config"]["max_reasoning_tokens"] == REASONING_BUDGET
    assert header["config"]["small_model"] == vllm_pair.small.model
    assert len(lines) == 3
    assert all("error" not in line for line in lines)
    assert all(line["n_steps"] == len(line["steps"]) for line in lines)
    assert all(line["predicted"] is None or isinstance(line["predicted"], str) for line in lines)
    requests = {role: sum(line["requests"][role] for line in lines) for role in ("small", "large")}
    tokens = {role: sum(line["tokens"][role] for line in lines) for role in ("small", "large")}
    large_steps = sum(line["n_large_steps"] for line in lines)
    # Every request the lines count was started on its server, aborted glimpses included: a
    # large request per large step and per answer, and at most one more per question (the
    # request that found the chain's end where a step would start, records' end_step).
    assert after["small"] - before["small"] == requests["small"]
    assert after["large"] - before["large"] == requests["large"]
    assert large_steps + 3 <= requests["large"] <= large_steps + 6
    # The router counts no token a server did not decode. A stream it closes (the glimpse of
    # a large step, a step at </think>) decodes on until the abort reaches vLLM's engine: as
    # many tokens as the scheduler gets to (0-3 usually, 8 once on a loaded 2-core machine),
    # never more than the request's max_tokens, which the reasoning budget caps; at most one
    # such stream per large step and two per question (an end step's glimpse, </think>). That
    # a close aborts the request is test_vllm_routing.py::test_closing_a_stream_aborts_it_on_vllm.
    extra = after["small_tokens"] - before["small_tokens"] - tokens["small"]
    assert 0 <= extra <= REASONING_BUDGET * (large_steps + 2 * len(lines)), extra
    extra = after["large_tokens"] - before["large_tokens"] - tokens["large"]
    assert 0 <= extra <= REASONING_BUDGET * len(lines), extra


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
