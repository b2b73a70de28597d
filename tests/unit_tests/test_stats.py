"""The benchmark statistics: bootstrap intervals over questions, quantiles, paired ratios."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from langchain_glimprouter import stats
from langchain_glimprouter.calibration import upper_quantile
from langchain_glimprouter.cli.bench import summary as S


def test_an_accuracy_interval_is_as_wide_as_the_binomial_says() -> None:
    """40 questions, 20 right: the normal approximation gives ±1.96·sqrt(.25/40) = ±15.5 %."""
    values = [1.0] * 20 + [0.0] * 20
    lo, hi = stats.mean_ci(values) or (0.0, 0.0)
    assert lo == pytest.approx(0.5 - 0.155, abs=0.03)
    assert hi == pytest.approx(0.5 + 0.155, abs=0.03)
    assert stats.mean_ci(values) == (lo, hi)  # a fixed seed: the same report every time
    lo4, hi4 = stats.mean_ci(values * 4) or (0.0, 0.0)
    assert hi4 - lo4 == pytest.approx((hi - lo) / 2, rel=0.2)  # four times the questions
    assert stats.mean_ci([1.0] * 10) == (1.0, 1.0)
    assert stats.mean_ci([]) is None


def test_a_step_weighted_rate_resamples_whole_questions() -> None:
    large, steps = [0.0, 5.0, 1.0, 0.0], [10.0, 5.0, 10.0, 5.0]
    lo, hi = stats.ratio_of_sums_ci(large, steps) or (0.0, 0.0)
    assert lo <= sum(large) / sum(steps) <= hi
    assert 0.0 <= lo < hi <= 1.0
    assert stats.ratio_of_sums_ci([], []) is None


def test_median_interval_and_quantiles_agree_with_numpy() -> None:
    rng = random.Random(1)
    latencies = [rng.lognormvariate(0, 0.5) for _ in range(101)]
    lo, hi = stats.median_ci(latencies) or (0.0, 0.0)
    assert lo < float(np.median(latencies)) < hi
    q = stats.quantiles(latencies)
    assert list(q) == [0.1, 0.5, 0.9]
    assert q[0.5] == pytest.approx(float(np.median(latencies)))
    assert q[0.1] < q[0.5] < q[0.9]
    assert stats.quantiles([]) == {}


def test_a_paired_ratio_uses_the_shared_questions_only() -> None:
    base = {str(i): 10.0 + i for i in range(30)}
    run = {k: 0.75 * v for k, v in base.items()} | {"only-here": 1000.0}
    ratio, (lo, hi) = stats.paired_ratio(run, base) or (0.0, (0.0, 0.0))
    assert ratio == pytest.approx(0.75)
    assert lo == pytest.approx(0.75)  # the same factor on every question: no spread
    assert hi == pytest.approx(0.75)
    noisy = {k: v * (0.5 if int(k) % 2 else 1.0) for k, v in base.items()}
    ratio, (lo, hi) = stats.paired_ratio(noisy, base) or (0.0, (0.0, 0.0))
    assert lo < ratio < hi
    assert stats.paired_ratio({"a": 1.0}, {"b": 1.0}) is None


def test_the_threshold_interval_brackets_the_calibrated_threshold() -> None:
    rng = random.Random(2)
    groups = [[rng.uniform(0, 3) for _ in range(rng.randint(3, 9))] for _ in range(40)]
    values = [v for g in groups for v in g]
    tau = upper_quantile(values, 0.75)
    lo, hi = stats.upper_quantile_ci(groups, 0.75) or (0.0, 0.0)
    assert lo <= tau <= hi
    assert hi - lo < 1.0
    # with every group identical the resampled quantile cannot move
    same = [[0.5, 1.0, 1.5, 2.0]] * 10
    assert stats.upper_quantile_ci(same, 0.75) == (upper_quantile(same[0], 0.75),) * 2
    assert stats.upper_quantile_ci([], 0.5) is None


def _line(i: int, correct: bool, latency: float, steps: int, large: int, strategy: str) -> dict:
    return {"id": str(i), "correct": correct, "latency_s": latency, "n_steps": steps,
            "n_large_steps": large, "strategy": strategy, "threshold": 0.9,
            "intervention_rate": large / steps, "tokens": {}, "requests": {}}  # fmt: skip


def test_summaries_carry_intervals_and_the_ratio_to_large_only(tmp_path: object) -> None:
    routed = [_line(i, i % 4 != 0, 3.0 + i % 3, 10, i % 5, "glimpse") for i in range(40)]
    large = [_line(i, i % 5 != 0, 4.0 + i % 3, 10, 10, "large_only") for i in range(40)]
    s, b = S.summarize(routed), S.summarize(large, threshold=None)
    assert s.accuracy_ci is not None
    assert s.accuracy_ci[0] < s.accuracy < s.accuracy_ci[1]
    assert s.intervention_rate_ci is not None
    assert s.intervention_rate_ci[0] < (s.intervention_rate or 0) < s.intervention_rate_ci[1]
    ratio = s.latency_ratio(b)
    assert ratio is not None
    assert ratio[0] == pytest.approx(sum(3.0 + i % 3 for i in range(40)) / sum(
        4.0 + i % 3 for i in range(40)))  # fmt: skip
    assert ratio[1][0] < ratio[0] < ratio[1][1] < 1.0  # faster, and not by noise
    row = s.row(b)
    assert list(row) == list(S.SWEEP_FIELDS)
    assert row["latency_vs_large_only"] == pytest.approx(ratio[0])
    assert row["accuracy_lo"] == s.accuracy_ci[0]
    assert s.row()["latency_vs_large_only"] is None  # no baseline, no ratio
    assert f"[{s.accuracy_ci[0]:.1%}–{s.accuracy_ci[1]:.1%}]" in s.table()
    table = S.comparison_table([s, b])
    assert f"{ratio[0]:.3f}" in table
    assert "vs large" in table
    assert not math.isnan(ratio[1][0])
