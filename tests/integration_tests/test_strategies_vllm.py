"""The other routing strategies and threshold='auto' against the two real vLLM CPU servers: the
record's requests and tokens against the servers' own counters."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import Pair, counts
from .test_vllm_routing import messages, router


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {key: after[key] - before[key] for key in after}


def mixed_run(pair: Pair, tau: float, **settings: Any) -> tuple[dict[str, Any], dict[str, int]]:
    """A routed call whose chain mixes kept and rewritten steps (sampling decides: try seeds)."""
    for seed in range(1, 9):
        before = counts(pair)
        msg = router(pair, tau, seed=seed, **settings).invoke(messages())
        rec: dict[str, Any] = msg.response_metadata["glimprouter"]
        if 0 < rec["n_large_steps"] < rec["n_steps"]:
            return rec, delta(counts(pair), before)
    pytest.fail(f"no chain mixed small and large steps with {settings} at {tau}")


def test_step_entropy_drafts_then_rewrites(vllm_pair: Pair) -> None:
    """SmolLM2's steps have mean token entropies around 0.5-1.5 nats."""
    tau = 1.0
    rec, servers = mixed_run(vllm_pair, tau, strategy="step_entropy", max_reasoning_tokens=160)
    assert rec["strategy"] == "step_entropy"
    for step in rec["steps"]:
        assert step["score"] is not None
        assert step["threshold"] == tau
        assert step["model"] == ("large" if step["score"] > tau else "small")
        # The draft's first token is the glimpse: its entropy is never above the mean's range.
        assert step["h_init"] is not None
    rewritten = [s for s in rec["steps"] if s["model"] == "large"]
    # Each step: one small draft run to its end; a rewrite adds one large request.
    assert servers["small"] == rec["requests"]["small"]
    assert servers["large"] == rec["requests"]["large"] == len(rewritten) + 1
    assert all(s["wasted_tokens"] > 1 for s in rewritten)  # a whole draft thrown away
    assert servers["small_tokens"] == rec["tokens"]["small"]  # no draft was cut
    assert servers["large_tokens"] == rec["tokens"]["large"]


def test_specreason_judges_with_one_large_token(vllm_pair: Pair) -> None:
    tau = 5.0
    rec, servers = mixed_run(vllm_pair, tau, strategy="specreason", max_reasoning_tokens=160)
    judged = [s for s in rec["steps"] if s["score"] is not None]
    assert judged
    assert all(0.0 <= s["score"] <= 9.0 for s in judged)
    for step in judged:
        assert step["model"] == ("large" if step["score"] < tau else "small")
    rewritten = sum(s["model"] == "large" for s in rec["steps"])
    # A judge per drafted step, a rewrite per rejected one, the answer.
    assert servers["large"] == rec["requests"]["large"] == len(judged) + rewritten + 1
    assert servers["small"] == rec["requests"]["small"]
    assert servers["large_tokens"] == rec["tokens"]["large"]


def test_small_only_never_asks_the_large_server(vllm_pair: Pair) -> None:
    before = counts(vllm_pair)
    msg = router(vllm_pair, 0.9, strategy="small_only").invoke(messages())
    servers = delta(counts(vllm_pair), before)
    rec = msg.response_metadata["glimprouter"]
    assert servers["large"] == rec["requests"]["large"] == 0
    assert servers["small"] == rec["requests"]["small"] == rec["n_steps"] + 1
    assert servers["small_tokens"] == rec["tokens"]["small"]
    assert msg.response_metadata["model_name"] == vllm_pair.large.model  # the router's name


def test_auto_threshold_across_calls(vllm_pair: Pair) -> None:
    model = router(vllm_pair, "auto", target_rate=0.5, max_reasoning_tokens=128)
    steps = []
    for seed in range(3):
        msg = model.invoke(messages(), seed=seed)
        steps += msg.response_metadata["glimprouter"]["steps"]
    controller = model.adaptive_threshold
    assert controller is not None
    assert controller.decisions >= len(steps)
    for step in steps:
        if step["h_init"] is not None and step["h_init"] != pytest.approx(step["threshold"]):
            assert (step["model"] == "large") == (step["h_init"] > step["threshold"])
    # Real entropies, a short stream: the share is near the target, not on it.
    assert 0.15 <= controller.realised_rate <= 0.85
