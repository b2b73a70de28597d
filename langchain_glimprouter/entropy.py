"""First-token entropy estimators over the top-k logprobs an OpenAI-compatible server returns.

A server returns only the ``k`` most probable next tokens (vLLM caps ``k`` with
``--max-logprobs``, 20 by default). Two estimators turn them into an entropy in nats:

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

Where the server returns the whole distribution (``r`` about 0) both are the exact entropy.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal

Estimator = Literal["topk_renormalized", "topk_tail"]
ESTIMATORS: tuple[Estimator, ...] = ("topk_renormalized", "topk_tail")


def residual_mass(logprobs: Iterable[float]) -> float:
    """Probability mass outside the given logprobs, clamped to ``[0, 1]``."""
    return min(1.0, max(0.0, 1.0 - math.fsum(math.exp(lp) for lp in logprobs)))


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
    lps = sorted((lp for lp in logprobs if lp > -math.inf), reverse=True)
    if k is not None:
        lps = lps[:k]
    if not lps:
        raise ValueError("no finite logprobs to estimate an entropy from")
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
