"""Entropy estimators against distributions whose entropy is known exactly."""

from __future__ import annotations

import math

import pytest

from langchain_glimprouter.entropy import first_token_entropy, residual_mass


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
