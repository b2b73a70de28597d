"""What routing saved on the large model, on two real vLLM CPU servers: the record's savings
fields hold together on real streams (vLLM's chunking, its usage counts)."""

from __future__ import annotations

import pytest

from langchain_glimprouter import GlimpRouterChatModel

from .conftest import Pair, tiny_model_missed
from .test_vllm_routing import messages


def test_a_mixed_chain_records_its_savings_on_vllm(vllm_pair: Pair) -> None:
    for seed in range(1, 9):
        router = GlimpRouterChatModel(
            small=vllm_pair.small, large=vllm_pair.large, threshold=1.5, seed=seed,
            max_reasoning_tokens=160, max_tokens=24,
        )  # fmt: skip
        rec = router.invoke(messages()).response_metadata["glimprouter"]
        if not 0 < rec["n_large_steps"] < rec["n_steps"]:
            continue
        small = sum(s["tokens"] for s in rec["steps"] if s["model"] == "small")
        large = sum(s["tokens"] for s in rec["steps"] if s["model"] == "large")
        large += rec["answer_tokens"]
        assert rec["large_tokens_saved"] == small > 0
        assert rec["large_share"] == pytest.approx(large / (small + large))
        # The large server's streams decoded several tokens each: a rate was observed.
        assert rec["large_s_per_token"] > 0
        assert rec["large_seconds_saved"] == pytest.approx(small * rec["large_s_per_token"])
        assert 0 < rec["large_s"] < rec["latency_s"]
        return
    tiny_model_missed("no chain mixed small and large steps at tau=1.5")
