"""Statistics of a benchmark run, with numpy: quantiles, and bootstrap 95 % confidence intervals
over questions, so that a difference on a 40-question set can be told from noise.

Every interval resamples *questions* (with replacement, ``RESAMPLES`` times, a fixed seed so a
report is reproducible) and takes the 2.5 and 97.5 percentiles of the statistic: the share of
correct answers, the step-weighted intervention rate (large steps over all steps of the
resampled questions), the median latency, and the ratio of two runs' mean latencies over the
questions both answered (paired: the same questions in each resample).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

RESAMPLES = 2000
"""Bootstrap resamples per interval (2,000 give the 2.5/97.5 % ends to about ±0.5 % of n)."""
SEED = 0
LEVEL = 0.95
QUANTILES = (0.1, 0.5, 0.9)
"""The latency quantiles a summary reports."""

Interval = tuple[float, float]
Floats = npt.NDArray[np.float64]


def _resample(n: int) -> npt.NDArray[np.intp]:
    """``RESAMPLES`` rows of ``n`` question indices drawn with replacement."""
    return np.random.default_rng(SEED).integers(0, n, size=(RESAMPLES, n))


def _ends(samples: Floats) -> Interval:
    tail = (1.0 - LEVEL) / 2 * 100
    lo, hi = np.nanpercentile(samples, [tail, 100 - tail])
    return float(lo), float(hi)


def mean_ci(values: Sequence[float]) -> Interval | None:
    """The interval of the mean (for 0/1 values: of a share, such as accuracy)."""
    if not values:
        return None
    data = np.asarray(values, dtype=np.float64)
    return _ends(data[_resample(len(data))].mean(axis=1))


def ratio_of_sums_ci(numerators: Sequence[float], denominators: Sequence[float]) -> Interval | None:
    """The interval of ``sum(numerators) / sum(denominators)`` (a step-weighted rate)."""
    if not numerators or sum(denominators) <= 0:
        return None
    num, den = np.asarray(numerators, dtype=np.float64), np.asarray(denominators, np.float64)
    idx = _resample(len(num))
    sums = den[idx].sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return _ends(np.where(sums > 0, num[idx].sum(axis=1) / sums, np.nan))


def median_ci(values: Sequence[float]) -> Interval | None:
    """The interval of the median."""
    if not values:
        return None
    data = np.asarray(values, dtype=np.float64)
    return _ends(np.median(data[_resample(len(data))], axis=1))


def quantiles(values: Sequence[float], qs: Sequence[float] = QUANTILES) -> dict[float, float]:
    """The quantiles ``qs`` of ``values`` (numpy's linear interpolation); empty without values."""
    if not values:
        return {}
    return {q: float(v) for q, v in zip(qs, np.quantile(values, qs), strict=True)}


def paired_ratio(
    run: Mapping[str, float], baseline: Mapping[str, float]
) -> tuple[float, Interval] | None:
    """Mean of ``run`` over mean of ``baseline`` on the questions both have (ids as keys), with
    its interval from resampling those questions together. None without shared questions."""
    shared = sorted(run.keys() & baseline.keys())
    if not shared:
        return None
    a = np.asarray([run[q] for q in shared], dtype=np.float64)
    b = np.asarray([baseline[q] for q in shared], dtype=np.float64)
    if b.sum() <= 0:
        return None
    idx = _resample(len(shared))
    return float(a.sum() / b.sum()), _ends(a[idx].sum(axis=1) / b[idx].sum(axis=1))


def upper_quantile_ci(groups: Sequence[Sequence[float]], q: float) -> Interval | None:
    """The interval of the ``q`` upper quantile (the smallest value with at most a share
    ``1 - q`` above it, as :func:`~langchain_glimprouter.calibration.upper_quantile`) of the
    values of resampled *groups* (questions: a question's step starts go together)."""
    arrays = [np.asarray(g, dtype=np.float64) for g in groups if len(g)]
    if not arrays:
        return None
    samples = np.empty(RESAMPLES)
    for row, picks in enumerate(_resample(len(arrays))):
        values = np.sort(np.concatenate([arrays[i] for i in picks]))
        # the value at 1-based rank ceil(q * n), with calibration's slack for rounding
        rank = max(1, int(np.ceil(q * len(values) - 1e-9)))
        samples[row] = values[rank - 1]
    return _ends(samples)
