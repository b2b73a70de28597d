"""The other routing strategies and threshold='auto' against the two real vLLM CPU servers: the
record's requests and tokens against the servers' own counters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from langchain_glimprouter.core.strategies import AdaptiveThreshold
from tests.support.accounting import written

from .conftest import Pair, assert_tokens, counts, tiny_model_missed
from .test_vllm_routing import messages, router


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {key: after[key] - before[key] for key in after}


def mixed_run(
    pair: Pair, tau: float, check: Callable[[dict[str, Any], dict[str, int]], None], **settings: Any
) -> None:
    """Routed calls held to the servers' counters by ``check``, until one whose chain mixes
    kept and rewritten steps (sampling decides: seeds are tried; see tiny_model_missed)."""
    for seed in range(1, 9):
        before = counts(pair)
        msg = router(pair, tau, seed=seed, **settings).invoke(messages())
        rec: dict[str, Any] = msg.response_metadata["glimprouter"]
        check(rec, delta(counts(pair), before))
        if 0 < rec["n_large_steps"] < rec["n_steps"]:
            return
    tiny_model_missed(f"no chain mixed small and large steps with {settings} at {tau}")


def tokens_match(rec: dict[str, Any], servers: dict[str, int], cap: int) -> None:
    """What each server decoded is what the record counts (see assert_tokens)."""
    for role in ("small", "large"):
        assert_tokens(servers, dict.fromkeys(servers, 0), rec, role, cap)


def test_step_entropy_drafts_then_rewrites(vllm_pair: Pair) -> None:
    """SmolLM2's steps have mean token entropies around 0.5-1.5 nats."""
    tau = 1.0

    def check(rec: dict[str, Any], servers: dict[str, int]) -> None:
        assert rec["strategy"] == "step_entropy"
        for step in rec["steps"]:
            assert step["score"] is not None
            assert step["threshold"] == tau
            assert step["model"] == ("large" if step["score"] > tau else "small")
            assert step["h_init"] is not None  # the draft's first token is the glimpse
        rewritten = [s for s in written(rec) if s["model"] == "large"]
        # Each step: one small draft run to its end; a rewrite adds one large request.
        assert servers["small"] == rec["requests"]["small"] == len(written(rec))
        assert servers["large"] == rec["requests"]["large"] == len(rewritten) + 1
        assert all(s["wasted_tokens"] > 1 for s in rec["steps"] if s["model"] == "large")
        tokens_match(rec, servers, cap=160)

    mixed_run(vllm_pair, tau, check, strategy="step_entropy", max_reasoning_tokens=160)


def test_specreason_judges_with_one_large_token(vllm_pair: Pair) -> None:
    tau = 5.0

    def check(rec: dict[str, Any], servers: dict[str, int]) -> None:
        judged = [s for s in written(rec) if s["score"] is not None]
        assert all(0.0 <= s["score"] <= 9.0 for s in judged)
        for step in judged:
            assert step["model"] == ("large" if step["score"] < tau else "small")
        rewritten = sum(s["model"] == "large" for s in written(rec))
        # A judge per drafted step, a rewrite per rejected one, the answer.
        assert servers["large"] == rec["requests"]["large"] == len(judged) + rewritten + 1
        assert servers["small"] == rec["requests"]["small"]
        tokens_match(rec, servers, cap=160)

    mixed_run(vllm_pair, tau, check, strategy="specreason", max_reasoning_tokens=160)


def test_small_only_never_asks_the_large_server(vllm_pair: Pair) -> None:
    before = counts(vllm_pair)
    msg = router(vllm_pair, 0.9, strategy="small_only").invoke(messages())
    servers = delta(counts(vllm_pair), before)
    rec = msg.response_metadata["glimprouter"]
    assert servers["large"] == rec["requests"]["large"] == 0
    assert servers["small"] == rec["requests"]["small"] == len(written(rec)) + 1
    tokens_match(rec, servers, cap=96)
    assert msg.response_metadata["model_name"] == vllm_pair.large.model  # the router's name


def test_auto_threshold_across_calls(vllm_pair: Pair) -> None:
    """The controller's decisions on real entropies, across calls: replayed through a fresh
    controller with the same seed, the measured H_init values give the same decisions and
    thresholds, step by step (whatever the tiny model wrote)."""
    model = router(vllm_pair, "auto", target_rate=0.5, max_reasoning_tokens=128)
    decided = []
    for seed in range(3):
        msg = model.invoke(messages(), seed=seed)
        decided += [
            s for s in written(msg.response_metadata["glimprouter"]) if s["h_init"] is not None
        ]
    controller = model.adaptive_threshold
    assert controller is not None
    assert controller.decisions == len(decided) >= 1
    replay = AdaptiveThreshold(0.5, seed=model.seed)
    for step in decided:
        large, tau = replay.route(step["h_init"])
        assert step["model"] == ("large" if large else "small")
        assert step["threshold"] == pytest.approx(tau)
    assert controller.realised_rate == replay.realised_rate
    assert controller.threshold == replay.threshold
