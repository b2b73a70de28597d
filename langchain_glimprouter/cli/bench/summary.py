"""What ``glimprouter bench`` reports of its runs: a :class:`Summary` per run (accuracy, latency,
intervention rate, tokens, each with a bootstrap 95 % interval), the comparison table of a sweep,
and ``sweep.csv``."""

from __future__ import annotations

import csv
import os
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_glimprouter import stats
from langchain_glimprouter.core.strategies import spec_named

SWEEP_FIELDS: tuple[str, ...] = (
    "threshold",
    "strategy",
    "n",
    "errors",
    "accuracy",
    "accuracy_lo",
    "accuracy_hi",
    "latency_mean_s",
    "latency_median_s",
    "latency_median_lo_s",
    "latency_median_hi_s",
    "latency_p10_s",
    "latency_p90_s",
    "latency_vs_large_only",
    "latency_vs_large_only_lo",
    "latency_vs_large_only_hi",
    "intervention_rate",
    "intervention_rate_lo",
    "intervention_rate_hi",
    "intervention_rate_mean",
    "tokens_small",
    "tokens_large",
    "requests_small",
    "requests_large",
    "wasted_small_tokens",
)
"""The columns of ``sweep.csv``, one row per run. ``_lo`` / ``_hi`` are the ends of a bootstrap
95 % confidence interval over questions (:mod:`~langchain_glimprouter.stats`);
``latency_vs_large_only`` is the run's mean latency over the large-only baseline's, on the
questions both answered (empty without that baseline in the sweep)."""


def as_float(value: Any) -> float | None:
    """A number of a results line (``"inf"`` included) as a float; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


ROLES = ("small", "large")


@dataclass(frozen=True)
class Summary:
    """What one run comes to. Errors count as wrong answers in ``accuracy``; the latency,
    intervention, token and request figures are over the questions that did not fail."""

    strategy: str
    threshold: Any
    """The run's threshold: a float, ``"inf"``, ``"auto"``, or None when unknown."""
    n: int
    errors: int
    correct: int
    accuracy: float
    latency_mean_s: float | None
    latency_median_s: float | None
    intervention_rate: float | None
    """Step-weighted: large steps over all steps of all questions."""
    intervention_rate_mean: float | None
    """The mean of the questions' own intervention rates."""
    tokens: dict[str, int] = field(default_factory=dict)
    requests: dict[str, int] = field(default_factory=dict)
    tokens_per_question: dict[str, float] = field(default_factory=dict)
    requests_per_question: dict[str, float] = field(default_factory=dict)
    wasted_small_tokens: int = 0
    accuracy_ci: stats.Interval | None = None
    """Bootstrap 95 % interval of ``accuracy`` over the questions."""
    intervention_rate_ci: stats.Interval | None = None
    latency_mean_ci: stats.Interval | None = None
    latency_median_ci: stats.Interval | None = None
    latency_quantiles: dict[float, float] = field(default_factory=dict)
    """The 10, 50 and 90 % quantiles of the latency."""
    latencies: dict[str, float] = field(default_factory=dict, repr=False)
    """Each answered question's latency by its id (for ratios against another run)."""

    @property
    def ok(self) -> int:
        """Questions that did not fail."""
        return self.n - self.errors

    def row(self, baseline: Summary | None = None) -> dict[str, Any]:
        """The :data:`SWEEP_FIELDS` of this run (token and request totals); the latency ratio
        against ``baseline`` when one is given."""
        ratio = self.latency_ratio(baseline) if baseline is not None else None
        quants = self.latency_quantiles
        return {
            "threshold": self.threshold,
            "strategy": self.strategy,
            "n": self.n,
            "errors": self.errors,
            "accuracy": self.accuracy,
            **_ends("accuracy", self.accuracy_ci),
            "latency_mean_s": self.latency_mean_s,
            "latency_median_s": self.latency_median_s,
            **_ends("latency_median", self.latency_median_ci, "_s"),
            "latency_p10_s": quants.get(0.1),
            "latency_p90_s": quants.get(0.9),
            "latency_vs_large_only": ratio[0] if ratio else None,
            **_ends("latency_vs_large_only", ratio[1] if ratio else None),
            "intervention_rate": self.intervention_rate,
            **_ends("intervention_rate", self.intervention_rate_ci),
            "intervention_rate_mean": self.intervention_rate_mean,
            "tokens_small": self.tokens.get("small", 0),
            "tokens_large": self.tokens.get("large", 0),
            "requests_small": self.requests.get("small", 0),
            "requests_large": self.requests.get("large", 0),
            "wasted_small_tokens": self.wasted_small_tokens,
        }

    def latency_ratio(self, baseline: Summary) -> tuple[float, stats.Interval] | None:
        """Mean latency over ``baseline``'s on the questions both answered, with its paired
        bootstrap 95 % interval."""
        return stats.paired_ratio(self.latencies, baseline.latencies)

    def table(self) -> str:
        """A text table of the run; the intervals are bootstrap 95 % over questions."""
        tau = "" if self.threshold is None else f", threshold {self.threshold}"
        quants = "   ".join(
            f"p{q * 100:.0f} {v:.2f} s" for q, v in self.latency_quantiles.items() if q != 0.5
        )
        rows = [
            f"Bench: {self.strategy}{tau}: {self.n} questions, {self.errors} failed",
            f"  accuracy             {self.accuracy:.1%} ({self.correct} of {self.n})"
            f"{_ci(self.accuracy_ci, '.1%')}",
            f"  latency              mean {seconds(self.latency_mean_s)}   "
            f"median {seconds(self.latency_median_s)}{_ci(self.latency_median_ci, '.2f', ' s')}"
            + (f"   {quants}" if quants else ""),
            f"  intervention rate    {percent(self.intervention_rate)} of steps"
            f"{_ci(self.intervention_rate_ci, '.1%')}   "
            f"(per-question mean {percent(self.intervention_rate_mean)})",
            f"  {'':<20} {'small':>10} {'large':>10}",
        ]
        for name, totals, means in (
            ("tokens", self.tokens, self.tokens_per_question),
            ("requests", self.requests, self.requests_per_question),
        ):
            small, large = totals.get("small", 0), totals.get("large", 0)
            rows.append(f"  {name + ' (total)':<20} {small:>10} {large:>10}")
            rows.append(
                f"  {name + ' / question':<20} {means.get('small', 0.0):>10.1f} "
                f"{means.get('large', 0.0):>10.1f}"
            )
        rows.append(f"  wasted small tokens  {self.wasted_small_tokens}")
        return "\n".join(rows)


def _ends(name: str, interval: stats.Interval | None, unit: str = "") -> dict[str, float | None]:
    lo, hi = interval if interval is not None else (None, None)
    return {f"{name}_lo{unit}": lo, f"{name}_hi{unit}": hi}


def _ci(interval: stats.Interval | None, spec: str, unit: str = "") -> str:
    """`` [lo–hi]`` for a table, empty without an interval."""
    if interval is None:
        return ""
    return f" [{format(interval[0], spec)}–{format(interval[1], spec)}{unit}]"


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def summarize(
    lines: Sequence[Mapping[str, Any]], strategy: str | None = None, threshold: Any = None
) -> Summary:
    """The :class:`Summary` of a run's results lines. ``strategy`` and ``threshold`` default to
    the lines' own (the first line's)."""
    ok = [line for line in lines if not line.get("error")]
    first = lines[0] if lines else {}
    by_id = {
        str(line.get("id")): float(x)
        for line in ok
        if (x := as_float(line.get("latency_s"))) is not None
    }
    latencies = list(by_id.values())
    routed = [line for line in ok if isinstance(line.get("n_steps"), int)]
    steps = sum(int(line["n_steps"]) for line in routed)
    large = sum(int(line.get("n_large_steps") or 0) for line in routed)
    rates = [
        float(r) for line in routed if (r := as_float(line.get("intervention_rate"))) is not None
    ]
    totals: dict[str, dict[str, int]] = {"tokens": {}, "requests": {}}
    for key, total in totals.items():
        for role in ROLES:
            total[role] = sum(int((line.get(key) or {}).get(role, 0)) for line in ok)
    n_ok = len(ok)
    correct = sum(bool(line.get("correct")) for line in lines)
    return Summary(
        strategy=strategy or str(first.get("strategy", "")),
        threshold=threshold if threshold is not None else first.get("threshold"),
        n=len(lines),
        errors=len(lines) - n_ok,
        correct=correct,
        accuracy=correct / len(lines) if lines else 0.0,
        latency_mean_s=statistics.fmean(latencies) if latencies else None,
        latency_median_s=statistics.median(latencies) if latencies else None,
        intervention_rate=large / steps if steps else (0.0 if routed else None),
        intervention_rate_mean=statistics.fmean(rates) if rates else None,
        tokens=totals["tokens"],
        requests=totals["requests"],
        tokens_per_question={r: v / n_ok if n_ok else 0.0 for r, v in totals["tokens"].items()},
        requests_per_question={r: v / n_ok if n_ok else 0.0 for r, v in totals["requests"].items()},
        wasted_small_tokens=sum(int(line.get("wasted_small_tokens") or 0) for line in ok),
        accuracy_ci=stats.mean_ci([float(bool(line.get("correct"))) for line in lines]),
        intervention_rate_ci=stats.ratio_of_sums_ci(
            [float(line.get("n_large_steps") or 0) for line in routed],
            [float(line["n_steps"]) for line in routed],
        ),
        latency_mean_ci=stats.mean_ci(latencies),
        latency_median_ci=stats.median_ci(latencies),
        latency_quantiles=stats.quantiles(latencies),
        latencies=by_id,
    )


def large_only(summaries: Sequence[Summary]) -> Summary | None:
    """The large-only baseline among ``summaries``, if the sweep ran it."""
    for summary in summaries:
        spec = spec_named(summary.strategy)
        if spec is not None and spec.writer == "large":
            return summary
    return None


def comparison_table(summaries: Sequence[Summary]) -> str:
    """One text row per run: strategy, threshold, accuracy, latency, intervention, tokens and
    requests per question."""
    baseline = large_only(summaries)
    head = (
        f"{'strategy':<12} {'threshold':>9} {'n':>4} {'err':>4} {'accuracy':>8} "
        f"{'95% CI':>13} {'lat mean':>9} {'lat med':>9} {'vs large':>8} {'95% CI':>11} "
        f"{'interv':>7} {'95% CI':>13} {'tok/q S':>8} {'tok/q L':>8} "
        f"{'req/q S':>7} {'req/q L':>7}"
    )
    rows = [head]
    for s in summaries:
        tau = "-" if s.threshold is None else str(s.threshold)
        ratio = s.latency_ratio(baseline) if baseline is not None else None
        rows.append(
            f"{s.strategy:<12} {tau:>9} {s.n:>4} {s.errors:>4} {s.accuracy:>8.1%} "
            f"{_ci(s.accuracy_ci, '.1%').strip():>13} "
            f"{seconds(s.latency_mean_s):>9} {seconds(s.latency_median_s):>9} "
            f"{f'{ratio[0]:.3f}' if ratio else '-':>8} "
            f"{_ci(ratio[1] if ratio else None, '.3f').strip():>11} "
            f"{percent(s.intervention_rate):>7} "
            f"{_ci(s.intervention_rate_ci, '.1%').strip():>13} "
            f"{s.tokens_per_question.get('small', 0):>8.1f} "
            f"{s.tokens_per_question.get('large', 0):>8.1f} "
            f"{s.requests_per_question.get('small', 0):>7.2f} "
            f"{s.requests_per_question.get('large', 0):>7.2f}"
        )
    return "\n".join(rows)


def write_sweep_csv(summaries: Sequence[Summary], path: str | os.PathLike[str]) -> Path:
    """``sweep.csv``: the :data:`SWEEP_FIELDS` of every run, one row each."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(SWEEP_FIELDS))
        writer.writeheader()
        baseline = large_only(summaries)
        for summary in summaries:
            row = summary.row(baseline)
            writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return target


def read_sweep_csv(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """The rows of a ``sweep.csv`` as strings."""
    with Path(path).open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))
