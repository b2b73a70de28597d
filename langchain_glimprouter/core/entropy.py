"""First-token entropy estimators over the top-k logprobs an OpenAI-compatible server returns.

A server returns only the ``k`` most probable next tokens (vLLM caps ``k`` with
``--max-logprobs``, 20 by default). Three estimators turn them into an entropy in nats:

``topk_renormalized`` (default)
    Renormalise the top-k probabilities to sum to one and take their entropy. This is what the
    GlimpRouter paper's reference code computes, so the paper's thresholds (0.01 ... 1.8) mean
    the same here. It ignores the residual mass ``r = 1 - sum(p_i)``, so it underestimates the
    entropy of flat distributions.

``topk_tail``
    Keep the true probabilities and add a bounded term for the residual mass: every token outside
    the top k is at most as likely as the least likely returned token ``p_min``, so the tail
    contributes at least ``-r * log(p_min)``. The result is a lower bound on the exact
    full-vocabulary entropy that tightens as ``r`` shrinks.

``topk_bounds``
    Bound the exact entropy in an interval, :func:`entropy_bounds`: the residual mass placed as
    concentrated as the top k allows (tokens of ``p_min`` each: the lower bound, at least
    ``topk_tail``) or spread evenly over the rest of the vocabulary (the upper bound). The
    estimate is a fixed share of the way up that gap, measured on a real model. Where the
    threshold lies outside the interval the routing decision is the exact entropy's; where it
    lies in the band of the gap that almost always holds the exact entropy, the router
    escalates that step alone (a 1-token probe with a larger k; see routing.md).

Where the server returns the whole distribution (``r`` about 0) all three are the exact entropy.

Plain Python computes a glimpse's 20 logprobs faster than numpy, which an escalation probe's
1,000 pay it back: :data:`NUMPY_FROM` picks (``python -m benchmarks.entropy_speed``).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Sized
from dataclasses import dataclass
from typing import Literal

Estimator = Literal["topk_renormalized", "topk_tail", "topk_bounds"]
ESTIMATORS: tuple[Estimator, ...] = ("topk_renormalized", "topk_tail", "topk_bounds")
VOCAB_BOUND = 262_144
"""The vocabulary size the upper bound assumes: at least that of every common model (Gemma 3's
262,144; Qwen's 151,936, Llama 3's 128,256, SmolLM2's 49,152). A larger vocabulary than the
model's only loosens the bound; :data:`LIKELY_SHARES` were measured with this value."""
ESTIMATE_SHARE = 0.30
"""Where the exact entropy lies between the bounds, as a share of their gap: the median over
SmolLM2-135M's distributions (0.30-0.31 for k = 5 ... 100, benchmarks/entropy_fidelity.py)."""
LIKELY_SHARES = ((20, 0.14, 0.47), (1, 0.02, 0.56))
"""``(least k, low, high)``: the band of the gap that held the exact entropy at 99.9 % of
SmolLM2-135M's positions (the 0.1 % and 99.9 % quantiles over prose and answers, rounded out;
wider for k < 20). A threshold inside the band is too close to call from the top k."""
Decision = Literal["certain", "estimated", "uncertain"]
NUMPY_FROM = 64
"""From this many logprobs on, numpy sorts and sums them (an escalation probe's 1,000, several
times faster than plain Python); below, plain Python does (a glimpse's 20, where numpy's cost
per call outweighs the work). Measured by ``benchmarks/entropy_speed.py``."""
_FINITE = (-math.inf).__lt__


@dataclass(frozen=True)
class EntropyBounds:
    """What the top-k logprobs say of the exact entropy (nats)."""

    lower: float
    """The residual mass as concentrated as the top k allow: a lower bound (>= ``topk_tail``)."""
    upper: float
    """The residual mass spread evenly over the rest of the vocabulary: an upper bound."""
    residual: float
    """``1 - sum(p_i)`` of the top k."""
    k: int
    """How many logprobs the bounds come from."""

    @property
    def estimate(self) -> float:
        """The exact entropy's likeliest value: :data:`ESTIMATE_SHARE` of the way up the gap."""
        return self.lower + ESTIMATE_SHARE * (self.upper - self.lower)

    @property
    def likely(self) -> tuple[float, float]:
        """Where the exact entropy almost always lies (:data:`LIKELY_SHARES`)."""
        low, high = next((lo, hi) for least, lo, hi in LIKELY_SHARES if self.k >= least)
        gap = self.upper - self.lower
        return self.lower + low * gap, self.lower + high * gap

    def decide(self, threshold: float) -> tuple[bool, Decision]:
        """Whether the step goes large (exact entropy above ``threshold``), and how sure that
        is: ``"certain"`` when the threshold lies outside the bounds (the exact entropy's own
        decision), ``"estimated"`` when it lies outside the likely band, ``"uncertain"`` when it
        lies inside (decided by the estimate; worth a look at more of the distribution)."""
        if self.lower > threshold:
            return True, "certain"
        if self.upper <= threshold:
            return False, "certain"
        low, high = self.likely
        how: Decision = "uncertain" if low <= threshold < high else "estimated"
        return self.estimate > threshold, how


def residual_mass(logprobs: Iterable[float]) -> float:
    """Probability mass outside the given logprobs, clamped to ``[0, 1]``."""
    return min(1.0, max(0.0, 1.0 - math.fsum(math.exp(lp) for lp in logprobs)))


_NO_FINITE = "no finite logprobs to estimate an entropy from"
_NO_TOKEN = "no logprobs of a token with a probability above zero"


def _top_sums(
    logprobs: Iterable[float], k: int | None, drop_zero: bool
) -> tuple[int, float, float, float]:
    """Of the ``k`` most probable finite logprobs (``None``: all; -inf and NaN are left out):
    how many, the least, and the sums of ``p_i`` and of ``p_i * lp_i`` (``p_i = exp(lp_i)``).
    With ``drop_zero`` a logprob whose probability is zero (vLLM writes log(0) as -9999) is no
    token: it counts among the k but is neither the least nor in the sums.

    numpy from :data:`NUMPY_FROM` logprobs on, plain Python below."""
    values = logprobs if isinstance(logprobs, Sized) else list(logprobs)
    if len(values) >= NUMPY_FROM:
        return _top_sums_numpy(values, k, drop_zero)
    lps = sorted(filter(_FINITE, values), reverse=True)
    if k is not None:
        del lps[k:]
    n = len(lps)
    if not n:
        raise ValueError(_NO_FINITE)
    while drop_zero and lps and math.exp(lps[-1]) == 0.0:
        lps.pop()
    if not lps:
        raise ValueError(_NO_TOKEN)
    probs = list(map(math.exp, lps))
    return n, lps[-1], sum(probs), sum(map(operator.mul, probs, lps))


def _top_sums_numpy(
    values: Iterable[float], k: int | None, drop_zero: bool
) -> tuple[int, float, float, float]:
    """:func:`_top_sums` with numpy (``values`` sized)."""
    import numpy as np  # here only: a glimpse never needs it

    every = np.fromiter(values, float)
    lps = np.sort(every[every > -np.inf])[::-1][:k]
    n = lps.size
    if not n:
        raise ValueError(_NO_FINITE)
    probs = np.exp(lps)
    if drop_zero:
        token = probs > 0.0
        lps, probs = lps[token], probs[token]
        if not lps.size:
            raise ValueError(_NO_TOKEN)
    return int(n), float(lps[-1]), float(probs.sum()), float(probs @ lps)


def entropy_bounds(logprobs: Iterable[float], k: int | None = None) -> EntropyBounds:
    """Bound the exact entropy of a next-token distribution from its top-k logprobs.

    Every token outside the top k is at most as likely as the least likely one returned,
    ``p_min``, and :data:`VOCAB_BOUND` minus k of them share the residual mass ``r``. The
    entropy is smallest when ``r`` sits on as few tokens as that allows (``floor(r / p_min)``
    tokens of ``p_min``, the remainder on one more) and largest when it is spread evenly.
    """
    n, lp_min, total, plp = _top_sums(logprobs, k, drop_zero=True)
    residual = min(1.0, max(0.0, 1.0 - total))
    head = max(0.0, -plp)
    rest = max(VOCAB_BOUND, n) - n
    if residual <= 0.0 or rest <= 0:
        return EntropyBounds(head, head, residual, n)
    p_min = math.exp(lp_min)
    ratio = residual / p_min  # inf for a denormal p_min
    full = rest if ratio >= rest else math.floor(ratio)
    remainder = max(0.0, residual - full * p_min)
    lower = head - full * p_min * lp_min
    if remainder > 0.0:
        lower -= remainder * math.log(remainder)
    spread = residual / rest
    upper = head - residual * math.log(spread) if spread <= p_min else lower
    return EntropyBounds(lower, max(lower, upper), residual, n)


def first_token_entropy(
    logprobs: Iterable[float], estimator: Estimator = "topk_renormalized", k: int | None = None
) -> tuple[float, float]:
    """Return ``(entropy in nats, residual mass)`` of a top-k next-token distribution.

    Args:
        logprobs: Natural-log probabilities of the returned candidate tokens, in any order.
        estimator: ``"topk_renormalized"`` or ``"topk_tail"`` (see the module docstring).
        k: Use only the ``k`` most probable candidates (servers may add the sampled token to
            the top k); ``None`` uses all of them.
    """
    if estimator == "topk_bounds":
        bounds = entropy_bounds(logprobs, k)
        return bounds.estimate, bounds.residual
    _, lp_min, total, plp = _top_sums(logprobs, k, drop_zero=False)
    residual = min(1.0, max(0.0, 1.0 - total))
    if estimator == "topk_renormalized":
        # -sum (p_i / total) * log(p_i / total), in one pass: log(total) - sum p_i lp_i / total
        h = math.log(total) - plp / total
    elif estimator == "topk_tail":
        h = -plp
        if residual > 0:
            h += -residual * lp_min
    else:
        raise ValueError(f"unknown entropy estimator {estimator!r}; choose one of {ESTIMATORS}")
    return max(0.0, h), residual
