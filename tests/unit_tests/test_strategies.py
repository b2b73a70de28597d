"""Every routing strategy, the adaptive threshold and the step segmenter, on scripted servers."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from langchain_glimprouter import InvalidArgumentError
from langchain_glimprouter.core.entropy import first_token_entropy
from langchain_glimprouter.core.generation import Generation, ended_by
from langchain_glimprouter.core.strategies import (
    AdaptiveThreshold,
    judge_score,
    mean_step_entropy,
    perplexity,
)
from scripted_server import Script, later_top_logprobs
from tests.support.pair import LARGE_STEPS, SMALL_STEPS, router_for

QUESTION = "What is 6 times 7?"


def steps_of(msg: Any) -> list[dict[str, Any]]:
    return list(msg.response_metadata["glimprouter"]["steps"])


# -- the measures ---------------------------------------------------------------------------------


def test_measures_by_hand() -> None:
    certain = {"a": 0.0}
    even = {t: math.log(0.25) for t in "abcd"}
    assert mean_step_entropy([certain, even]) == pytest.approx(math.log(4) / 2)
    assert perplexity([math.log(0.5), math.log(0.5), None]) == pytest.approx(2.0)
    assert judge_score({"7": math.log(0.5), " 9": math.log(0.5), "x": -1.0}) == pytest.approx(8.0)
    assert judge_score({"7": -0.1, "07": -1.0, "x": -0.2}) == pytest.approx(7.0)
    assert judge_score({"great": -0.1}) == 0.0  # no score given: the step is rejected
    with pytest.raises(ValueError, match="no token"):
        mean_step_entropy([{}, {}])
    with pytest.raises(ValueError, match="no token"):
        perplexity([None])


# -- baselines ------------------------------------------------------------------------------------


def test_large_only_never_asks_the_small_server(servers: Any) -> None:
    small, large = servers()
    msg = router_for(small, large, strategy="large_only", threshold=math.inf).invoke(QUESTION)
    rec = msg.response_metadata["glimprouter"]
    assert rec["strategy"] == "large_only"
    assert [s["model"] for s in rec["steps"]] == ["large"] * 4
    assert small.requests == []
    # 4 steps, the request that finds "</think>", the answer.
    assert rec["requests"] == {"small": 0, "large": 6}
    assert all(s["h_init"] is None and s["score"] is None for s in rec["steps"])


def test_small_only_writes_the_answer_too(servers: Any) -> None:
    small, large = servers(small=Script(steps=SMALL_STEPS, answer="Small says 41."))
    msg = router_for(small, large, strategy="small_only").invoke(QUESTION)
    rec = msg.response_metadata["glimprouter"]
    assert [s["model"] for s in rec["steps"]] == ["small"] * 4
    assert msg.content == "Small says 41."
    assert large.requests == []
    assert rec["requests"] == {"small": 6, "large": 0}
    assert all("logprobs" not in log.params for log in small.requests)  # nothing measured
    assert rec["tokens"]["small"] == rec["reasoning_tokens"] + rec["answer_tokens"]


def test_random_is_seeded_and_asks_only_the_writer(servers: Any) -> None:
    steps = [f"small step {i}" for i in range(12)]
    small, large = servers(
        small=Script(steps=steps),
        large=Script(steps=[s.replace("small", "large") for s in steps]),
    )
    router = router_for(small, large, strategy="random", target_rate=0.5, seed=3)
    first = [s["model"] for s in steps_of(router.invoke(QUESTION))]
    assert [s["model"] for s in steps_of(router.invoke(QUESTION))] == first
    coin = random.Random(3)
    # 12 steps and the one that finds "</think>"; no glimpse: one request at the writer each.
    flips = ["large" if coin.random() < 0.5 else "small" for _ in range(13)]
    assert first == flips[:12]
    assert 0 < first.count("large") < 12
    assert len(small.requests) == 2 * flips.count("small")  # two calls
    assert len(large.requests) == 2 * (flips.count("large") + 1)


# -- generate, then measure -----------------------------------------------------------------------


def test_step_entropy_rewrites_the_steps_above_the_threshold(servers: Any) -> None:
    small, large = servers()
    later = first_token_entropy(later_top_logprobs("x", 20).values(), k=20)[0]
    tau = (1.0 + 4 * later) / 5  # a first token at H_INIT 1.0, the rest low
    msg = router_for(small, large, strategy="step_entropy", threshold=tau).invoke(QUESTION)
    rec = msg.response_metadata["glimprouter"]
    models = []
    for step, h in zip(rec["steps"], [0.2, 1.5, 0.1, 2.0], strict=True):
        # 5 tokens per small step (4 words and the delimiter): the first at H_INIT, the rest low.
        assert step["h_init"] == pytest.approx(h, abs=1e-6)
        assert step["score"] == pytest.approx((h + 4 * later) / 5, abs=1e-6)
        assert step["threshold"] == tau
        models.append("large" if step["score"] > tau else "small")
    assert [s["model"] for s in rec["steps"]] == models == ["small", "large", "small", "large"]
    texts = [(SMALL_STEPS if m == "small" else LARGE_STEPS)[i] for i, m in enumerate(models)]
    assert msg.additional_kwargs["reasoning_content"] == "\n\n".join(texts)
    # A rejected step was written whole by the small model first: its tokens are wasted.
    for step in rec["steps"]:
        assert step["wasted_tokens"] == (5 if step["model"] == "large" else 0)
    assert rec["wasted_small_tokens"] == 10
    # Drafts run to their end. (The last one, closed on "</think>", may have reached its
    # delimiter, one token later, before the server saw the close: not asserted.)
    assert [log.finished for log in small.requests[:4]] == [True] * 4
    assert len(small.requests) == 5
    assert all(log.params["logprobs"] == 20 for log in small.requests)
    assert rec["requests"] == {"small": 5, "large": 3}


@pytest.mark.parametrize(("tau", "model"), [(1.01, "large"), (1.03, "small")])
def test_step_ppl_measures_the_sampled_tokens(servers: Any, tau: float, model: str) -> None:
    # With logprobs=1 the scripted server gives every step's first token log(0.95) (its top-1
    # holds all but the residual mass) and the rest -0.01: one perplexity for every step.
    ppl = math.exp(-(math.log(0.95) - 4 * 0.01) / 5)
    small, large = servers()
    msg = router_for(small, large, strategy="step_ppl", threshold=tau).invoke(QUESTION)
    rec = msg.response_metadata["glimprouter"]
    assert [s["score"] for s in rec["steps"]] == pytest.approx([ppl] * 4)
    assert [s["model"] for s in rec["steps"]] == [model] * 4
    assert all(s["h_init"] is None for s in rec["steps"])  # no first-token distribution
    assert all(log.params["logprobs"] == 1 for log in small.requests)


def test_specreason_asks_the_large_model_to_score_each_step(servers: Any) -> None:
    # The judge's token is the first word the large model would write next: the digit that
    # opens its step k+1 (after a small step k and the judge prompt).
    judged = ["8 large zero", "3 large one", "9 large two", "1 large three"]
    small, large = servers(large=Script(steps=judged, answer="The answer is 42."))
    msg = router_for(small, large, strategy="specreason", threshold=5).invoke(QUESTION)
    rec = msg.response_metadata["glimprouter"]
    # step 0: score 3 -> rewritten; 1: 9 -> kept; 2: 1 -> rewritten; 3: "</think>" -> 0.
    assert [s["score"] for s in rec["steps"]] == pytest.approx([3, 9, 1, 0])
    assert [s["model"] for s in rec["steps"]] == ["large", "small", "large", "large"]
    assert [s["text"] for s in rec["steps"]] == [judged[0], SMALL_STEPS[1], judged[2], judged[3]]
    judges = [log for log in large.requests if log.params["max_tokens"] == 1]
    assert len(judges) == 4
    assert all(log.prompt.endswith("Score:") for log in judges)
    # 4 judges, 3 rewrites, 1 answer on the large server; 4 drafts and the last glimpse small.
    assert rec["requests"] == {"small": 5, "large": 8}
    assert len(large.requests) == 8
    assert msg.content == "The answer is 42."


# -- the adaptive threshold -----------------------------------------------------------------------


@pytest.mark.parametrize("target", [0.1, 0.25, 0.5])
def test_controller_holds_the_rate_with_ties(target: float) -> None:
    rng = random.Random(0)
    controller = AdaptiveThreshold(target, window=256, seed=1)
    # A third of the values tie at 0 (certain first tokens), the rest spread.
    values = [0.0 if rng.random() < 0.33 else rng.expovariate(1.0) for _ in range(6000)]
    routed = [controller.route(v)[0] for v in values]
    assert sum(routed) / len(routed) == pytest.approx(target, abs=0.02)
    assert controller.realised_rate == pytest.approx(sum(routed) / len(routed))


def test_controller_follows_a_shift_of_the_questions() -> None:
    rng = random.Random(1)
    controller = AdaptiveThreshold(0.25, window=200, seed=1)
    easy = [controller.route(rng.uniform(0, 1))[0] for _ in range(2000)]
    hard = [controller.route(rng.uniform(2, 5))[0] for _ in range(2000)]
    assert sum(easy[200:]) / 1800 == pytest.approx(0.25, abs=0.03)
    # Right after the shift every step looks hard; a window later the rate is back on target.
    assert sum(hard[:50]) / 50 > 0.9
    assert sum(hard[400:]) / 1600 == pytest.approx(0.25, abs=0.03)
    assert controller.threshold is not None
    assert 2 < controller.threshold < 5


def test_controller_refuses_bad_settings() -> None:
    for rate in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="target_rate"):
            AdaptiveThreshold(rate)
    with pytest.raises(ValueError, match="window"):
        AdaptiveThreshold(0.2, window=0)


def test_auto_threshold_routes_by_the_controller(servers: Any) -> None:
    steps = [f"small step {i}" for i in range(10)]
    h = [0.1, 2.0, 0.3, 1.7, 0.2, 0.4, 2.5, 0.05, 0.6, 1.9]
    small, large = servers(
        small=Script(steps=steps, h_init=h),
        large=Script(steps=[s.replace("small", "large") for s in steps]),
    )
    router = router_for(small, large, threshold="auto", target_rate=0.3, seed=0)
    records = [router.invoke(QUESTION).response_metadata["glimprouter"] for _ in range(4)]
    decided = [s for rec in records for s in rec["steps"]]
    assert len(decided) == 40
    for step in decided:  # above the threshold in effect: large; below: small; on it: a coin
        tau = step["threshold"]
        assert tau is not None
        if step["h_init"] != pytest.approx(tau):
            assert (step["model"] == "large") == (step["h_init"] > tau)
    # The window holds the same ten values over and over: 3 of 10 large, give or take a coin.
    large = [s["model"] for s in decided[10:]].count("large")
    assert 7 <= large <= 11
    # The glimpses that found "</think>" (H_INIT clamped to 1.9) are decisions too.
    controller = router.adaptive_threshold
    assert controller is not None
    assert controller.decisions == 44
    assert controller.realised_rate == pytest.approx(0.3, abs=0.1)
    rec = records[-1]
    assert rec["target_rate"] == 0.3
    assert rec["threshold"] == controller.threshold
    assert min(abs(rec["threshold"] - v) for v in h) < 1e-6


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"threshold": "auto"}, "target_rate in \\(0, 1\\)"),
        ({"threshold": "auto", "target_rate": 1.0}, "target_rate in \\(0, 1\\)"),
        ({"threshold": "auto", "target_rate": 0.2, "strategy": "random"}, "with a measure"),
        ({"strategy": "random"}, "needs target_rate"),
        ({"threshold": 0.9, "target_rate": 0.2}, "only with threshold='auto'"),
        ({"strategy": "greedy"}, "glimpse"),
        ({"target_rate": 2.0, "strategy": "random"}, "in \\[0, 1\\]"),
        ({"step_delimiter": ["\n\n", ""]}, "step_delimiter must not be empty"),
        ({"step_delimiter": []}, "step_delimiter must not be empty"),
        ({"max_step_tokens": 0}, "max_step_tokens"),
        ({"threshold": "high"}, "threshold"),
    ],
)
def test_invalid_strategy_settings(servers: Any, settings: dict[str, Any], match: str) -> None:
    small, large = servers()
    with pytest.raises((InvalidArgumentError, ValueError), match=match):
        router_for(small, large, **settings)


def test_auto_per_call_needs_an_auto_router(servers: Any) -> None:
    small, large = servers()
    with pytest.raises(InvalidArgumentError, match="controller lives across calls"):
        router_for(small, large).invoke(QUESTION, threshold="auto")
    assert small.requests == []


# -- segmentation -------------------------------------------------------------------------------


def test_several_delimiters_keep_the_one_that_ended_the_step(servers: Any) -> None:
    steps = ["first idea\nWait, check it", "second idea", "third idea"]
    small, large = servers(
        small=Script(steps=steps), large=Script(steps=[s.upper() for s in steps])
    )
    router = router_for(small, large, threshold=math.inf, step_delimiter=["\n\n", "\nWait,"])
    msg = router.invoke(QUESTION)
    rec = msg.response_metadata["glimprouter"]
    assert [s["text"] for s in rec["steps"]] == ["first idea", " check it", "second idea",
                                                 "third idea"]  # fmt: skip
    assert msg.additional_kwargs["reasoning_content"] == "\n\n".join(steps)
    assert all(log.params["stop"] == ["\n\n", "\nWait,"] for log in small.requests)
    # The second step's prompt ends with the delimiter that ended the first.
    assert small.requests[1].prompt.endswith("first idea\nWait,")


def test_max_step_tokens_splits_long_steps(servers: Any) -> None:
    small, large = servers()
    msg = router_for(small, large, threshold=1.0, max_step_tokens=2).invoke(QUESTION)
    rec = msg.response_metadata["glimprouter"]
    # Each 4-word step is cut after 2 tokens and again after 4; the next request writes only
    # the delimiter, which closes the step. Each piece is routed afresh (here: as its step).
    assert [s["finish"] for s in rec["steps"]] == ["split"] * 8
    assert [s["tokens"] for s in rec["steps"]] == [2] * 8
    assert [s["model"] for s in rec["steps"]] == [m for m in ("small", "large") * 2 for _ in "ab"]
    assert msg.additional_kwargs["reasoning_content"] == "\n\n".join(
        [SMALL_STEPS[0], LARGE_STEPS[1], SMALL_STEPS[2], LARGE_STEPS[3]]
    )
    assert all(log.params["max_tokens"] == 2 for log in small.requests)


def test_several_delimiters_need_a_stop_reason() -> None:
    """A server that does not say which stop string ended a step (llama-cpp-python) cannot
    tell the delimiters apart: one delimiter is assumed, several are refused."""
    one = ("\n\n",)
    several = ("\n\n", "\nWait,")
    told = Generation("small", {}, finish_reason="stop", stop_reason="\nWait,",
                       reports_stop_reason=True)  # fmt: skip
    untold = Generation("small", {}, finish_reason="stop")
    assert ended_by(untold, one) == "\n\n"
    assert ended_by(told, several) == "\nWait,"
    with pytest.raises(InvalidArgumentError, match="stop_reason"):
        ended_by(untold, several)
