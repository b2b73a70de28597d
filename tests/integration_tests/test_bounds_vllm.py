"""entropy_estimator="topk_bounds" and the whitespace-skipping glimpse on real vLLM (SmolLM2).

The session's small server allows 1000 logprobs (servers.start_pair), the escalation's default.
"""

from __future__ import annotations

import math

from .conftest import Pair, counts
from .test_vllm_routing import messages, router


def test_a_close_call_is_escalated_with_1000_logprobs(vllm_pair: Pair) -> None:
    """Step 0's context is the rendered prompt alone, the same in every call: its bounds from a
    first call set a threshold inside their likely band, so the second call must escalate it."""
    first = router(vllm_pair, math.inf, entropy_estimator="topk_bounds", temperature=0)
    step0 = first.invoke(messages()).response_metadata["glimprouter"]["steps"][0]
    assert step0["decision"] == "certain"  # nothing is above infinity
    low, high = step0["h_bounds"]
    tau = low + 0.3 * (high - low)  # inside the likely band (0.14 ... 0.47 of the gap)

    before = counts(vllm_pair)
    model = router(vllm_pair, tau, entropy_estimator="topk_bounds", temperature=0)
    rec = model.invoke(messages()).response_metadata["glimprouter"]
    after = counts(vllm_pair)
    step = rec["steps"][0]
    assert step["decision"] in ("escalated", "estimated")
    assert step["escalation_tokens"] == 1
    assert step["escalation_s"] > 0
    wide_low, wide_high = step["h_bounds"]  # the probe's: more of the same distribution
    assert low - 1e-3 <= wide_low <= wide_high <= high + 1e-3
    if step["decision"] == "escalated":
        assert (wide_low > tau) == (step["model"] == "large")
    assert rec["escalations"] >= 1
    # The probes are real requests on the small server, counted as such.
    assert after["small"] - before["small"] == rec["requests"]["small"]
    for s in rec["steps"]:
        assert s["decision"] in ("certain", "escalated", "estimated")
        if s["decision"] == "certain":
            assert (s["h_bounds"][0] > tau) == (s["model"] == "large")


def test_the_glimpse_measures_a_token_with_content(vllm_pair: Pair) -> None:
    """Whatever SmolLM2 writes: a step whose start was whitespace records what was read past,
    and every measured token has content (unless the whole step was whitespace)."""
    steps = []
    for seed in (1, 2, 3):
        msg = router(vllm_pair, math.inf, seed=seed).invoke(messages())
        steps += msg.response_metadata["glimprouter"]["steps"]
    for s in steps:
        assert s["skipped"].strip() == ""
        if s["skipped"]:  # every step is the small model's here: its stream is the step
            assert s["text"].startswith(s["skipped"])
            assert s["first_token"].strip() or not s["text"].strip()
