"""How a step's writer is chosen: the routing strategies and the adaptive threshold.

One engine runs every strategy (see :mod:`~langchain_glimprouter.core.engine`); this module holds
what differs between them and needs no I/O: :data:`SPECS`, one :class:`StrategySpec` per
strategy (how a step's writer is chosen, what is measured and in which direction), the per-step
measures, and :class:`AdaptiveThreshold`, the online controller behind ``threshold="auto"``.

``glimpse`` (the product)
    The small model generates the step's first token; its entropy ``H_init`` (nats) decides.
    A step goes to the large model when ``H_init > threshold``.
``large_only`` / ``small_only``
    Baselines: one model writes every step and the final answer; nothing is measured.
``random``
    Each step goes to the large model with probability ``target_rate``: the same share of
    large steps as a router, chosen blindly.
``step_entropy`` / ``step_ppl``
    Generate, then measure: the small model writes the whole step (with logprobs); the mean
    per-token entropy of the step (nats), or its perplexity ``exp(-mean logprob)``, decides.
    Above ``threshold`` the step is thrown away and the large model writes it again.
``specreason``
    The small model writes the step; the large model scores it with one token after a judge
    prompt (:data:`JUDGE_PROMPT`), the probability-weighted digit 0-9 among its top-k. Below
    ``threshold`` the step is thrown away and the large model writes it again.
"""

from __future__ import annotations

import bisect
import math
import random
import threading
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from langchain_glimprouter.core.entropy import Estimator, first_token_entropy

Strategy = Literal[
    "glimpse", "large_only", "small_only", "random", "step_entropy", "step_ppl", "specreason"
]
Decider = Literal["glimpse", "draft", "coin", "none"]
Measure = Literal["h_init", "mean_entropy", "perplexity", "judge"]


@dataclass(frozen=True)
class StrategySpec:
    """Everything that sets one strategy apart; the step loop reads this, never the name."""

    name: Strategy
    decider: Decider
    """How a step's writer is chosen: a glimpse of its first token, a whole draft by the small
    model then a measure of it, a coin (``target_rate``), or nothing (one model writes all)."""
    measure: Measure | None = None
    """What is compared with the threshold (None: nothing is measured)."""
    writer: Literal["small", "large"] | None = None
    """``decider="none"``: the model that writes every step and the answer."""
    draft_logprobs: Literal["top", "one"] | None = None
    """``decider="draft"``: logprobs asked with the draft: the top k (its own measure and the
    step start's H_init), the sampled token's only, or none (the judge needs none)."""
    inverted: bool = False
    """A higher measure means an easier step (the judge's score): turned around to compare."""

    @property
    def measured(self) -> bool:
        """Whether a threshold applies (and so ``threshold="auto"``'s controller can)."""
        return self.measure is not None

    def difficulty(self, value: float) -> float:
        """The measure oriented so that larger means harder (more reason to go large); its own
        inverse, so it also turns a threshold of difficulty back into one of the measure."""
        return -value if self.inverted else value


SPECS: dict[Strategy, StrategySpec] = {
    spec.name: spec
    for spec in (
        StrategySpec("glimpse", "glimpse", "h_init"),
        StrategySpec("large_only", "none", writer="large"),
        StrategySpec("small_only", "none", writer="small"),
        StrategySpec("random", "coin"),
        StrategySpec("step_entropy", "draft", "mean_entropy", draft_logprobs="top"),
        StrategySpec("step_ppl", "draft", "perplexity", draft_logprobs="one"),
        StrategySpec("specreason", "draft", "judge", inverted=True),
    )
}
STRATEGIES: tuple[Strategy, ...] = tuple(SPECS)


def spec_named(name: object) -> StrategySpec | None:
    """The spec of the strategy called ``name``; None for no such strategy (a name read from a
    results file, say)."""
    return next((spec for spec in SPECS.values() if spec.name == name), None)


JUDGE_PROMPT = (
    "\n\nQuality check of the step above, from 0 (wrong or useless) to 9 (correct and "
    "useful). Score:"
)
"""Appended to the large model's own prompt after a small model's step (``specreason``). The
large model continues its chain with this line and writes one token; the step's score is the
mean of the digits 0-9 weighted by their probabilities in that token's top-k."""


def mean_step_entropy(
    tops: Sequence[Mapping[str, float]], estimator: Estimator = "topk_renormalized", k: int = 20
) -> float:
    """Mean over a step's tokens of each position's top-k entropy (nats)."""
    values = [first_token_entropy(top.values(), estimator, k=k)[0] for top in tops if top]
    if not values:
        raise ValueError("no token of the step has top logprobs")
    return math.fsum(values) / len(values)


def perplexity(token_logprobs: Iterable[float | None]) -> float:
    """``exp(-mean logprob)`` of a step's sampled tokens."""
    values = [lp for lp in token_logprobs if lp is not None and lp > -math.inf]
    if not values:
        raise ValueError("no token of the step has a logprob")
    return math.exp(-math.fsum(values) / len(values))


def judge_score(top: Mapping[str, float]) -> float:
    """The expected digit 0-9 of a judge's one-token answer, from its top-k logprobs (tokens
    are stripped of whitespace; several spellings of one digit add up). 0 when no digit is
    among them: a judge that does not answer with a score rejects the step."""
    mass = dict.fromkeys(range(10), 0.0)
    for token, lp in top.items():
        if (digit := token.strip()).isdigit() and len(digit) == 1:
            mass[int(digit)] += math.exp(lp)
    total = math.fsum(mass.values())
    if total <= 0:
        return 0.0
    return math.fsum(d * p for d, p in mass.items()) / total


class AdaptiveThreshold:
    """An online quantile controller: it keeps the share of steps sent to the large model near
    ``target_rate`` across a stream of questions (``threshold="auto"``).

    Each measured step adds its difficulty to a sliding window of the last ``window`` values,
    and goes large when it lies in the window's top ``target_rate`` share. Where equal values
    straddle the cut (entropies of exactly 0, say), each of them goes large with the probability
    that makes the expected share exact. The window follows a drifting distribution, so the
    rate comes back to the target a window after a change of questions. One controller is
    shared by every call of a router (thread-safe), so the rate holds across the whole stream,
    not per question; the first few steps of a fresh controller have little history to go by.
    """

    def __init__(self, target_rate: float, window: int = 512, seed: int | None = None) -> None:
        if not 0.0 < target_rate < 1.0:
            raise ValueError(f"target_rate must be in (0, 1) (got {target_rate})")
        if window < 1:
            raise ValueError(f"window must be >= 1 (got {window})")
        self.target_rate = target_rate
        self.window = window
        self._values: deque[float] = deque(maxlen=window)
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.decisions = 0
        self.large = 0

    def route(self, value: float) -> tuple[bool, float]:
        """Observe one step's difficulty; return (go large, the threshold now in effect)."""
        with self._lock:
            self._values.append(value)
            ordered = sorted(self._values)
            n = len(ordered)
            low, high = bisect.bisect_left(ordered, value), bisect.bisect_right(ordered, value)
            above, equal = n - high, high - low
            chance = min(1.0, max(0.0, (self.target_rate * n - above) / equal))
            large = chance >= 1.0 or (chance > 0.0 and self._rng.random() < chance)
            self.decisions += 1
            self.large += large
            return large, self._threshold(ordered)

    def _threshold(self, ordered: Sequence[float]) -> float:
        """The window's ``1 - target_rate`` quantile: values above it go large."""
        n = len(ordered)
        return ordered[max(0, n - 1 - math.floor(self.target_rate * n))]

    @property
    def threshold(self) -> float | None:
        """The threshold now in effect (None before the first step)."""
        with self._lock:
            return self._threshold(sorted(self._values)) if self._values else None

    @property
    def realised_rate(self) -> float:
        """Share of the steps decided so far that went to the large model."""
        with self._lock:
            return self.large / self.decisions if self.decisions else 0.0
