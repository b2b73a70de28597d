"""What is drawn or analysed from recorded ``glimprouter bench`` runs.

:func:`write_sweep_plots` draws the summaries of a sweep (see
:func:`~langchain_glimprouter.cli.bench.runner.asweep`) as ``pareto.png`` (accuracy against mean
latency) and ``intervention.png`` (intervention rate against threshold). :func:`analyze` reads
results files back (:func:`~langchain_glimprouter.cli.bench.runner.read_results`) and compares
the first-token entropy ``H_init`` of the steps with their mean step entropy
(``h_init_hist.png``, the paper's Figure 1). matplotlib is imported only where a plot is drawn;
without it :func:`have_matplotlib` is false, nothing is drawn, and :data:`MATPLOTLIB_HINT` says
what to install.
"""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_glimprouter.cli.bench.runner import BASELINES, read_results
from langchain_glimprouter.cli.bench.summary import Summary, as_float
from langchain_glimprouter.core.strategies import spec_named
from langchain_glimprouter.errors import InvalidArgumentError

MATPLOTLIB_HINT = (
    'matplotlib is not installed: no plots. pip install "langchain-glimprouter[bench]" for them.'
)
_QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


# -- sweep plots -----------------------------------------------------------------------------------


def have_matplotlib() -> bool:
    """Whether matplotlib can be imported (the plots need it; the CSV and the text do not)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend, or None when matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_sweep_plots(summaries: Sequence[Summary], out_dir: str | os.PathLike[str]) -> list[Path]:
    """``pareto.png`` (accuracy against mean latency, a point per threshold labelled with it,
    the baselines as reference markers) and ``intervention.png`` (intervention rate against
    threshold). Returns the files written: none without matplotlib."""
    plt = _pyplot()
    if plt is None:
        return []
    from matplotlib.ticker import PercentFormatter

    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    runs = [s for s in summaries if s.strategy not in BASELINES]
    baselines = [s for s in summaries if s.strategy in BASELINES]

    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    points = sorted(
        ((s.latency_mean_s, s.accuracy, s) for s in runs if s.latency_mean_s is not None),
        key=lambda p: as_float(p[2].threshold) or 0.0,
    )
    if points:
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        ax.errorbar(xs, ys, fmt="o-", color="tab:blue", capsize=3,
                    xerr=_spans([p[2].latency_mean_ci for p in points], xs),
                    yerr=_spans([p[2].accuracy_ci for p in points], ys),
                    label=", ".join(sorted({p[2].strategy for p in points})))  # fmt: skip
        for x, y, s in points:
            ax.annotate(
                f"τ={s.threshold}", (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8
            )
    styles = {"large": ("s", "tab:red", "large only"), "small": ("^", "tab:green", "small only")}
    for s in baselines:
        if s.latency_mean_s is None:
            continue
        spec = spec_named(s.strategy)
        marker, color, name = styles[spec.writer if spec and spec.writer else "large"]
        ax.errorbar([s.latency_mean_s], [s.accuracy], fmt=marker, color=color, markersize=10,
                    xerr=_spans([s.latency_mean_ci], [s.latency_mean_s]),
                    yerr=_spans([s.accuracy_ci], [s.accuracy]), capsize=3, label=name)  # fmt: skip
    shown = [p[1] for p in points] + [s.accuracy for s in baselines if s.latency_mean_s is not None]
    if shown:  # the accuracies, with a margin, never outside [0, 1]
        ax.set_ylim(max(0.0, min(shown) - 0.05), min(1.0, max(shown) + 0.05))
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlabel("mean latency per question (s)")
    ax.set_ylabel("accuracy")
    ax.set_title("Accuracy against latency (bars: bootstrap 95% intervals)")
    ax.grid(alpha=0.3)
    if points or baselines:
        ax.legend(fontsize=8)
    pareto = folder / "pareto.png"
    fig.savefig(pareto, dpi=120, bbox_inches="tight")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    finite = sorted(
        (tau, s)
        for s in runs
        if (tau := as_float(s.threshold)) is not None
        and math.isfinite(tau)
        and s.intervention_rate is not None
    )
    if finite:
        rates = [s.intervention_rate or 0.0 for _, s in finite]
        ax.errorbar([t for t, _ in finite], rates, fmt="o-", capsize=3, label="share of steps",
                    yerr=_spans([s.intervention_rate_ci for _, s in finite], rates))  # fmt: skip
        means = [(t, s.intervention_rate_mean) for t, s in finite]
        ax.plot([t for t, m in means if m is not None], [m for _, m in means if m is not None],
                "x--", label="per-question mean")  # fmt: skip
        ax.legend(fontsize=8)
    ax.set_xlabel("threshold (nats)")
    ax.set_ylabel("intervention rate (large steps)")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title("Intervention rate against threshold")
    ax.grid(alpha=0.3)
    intervention = folder / "intervention.png"
    fig.savefig(intervention, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return [pareto, intervention]


def _spans(
    intervals: Sequence[tuple[float, float] | None], centres: Sequence[float]
) -> list[list[float]]:
    """matplotlib's asymmetric error bars (below, above) of each point; 0 without an interval."""
    below = [c - i[0] if i else 0.0 for i, c in zip(intervals, centres, strict=True)]
    above = [i[1] - c if i else 0.0 for i, c in zip(intervals, centres, strict=True)]
    return [[max(0.0, b) for b in below], [max(0.0, a) for a in above]]


# -- analyze --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Analysis:
    """Per-step measures gathered from results files: every step's first-token entropy
    ``h_init``, and the mean step entropy (``score``) of the steps of ``step_entropy`` runs."""

    h_init: tuple[float, ...]
    step_entropy: tuple[float, ...]
    files: tuple[str, ...] = ()
    questions: int = 0

    def text(self, bins: int = 12) -> str:
        """Counts, mean, spread and quantiles of both, and a shared-bin histogram table."""
        rows = [
            f"Steps from {self.questions} questions in {len(self.files)} file(s): "
            f"{len(self.h_init)} with H_init, {len(self.step_entropy)} with a mean step entropy "
            "(step_entropy runs)."
        ]
        series = [("H_init (first token)", self.h_init), ("mean step entropy", self.step_entropy)]
        for name, values in series:
            rows.append(f"  {name:<22} {_describe(values)}")
        if not self.step_entropy:
            rows.append(
                "  (no step_entropy run among the files: record one with "
                "`glimprouter bench --strategy step_entropy` for the comparison)"
            )
        edges = self.edges(bins)
        if edges:
            rows.append(f"\n  {'bin (nats)':<17} {'H_init':>7} {'step H':>7}")
            counts = [_histogram(values, edges) for _, values in series]
            for i in range(len(edges) - 1):
                rows.append(
                    f"  {edges[i]:6.2f} - {edges[i + 1]:6.2f}  {counts[0][i]:>7} {counts[1][i]:>7}"
                )
        return "\n".join(rows)

    def edges(self, bins: int = 12) -> list[float]:
        """Shared bin edges over both series (empty without values)."""
        values = [*self.h_init, *self.step_entropy]
        if not values:
            return []
        low, high = min(values), max(values)
        if high <= low:
            high = low + 1.0
        width = (high - low) / bins
        return [low + i * width for i in range(bins)] + [high]

    def plot(self, out_dir: str | os.PathLike[str], bins: int = 30) -> Path | None:
        """``h_init_hist.png``: both histograms (as densities) on shared bins and axes; None
        without matplotlib."""
        plt = _pyplot()
        if plt is None:
            return None
        folder = Path(out_dir)
        folder.mkdir(parents=True, exist_ok=True)
        edges = self.edges(bins) or [0.0, 1.0]
        fig, ax = plt.subplots(figsize=(6.4, 4.8))
        if self.h_init:
            ax.hist(self.h_init, bins=edges, density=True, alpha=0.55, color="tab:blue",
                    label=f"H_init, first token ({len(self.h_init)} steps)")  # fmt: skip
        if self.step_entropy:
            ax.hist(self.step_entropy, bins=edges, density=True, alpha=0.55, color="tab:orange",
                    label=f"mean step entropy ({len(self.step_entropy)} steps)")  # fmt: skip
        ax.set_xlabel("entropy (nats)")
        ax.set_ylabel("density")
        ax.set_title("First-token entropy against mean step entropy")
        if self.h_init or self.step_entropy:
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        target = folder / "h_init_hist.png"
        fig.savefig(target, dpi=120, bbox_inches="tight")
        plt.close(fig)
        return target


def _describe(values: Sequence[float]) -> str:
    if not values:
        return "n=0"
    ordered = sorted(values)
    spread = statistics.pstdev(ordered)
    quantiles = "  ".join(f"{q:.0%} {_quantile(ordered, q):.3f}" for q in _QUANTILES)
    return f"n={len(ordered)}  mean {statistics.fmean(ordered):.3f}  sd {spread:.3f}  {quantiles}"


def _quantile(ordered: Sequence[float], q: float) -> float:
    """Linear interpolation between the closest ranks (numpy's default)."""
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _histogram(values: Sequence[float], edges: Sequence[float]) -> list[int]:
    counts = [0] * (len(edges) - 1)
    last = len(counts) - 1
    for value in values:
        for i in range(len(counts)):
            if edges[i] <= value < edges[i + 1] or (i == last and value == edges[-1]):
                counts[i] += 1
                break
    return counts


def analyze(paths: Sequence[str | os.PathLike[str]]) -> Analysis:
    """Gather the per-step ``h_init`` of every results file, and the ``score`` (mean step
    entropy) of the steps of ``step_entropy`` runs. Raises :class:`InvalidArgumentError` for
    an unreadable file or when no step has either measure."""
    h_init: list[float] = []
    step_entropy: list[float] = []
    questions = 0
    for path in paths:
        config, lines = read_results(path)
        for line in lines:
            questions += 1
            spec = spec_named(line.get("strategy") or config.get("strategy"))
            measured = spec is not None and spec.measure == "mean_entropy"
            for step in line.get("steps") or []:
                if (h := as_float(step.get("h_init"))) is not None and math.isfinite(h):
                    h_init.append(h)
                score = as_float(step.get("score"))
                if measured and score is not None and math.isfinite(score):
                    step_entropy.append(score)
    if not h_init and not step_entropy:
        raise InvalidArgumentError(
            f"no step with an H_init or a mean step entropy in {len(paths)} file(s): analyze "
            "needs results files of glimprouter bench with routed steps"
        )
    return Analysis(
        h_init=tuple(h_init),
        step_entropy=tuple(step_entropy),
        files=tuple(str(p) for p in paths),
        questions=questions,
    )
