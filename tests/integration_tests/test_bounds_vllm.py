"""entropy_estimator="topk_bounds" and the whitespace-skipping glimpse on real vLLM (SmolLM2).

The session's small server allows 1000 logprobs (servers.start_pair), the escalation's default.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from langchain_core.messages import HumanMessage, SystemMessage

from langchain_glimprouter.core import decisions
from langchain_glimprouter.core.decisions import Glimpse
from langchain_glimprouter.core.entropy import EntropyBounds, first_token_entropy
from langchain_glimprouter.core.generation import Generation
from langchain_glimprouter.http.client import BackendClient
from langchain_glimprouter.questions import CALIBRATION_QUESTIONS
from langchain_glimprouter.router import Router

from .conftest import Pair, counts
from .test_vllm_routing import SYSTEM, messages, router

BF16_STEP = 0.125
"""The spacing of bfloat16 logits of SmolLM2's size (16 to 32): the CPU server computes in
bfloat16, so one position's logprobs may differ by a step between two requests (the glimpse
decodes the position, the probe prefills it), besides their common normaliser."""


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


QUESTIONS = CALIBRATION_QUESTIONS[:4]
"""Fixed prompts whose greedy chains (temperature 0) start steps with a lone "\\n": on SmolLM2
13-17 % of sampled steps do (docs/benchmarks.md)."""


@dataclass
class Seen:
    """What the glimpse read of one step start: every token of its stream so far (the last one
    the first with content) with the top logprobs after it, and what it measured."""

    tokens: list[str]
    tops: list[dict[str, float]]
    glimpse: Glimpse


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> list[Seen]:
    """Every glimpse of the test, as the router measured it."""
    glimpses: list[Seen] = []
    measure = decisions.measure_start

    def recording(gen: Generation, *args: Any) -> Glimpse:
        glimpse = measure(gen, *args)
        glimpses.append(Seen(list(gen.token_texts), [dict(t) for t in gen.token_tops], glimpse))
        return glimpse

    monkeypatch.setattr(decisions, "measure_start", recording)
    return glimpses


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """Every JSON request of the test (not the streams): its path, body and answer, seen by
    clients given to every router through the Router's public client hook."""
    requests: list[tuple[str, dict[str, Any], dict[str, Any]]] = []

    class Recording(BackendClient):
        def request_json(
            self, method: str, path: str, body: Any, session: str | None = None
        ) -> dict[str, Any]:
            answer = super().request_json(method, path, body, session)
            requests.append((path, body or {}, answer))
            return answer

    monkeypatch.setattr(Router, "default_client_factory", Recording)
    return requests


def ask(question: str) -> list[Any]:
    return [SystemMessage(SYSTEM), HumanMessage(question)]


def greedy(pair: Pair, threshold: float, **kwargs: Any) -> Any:
    """A router of greedy chains (temperature 0)."""
    return router(pair, threshold, temperature=0, max_reasoning_tokens=192, **kwargs)


def greedy_chains(
    pair: Pair, seen: list[Seen], **kwargs: Any
) -> list[tuple[str, dict[str, Any], list[Seen]]]:
    """Each fixed prompt, its routing record with every step small, and its glimpses."""
    model = greedy(pair, math.inf, **kwargs)
    chains = []
    for question in QUESTIONS:
        before = len(seen)
        rec = model.invoke(ask(question)).response_metadata["glimprouter"]
        chains.append((question, rec, seen[before:]))
    return chains


def close_call_after_whitespace(
    chains: list[tuple[str, dict[str, Any], list[Seen]]],
) -> tuple[float, str]:
    """A threshold and a prompt whose greedy chain escalates a step that started with
    whitespace: a threshold inside that glimpse's likely band, which every glimpse before it
    decides small without a probe (so the chain up to it is the same as at infinity)."""
    for question, _, glimpses in chains:
        for i, g in enumerate(glimpses):
            bounds = g.glimpse.bounds
            if not g.glimpse.skipped or bounds is None:
                continue
            low, high = bounds.likely
            tau = (low + high) / 2
            before = [b.glimpse.bounds for b in glimpses[:i]]
            if all(b is not None and small_without_probe(b, tau) for b in before):
                return tau, question
    raise AssertionError("no step after whitespace whose close call the chain reaches as is")


def bounds_of(seen: Seen) -> tuple[float, float] | None:
    bounds = seen.glimpse.bounds
    return None if bounds is None else (bounds.lower, bounds.upper)


def agreement(glimpse: dict[str, float], other: dict[str, float]) -> tuple[float, float]:
    """How two top-logprob lists of one position agree, up to their normalisers' difference
    (the median difference): the share of the glimpse's tokens within 1e-3 of it, and the
    largest deviation (a token missing from ``other`` counts as far off)."""
    diffs = [glimpse[t] - other[t] for t in glimpse if t in other]
    if len(diffs) < len(glimpse) // 2:
        return 0.0, math.inf
    offset = statistics.median(diffs)
    deviations = [abs(d - offset) for d in diffs] + [math.inf] * (len(glimpse) - len(diffs))
    return sum(d <= 1e-3 for d in deviations) / len(glimpse), max(deviations)


def small_without_probe(bounds: EntropyBounds, tau: float) -> bool:
    return bounds.decide(tau) in ((False, "certain"), (False, "estimated"))


def top_logprobs(pair: Pair, prompt: str) -> dict[str, float]:
    """The small server's top 20 after ``prompt`` (text, tokenized by the server)."""
    body = {"model": pair.small.model, "prompt": prompt, "max_tokens": 1, "logprobs": 20,
            "temperature": 0, "add_special_tokens": False}  # fmt: skip
    answer = httpx.post(f"{pair.small.base_url}/completions", json=body, timeout=60).json()
    tops: dict[str, float] = answer["choices"][0]["logprobs"]["top_logprobs"][0]
    return tops


def test_the_glimpse_reads_past_whitespace_to_the_token_with_content(
    vllm_pair: Pair, seen: list[Seen]
) -> None:
    """Some step of the fixed greedy chains starts with whitespace (a lone "\\n"): the glimpse
    reads past it in the same stream, and the step's first_token and h_init are those of the
    first token with content, measured on the top logprobs after it."""
    steps = [s for _, rec, _ in greedy_chains(vllm_pair, seen) for s in rec["steps"]]
    skipping = [s for s in steps if s["skipped"]]
    assert skipping, "no step of the fixed greedy chains started with whitespace"
    for step in skipping:
        assert step["skipped"].strip() == ""
        assert step["first_token"].strip()
        assert step["text"].startswith(step["skipped"] + step["first_token"])
        at = next(g for g in seen if g.glimpse.token == step["first_token"]
                  and "".join(g.glimpse.skipped) == step["skipped"]
                  and g.glimpse.h == step["h_init"])  # fmt: skip
        n = len(at.glimpse.skipped)
        assert at.tokens[n] == step["first_token"]  # the stream's first token with content
        assert "".join(at.tokens[:n]) == step["skipped"]
        content = at.tops[n]
        assert max(content, key=content.__getitem__) == step["first_token"]  # greedy: the top 1
        h, _ = first_token_entropy(content.values(), "topk_renormalized", 20)
        assert step["h_init"] == pytest.approx(h)  # measured after the content token
        first, _ = first_token_entropy(at.tops[0].values(), "topk_renormalized", 20)
        assert step["h_init"] != pytest.approx(first, abs=1e-4)  # not after the whitespace


def test_a_skipped_step_escalates_on_the_tokens_the_glimpse_saw(
    vllm_pair: Pair, seen: list[Seen], sent: list[tuple[str, dict[str, Any], dict[str, Any]]]
) -> None:
    """A close call on a step that started with whitespace: the probe asks for the same
    position as the glimpse (the prompt's ids from /tokenize, then the skipped token's), so its
    top 1000 agree with the glimpse's top 20 on every token they share, where the prompt text
    with the "\\n" appended, tokenized afresh, gives another distribution."""
    chains = greedy_chains(vllm_pair, seen, entropy_estimator="topk_bounds")
    tau, question = close_call_after_whitespace(chains)
    seen.clear()
    sent.clear()
    model = greedy(vllm_pair, tau, entropy_estimator="topk_bounds")
    rec = model.invoke(ask(question)).response_metadata["glimprouter"]
    step = next(s for s in rec["steps"] if s["skipped"] and s["escalation_tokens"])
    assert step["decision"] in ("escalated", "estimated")
    glimpse = next(g for g in seen if bounds_of(g) == step["glimpse_h_bounds"])
    skipped = glimpse.glimpse.skipped
    # /tokenize of each skipped token (a "\\n") and of the prompt, then the probe
    assert step["escalation_requests"] == len(set(skipped)) + 2
    content = glimpse.tops[len(skipped)]
    tokenized = [body for path, body, _ in sent if path == "/tokenize" and "prompt" in body]
    probes = [answer for path, body, answer in sent
              if path == "/v1/completions" and isinstance(body["prompt"], list)]  # fmt: skip
    ids = list(dict.fromkeys(skipped))  # each asked once
    assert [b["prompt"] for b in tokenized[: len(ids)]] == ids
    prompt = tokenized[len(ids)]["prompt"]  # the glimpse's prompt text
    assert probes  # token ids: the glimpse's prompt and the "\\n"
    wide = probes[0]["choices"][0]["logprobs"]["top_logprobs"][0]
    same, worst = agreement(content, wide)
    assert same >= 0.75  # to 1e-3, but for a bfloat16 step here and there
    assert worst <= BF16_STEP + 1e-3
    low, high = step["glimpse_h_bounds"]  # more of the same distribution: tighter bounds
    assert low - 1e-2 <= step["h_bounds"][0] <= step["h_bounds"][1] <= high + 1e-2
    # The control: the same text re-tokenized is another context, whose distribution differs.
    same, worst = agreement(content, top_logprobs(vllm_pair, prompt + step["skipped"]))
    assert same < 0.75 or worst > 4 * BF16_STEP
