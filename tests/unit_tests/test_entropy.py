"""Entropy estimators against distributions whose entropy is known exactly."""

from __future__ import annotations

import math
import random

import pytest

from langchain_glimprouter.core import entropy
from langchain_glimprouter.core.entropy import entropy_bounds, first_token_entropy, residual_mass


def exact(probs: list[float]) -> float:
    return -sum(p * math.log(p) for p in probs if p > 0)


def test_full_distribution_gives_exact_entropy_with_both_estimators() -> None:
    probs = [0.5, 0.25, 0.125, 0.125]
    logprobs = [math.log(p) for p in probs]
    for estimator in ("topk_renormalized", "topk_tail"):
        h, r = first_token_entropy(logprobs, estimator)  # type: ignore[arg-type]
        assert h == pytest.approx(exact(probs))
        assert r == pytest.approx(0.0, abs=1e-12)


def test_renormalized_matches_the_reference_computation() -> None:
    # The paper's reference code: softmax over the top-k logprobs, then -sum p log p.
    logprobs = [-0.3, -2.1, -3.0, -4.5]
    z = sum(math.exp(lp) for lp in logprobs)
    renormalized = [math.exp(lp) / z for lp in logprobs]
    h, r = first_token_entropy(logprobs)
    assert h == pytest.approx(exact(renormalized))
    assert r == pytest.approx(1 - z)


def test_tail_estimator_is_a_lower_bound_of_the_exact_entropy() -> None:
    # A 100-token distribution; the server returns its top 5.
    weights = [1 / (i + 1) ** 1.2 for i in range(100)]
    total = sum(weights)
    probs = [w / total for w in weights]
    top = [math.log(p) for p in probs[:5]]
    h_tail, r = first_token_entropy(top, "topk_tail")
    h_renorm, _ = first_token_entropy(top, "topk_renormalized")
    assert r == pytest.approx(sum(probs[5:]))
    assert h_renorm < h_tail <= exact(probs)


def test_k_keeps_the_most_probable_candidates() -> None:
    # vLLM adds the sampled token when it is outside the top k: k drops it again.
    logprobs = [-0.1, -3.0, -9.0]
    assert first_token_entropy(logprobs, k=2) == first_token_entropy(logprobs[:2])


def test_degenerate_inputs() -> None:
    assert first_token_entropy([0.0]) == (0.0, 0.0)
    assert residual_mass([math.log(0.3), math.log(0.3)]) == pytest.approx(0.4)
    with pytest.raises(ValueError, match="no finite logprobs"):
        first_token_entropy([-math.inf])
    with pytest.raises(ValueError, match="unknown entropy estimator"):
        first_token_entropy([-0.1], "bogus")  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("k", [1, 5, 20])
def test_bounds_hold_the_exact_entropy(seed: int, k: int) -> None:
    rng = random.Random(seed)
    size = rng.choice([30, 1000, 5000])
    weights = [rng.paretovariate(rng.uniform(0.3, 3.0)) for _ in range(size)]
    total = sum(weights)
    probs = sorted((w / total for w in weights), reverse=True)
    top = [math.log(p) for p in probs[:k]]
    bounds = entropy_bounds(top, k)
    h = exact(probs)
    assert bounds.lower - 1e-9 <= h <= bounds.upper + 1e-9
    assert bounds.lower <= bounds.estimate <= bounds.upper
    assert bounds.lower >= first_token_entropy(top, "topk_tail")[0] - 1e-9  # a tighter bound
    assert first_token_entropy(top, "topk_bounds") == (bounds.estimate, bounds.residual)
    low, high = bounds.likely
    assert bounds.lower <= low <= high <= bounds.upper


def test_bounds_of_a_whole_distribution_are_its_entropy() -> None:
    probs = [0.5, 0.25, 0.125, 0.125]
    bounds = entropy_bounds([math.log(p) for p in probs])
    assert bounds.lower == pytest.approx(exact(probs))
    assert bounds.upper == pytest.approx(exact(probs))
    assert bounds.decide(exact(probs) - 1e-6) == (True, "certain")
    assert bounds.decide(exact(probs) + 1e-6) == (False, "certain")


def test_a_decision_says_how_sure_it_is() -> None:
    bounds = entropy_bounds([math.log(0.6), math.log(0.2), math.log(0.1)], k=3)  # r = 0.1
    low, high = bounds.likely
    assert bounds.decide(bounds.lower - 0.01) == (True, "certain")
    assert bounds.decide(bounds.upper) == (False, "certain")
    assert bounds.decide((low + high) / 2)[1] == "uncertain"
    assert bounds.decide((bounds.lower + low) / 2) == (True, "estimated")  # below the band
    assert bounds.decide((high + bounds.upper) / 2) == (False, "estimated")


def test_log_zero_entries_are_no_tokens() -> None:
    """vLLM writes log(0) as -9999: such an entry is no token, not a tiny p_min."""
    bounds = entropy_bounds([math.log(0.95), -9999.0, -9999.0], k=3)
    assert bounds.residual == pytest.approx(0.05)
    assert bounds.lower < bounds.upper


def test_a_vanishing_least_probability_bounds_nothing_away() -> None:
    """A least probability so small (a denormal float) that the residual over it overflows:
    the residual is spread over the whole rest of the vocabulary, with no OverflowError."""
    bounds = entropy_bounds([math.log(0.95), -744.0], k=2)
    assert bounds.residual == pytest.approx(0.05)
    assert 0.0 < bounds.lower <= bounds.upper


@pytest.mark.parametrize("size", [3, 20, 1000])
def test_numpy_and_plain_python_sums_agree(monkeypatch: pytest.MonkeyPatch, size: int) -> None:
    """Wide distributions (an escalation probe's 1,000 logprobs) are summed with numpy, a
    glimpse's 20 in plain Python (faster there): both give the same entropies."""
    assert 20 < entropy.NUMPY_FROM <= 1000  # a glimpse in plain Python, a probe with numpy
    rng = random.Random(size)
    weights = [rng.paretovariate(1.2) for _ in range(size * 5)]
    total = sum(weights)
    top = {str(i): math.log(w / total) for i, w in enumerate(weights[:size])} | {"x": -9999.0}
    results = []
    for numpy_from in (math.inf, 0):
        monkeypatch.setattr(entropy, "NUMPY_FROM", numpy_from)
        results.append(
            [first_token_entropy(top.values(), e, k=size) for e in entropy.ESTIMATORS]
            + [entropy_bounds(top.values(), k=size + 1)]
        )
    plain, numpy = results
    for a, b in zip(plain[:-1], numpy[:-1], strict=True):
        assert a == pytest.approx(b, rel=1e-12)
    assert (plain[-1].lower, plain[-1].upper) == pytest.approx((numpy[-1].lower, numpy[-1].upper))
