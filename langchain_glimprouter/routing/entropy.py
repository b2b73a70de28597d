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
"""

from __future__ import annotations

import math
from collections.abc import Iterable
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


def _sorted_top(logprobs: Iterable[float], k: int | None) -> list[float]:
    lps = sorted((lp for lp in logprobs if lp > -math.inf), reverse=True)
    if k is not None:
        lps = lps[:k]
    if not lps:
        raise ValueError("no finite logprobs to estimate an entropy from")
    return lps


def entropy_bounds(logprobs: Iterable[float], k: int | None = None) -> EntropyBounds:
    """Bound the exact entropy of a next-token distribution from its top-k logprobs.

    Every token outside the top k is at most as likely as the least likely one returned,
    ``p_min``, and :data:`VOCAB_BOUND` minus k of them share the residual mass ``r``. The
    entropy is smallest when ``r`` sits on as few tokens as that allows (``floor(r / p_min)``
    tokens of ``p_min``, the remainder on one more) and largest when it is spread evenly.
    """
    lps = _sorted_top(logprobs, k)
    n = len(lps)
    lps = [lp for lp in lps if math.exp(lp) > 0.0]  # vLLM writes log(0) as -9999
    if not lps:
        raise ValueError("no logprobs of a token with a probability above zero")
    probs = [math.exp(lp) for lp in lps]
    residual = min(1.0, max(0.0, 1.0 - math.fsum(probs)))
    head = max(0.0, -math.fsum(p * lp for p, lp in zip(probs, lps, strict=True)))
    rest = max(VOCAB_BOUND, n) - n
    if residual <= 0.0 or rest <= 0:
        return EntropyBounds(head, head, residual, n)
    p_min, lp_min = probs[-1], lps[-1]
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
    lps = _sorted_top(logprobs, k)
    probs = [math.exp(lp) for lp in lps]
    total = math.fsum(probs)
    residual = min(1.0, max(0.0, 1.0 - total))
    if estimator == "topk_renormalized":
        log_total = math.log(total)
        h = -math.fsum((p / total) * (lp - log_total) for p, lp in zip(probs, lps, strict=True))
    elif estimator == "topk_tail":
        h = -math.fsum(p * lp for p, lp in zip(probs, lps, strict=True))
        if residual > 0:
            h += -residual * lps[-1]
    else:
        raise ValueError(f"unknown entropy estimator {estimator!r}; choose one of {ESTIMATORS}")
    return max(0.0, h), residual
