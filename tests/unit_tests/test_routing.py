"""Routing decisions, request counts and prompts, on scripted servers with fixed entropies."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage

from scripted_server import Script
from scripted_server.answers import error
from tests.support.accounting import closed_early, glimpse_requests
from tests.support.pair import (
    H_INIT,
    LARGE_STEPS,
    RENDERS_PAST_REASONING,
    SMALL_STEPS,
    router_for,
)

QUESTION = "What is 6 times 7?"


def completions(server: Any) -> list[Any]:
    return list(server.requests)


def assert_tokens_match(counted: int, logs: list[Any]) -> None:
    """The router counts what it read; an aborted stream may have generated a token or two
    more on the server before it saw the disconnect."""
    generated = sum(log.generated_tokens for log in logs)
    aborted = sum(not log.finished for log in logs)
    assert counted <= generated <= counted + 8 * aborted


@pytest.mark.parametrize(
    ("threshold", "expected"),
    [
        (0.0, ["large", "large", "large", "large"]),
        (0.15, ["large", "large", "small", "large"]),
        (1.0, ["small", "large", "small", "large"]),
        (1.8, ["small", "small", "small", "large"]),
        (math.inf, ["small", "small", "small", "small"]),
    ],
)
def test_routing_per_threshold(servers: Any, threshold: float, expected: list[str]) -> None:
    small, large = servers()
    msg = router_for(small, large, threshold=threshold).invoke(QUESTION)
    rec = msg.response_metadata["glimprouter"]
    assert [s["model"] for s in rec["steps"]] == expected
    assert rec["n_steps"] == 4
    assert rec["n_large_steps"] == expected.count("large")
    assert rec["intervention_rate"] == pytest.approx(expected.count("large") / 4)
    assert rec["chain_end"] == "think_end"
    texts = [(SMALL_STEPS if m == "small" else LARGE_STEPS)[i] for i, m in enumerate(expected)]
    assert [s["text"] for s in rec["steps"]] == texts
    assert msg.additional_kwargs["reasoning_content"] == "\n\n".join(texts)
    assert msg.content == "The answer is 42."
    if threshold > 0:
        assert [s["h_init"] for s in rec["steps"]] == pytest.approx(H_INIT[:4], abs=1e-6)
        assert all(s["residual_mass"] == pytest.approx(0.05, abs=1e-6) for s in rec["steps"])
        assert [s["first_token"] for s in rec["steps"]] == ["small"] * 4
    else:
        assert all(s["h_init"] is None for s in rec["steps"])


def test_requests_per_step_and_wasted_tokens(servers: Any) -> None:
    # The fake servers generate a token only when it is read: a closed glimpse is aborted at
    # once (loopback_tests see aborts over real connections).
    small, large = servers()
    rec = router_for(small, large, threshold=1.0).invoke(QUESTION).response_metadata["glimprouter"]
    assert small.wait_idle()
    assert large.wait_idle()
    # Four steps plus the closing "</think>" glimpse: one small request each.
    small_logs = completions(small)
    assert len(small_logs) == rec["requests"]["small"] == 5
    # Each intervened step's glimpse was aborted after about one token, and so was the last
    # glimpse as soon as it read "</think>" (nothing after it is needed).
    aborted = [log for log in small_logs if not log.finished]
    assert len(aborted) == 3
    assert aborted[-1] is small_logs[-1]
    assert all(log.generated_tokens <= 2 for log in aborted)
    assert rec["wasted_small_tokens"] == 2
    assert [s["wasted_tokens"] for s in rec["steps"]] == [0, 1, 0, 1]
    # The large server: one request per intervened step, plus the answer.
    assert len(completions(large)) == rec["requests"]["large"] == 3
    assert_tokens_match(rec["tokens"]["small"], small_logs)
    # The closing glimpse wrote no step, and the record says so: every request is accounted.
    end = rec["end_step"]
    assert (end["model"], end["text"], end["finish"]) == ("small", "", "think_end")
    assert end["index"] == rec["n_steps"] == 4
    assert glimpse_requests(rec) == rec["requests"]
    assert closed_early(rec) == {"small": 3, "large": 1}  # at most


@pytest.mark.parametrize(
    ("threshold", "end_with_think", "writer", "expected"),
    [
        (math.inf, True, "small", {"small": 3, "large": 1}),
        (math.inf, False, "small", {"small": 3, "large": 1}),
        (0.0, True, "large", {"small": 0, "large": 4}),
        (0.0, False, "large", {"small": 0, "large": 4}),
        # "</think>" glimpsed at 2.0 nats: the large model takes the step, and ends the chain
        (1.0, True, "large", {"small": 3, "large": 2}),
        # EOS at once: nothing to measure, the small stream has ended the chain
        (1.0, False, "small", {"small": 3, "large": 1}),
    ],
)
def test_a_chain_that_ends_at_a_step_start_accounts_for_its_last_request(
    servers: Any, threshold: float, end_with_think: bool, writer: str, expected: dict[str, int]
) -> None:
    """The model's first token of a step ends the chain (EOS, or "</think>"): that request
    wrote no step, and the record keeps it as ``end_step``, not as a step."""
    steps = ["step zero", "step one"]
    small, large = servers(
        Script(steps=steps, h_init=[0.1, 0.2, 2.0], end_with_think=end_with_think),
        Script(steps=steps, end_with_think=end_with_think),
    )
    rec = router_for(small, large, threshold=threshold).invoke(QUESTION)
    rec = rec.response_metadata["glimprouter"]
    assert rec["n_steps"] == 2
    assert rec["chain_end"] == ("think_end" if end_with_think else "eos")
    assert rec["requests"] == expected == glimpse_requests(rec)
    end = rec["end_step"]
    assert (end["index"], end["text"]) == (2, "")
    assert end["model"] == writer


def test_a_step_that_ends_the_chain_itself_leaves_no_end_step(servers: Any) -> None:
    steps = ["step zero", "done.</think>"]
    small, large = servers(Script(steps=steps, end_with_think=False), Script(steps=steps))
    rec = router_for(small, large, threshold=math.inf).invoke(QUESTION)
    rec = rec.response_metadata["glimprouter"]
    assert [s["text"] for s in rec["steps"]] == ["step zero", "done."]
    assert rec["end_step"] is None
    assert rec["requests"] == glimpse_requests(rec) == {"small": 2, "large": 1}


def test_threshold_zero_never_calls_the_small_server(servers: Any) -> None:
    small, large = servers()
    rec = router_for(small, large, threshold=0).invoke(QUESTION).response_metadata["glimprouter"]
    assert completions(small) == []
    assert rec["requests"] == {"small": 0, "large": 6}  # 4 steps, the "</think>" step, answer


def test_separate_probe_makes_the_same_decisions(servers: Any) -> None:
    small, large = servers()
    streamed = router_for(small, large).invoke(QUESTION).response_metadata["glimprouter"]
    small.reset()
    large.reset()
    separate = (
        router_for(small, large, probe="separate").invoke(QUESTION).response_metadata["glimprouter"]
    )
    assert [s["model"] for s in separate["steps"]] == [s["model"] for s in streamed["steps"]]
    assert [s["h_init"] for s in separate["steps"]] == pytest.approx(
        [s["h_init"] for s in streamed["steps"]]
    )
    # A probe per step (5 with the closing one) plus a request per delegated step (2 + the close).
    assert separate["requests"]["small"] == 5 + 3
    assert sum(log.params["max_tokens"] == 1 for log in completions(small)) == 5
    assert separate["wasted_small_tokens"] == 5
    assert separate["requests"]["large"] == streamed["requests"]["large"]


def test_prompts_are_append_only_per_server(servers: Any) -> None:
    small, large = servers()
    router_for(small, large, threshold=1.0).invoke(QUESTION)
    for server in (small, large):
        prompts = [log.prompt for log in completions(server)]
        assert prompts[0].count("<think>\n") == 1
        for before, after in itertools.pairwise(prompts):
            assert after.startswith(before)
    assert completions(large)[-1].prompt.endswith("</think>\n\n")
    body = completions(small)[0].params
    assert body["add_special_tokens"] is False
    assert body["stop"] == ["\n\n"]
    assert body["logprobs"] == 20


def test_client_side_template(servers: Any) -> None:
    small, large = servers()
    template = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
    model = router_for(small, large)
    model = model.model_copy(
        update={"small": model.small.model_copy(update={"chat_template": template})}
    )
    model.invoke(QUESTION)
    assert completions(small)[0].prompt.startswith(f"[user] {QUESTION}\n<think>\n")
    assert completions(large)[0].prompt.startswith("<|im_start|>user\n")


def test_chain_ends(servers: Any) -> None:
    small, large = servers(
        small=Script(steps=["one", "two"], h_init=0.1, end_with_think=False),
        large=Script(steps=["one", "two"], end_with_think=False),
    )
    rec = router_for(small, large).invoke(QUESTION).response_metadata["glimprouter"]
    assert rec["chain_end"] == "eos"
    assert rec["n_steps"] == 2

    small, large = servers(
        small=Script(steps=["same", "same", "other"], h_init=0.1),
        large=Script(steps=["x"]),
    )
    rec = router_for(small, large).invoke(QUESTION).response_metadata["glimprouter"]
    assert rec["chain_end"] == "loop"
    assert [s["finish"] for s in rec["steps"]] == ["delimiter", "loop"]

    small, large = servers(
        small=Script(steps=["a b c d e f g h"] * 9, h_init=0.1), large=Script(steps=["x"])
    )
    msg = router_for(small, large, max_reasoning_tokens=12).invoke(QUESTION)
    rec = msg.response_metadata["glimprouter"]
    assert rec["chain_end"] == "budget"
    assert rec["reasoning_tokens"] <= 12
    assert completions(large)[-1].prompt.endswith("\n</think>\n\n")


def test_answer_stop_sequences_and_finish_reason(servers: Any) -> None:
    small, large = servers()
    msg = router_for(small, large).invoke(QUESTION, stop=[" is"])
    assert msg.content == "The answer"
    assert msg.response_metadata["finish_reason"] == "stop"
    assert completions(large)[-1].params["stop"] == [" is"]
    msg = router_for(small, large, max_tokens=2).invoke(QUESTION)
    assert msg.response_metadata["finish_reason"] == "length"


def test_message_metadata_and_usage(servers: Any) -> None:
    small, large = servers()
    msg = router_for(small, large).invoke(QUESTION, model="large-m")
    meta = msg.response_metadata
    assert meta["model_name"] == "large-m"
    assert meta["model_provider"] == "glimprouter"
    rec = meta["glimprouter"]
    for key in ("threshold", "estimator", "n_steps", "n_large_steps", "intervention_rate",
                "tokens", "requests", "latency_s", "steps"):  # fmt: skip
        assert key in rec
    assert small.wait_idle()
    usage = msg.usage_metadata
    assert usage is not None
    assert usage["output_tokens"] == rec["tokens"]["small"] + rec["tokens"]["large"]
    assert_tokens_match(rec["tokens"]["small"], completions(small))
    assert_tokens_match(rec["tokens"]["large"], completions(large))
    assert usage["input_tokens"] == rec["prompt_tokens"]["small"] + rec["prompt_tokens"]["large"]
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert (
        usage["output_token_details"]["reasoning"] == usage["output_tokens"] - rec["answer_tokens"]
    )
    assert [b["type"] for b in msg.content_blocks] == ["reasoning", "text"]


def test_token_count_uses_the_server_tokenizer(servers: Any) -> None:
    small, large = servers()
    model = router_for(small, large)
    count = model.get_num_tokens_from_messages(
        [__import__("langchain_core.messages").messages.HumanMessage("hi")]
    )
    assert count == len("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    assert model.get_num_tokens("hello") == 5


@pytest.mark.parametrize("probe", ["stream", "separate"])
def test_the_glimpse_reads_past_whitespace_at_a_step_start(servers: Any, probe: str) -> None:
    """A step that starts with a lone "\\n" (the end of the delimiter, near-certain): the glimpse
    reads on to the first token with content and routes on its entropy, in the same stream."""
    steps = ["plain start", "\nhard step after a newline", "\n \neasy one", "last"]
    small, large = servers(small=Script(steps=steps, h_init=[0.2, 1.8, 0.3, 0.1, 0.0]),
                           large=Script(steps=steps))  # fmt: skip
    rec = router_for(small, large, threshold=1.0, probe=probe).invoke(QUESTION)
    rec = rec.response_metadata["glimprouter"]
    got = [(s["model"], s["first_token"], s["skipped"]) for s in rec["steps"]]
    if probe == "separate":  # a 1-token probe cannot read past: it measures the "\n"
        assert [s["skipped"] for s in rec["steps"]] == ["", "", "", ""]
        assert [s["model"] for s in rec["steps"]] == ["small"] * 4
        return
    assert got == [
        ("small", "plain", ""),
        ("large", "hard", "\n"),  # 1.8 nats on "hard": the "\n" alone (~0) would have kept it
        ("small", "easy", "\n \n"),
        ("small", "last", ""),
    ]
    assert [s["h_init"] for s in rec["steps"]] == pytest.approx([0.2, 1.8, 0.3, 0.1], abs=1e-6)
    assert [s["wasted_tokens"] for s in rec["steps"]] == [0, 2, 0, 0]  # "\n" and "hard"
    assert rec["requests"]["small"] == 5  # still one small request per step (and the "</think>")
    assert [s["text"] for s in rec["steps"]][2] == "\n \neasy one"  # the step keeps its text


def test_topk_bounds_decides_exactly_or_escalates_one_step(servers: Any) -> None:
    """Scripted distributions (20 logprobs, 5 % outside them): at tau = 1.4 the bounds of a
    1.0-nat step ([1.24, 1.77]) hold the threshold in their likely band, so that step alone
    gets a 1-token probe with 1000 logprobs (4.5 % outside them), whose bounds ([1.42, 1.70])
    settle it. The record is the probe's (h_init, h_bounds, residual_mass), the glimpse's own
    values under glimpse_*."""
    h_init = [0.2, 1.0, 1.0, 2.0, 0.0]
    script = Script(steps=SMALL_STEPS, h_init=h_init, wide_residual_mass=0.045)
    small, large = servers(small=script, max_logprobs=1000)
    model = router_for(small, large, threshold=1.4, entropy_estimator="topk_bounds")
    rec = model.invoke(QUESTION).response_metadata["glimprouter"]
    steps = rec["steps"]
    assert [(s["model"], s["decision"]) for s in steps] == [
        ("small", "certain"), ("large", "escalated"), ("large", "escalated"), ("large", "certain"),
    ]  # fmt: skip
    probes = [r for r in completions(small) if not r.stream]
    assert [(p.params["logprobs"], p.params["max_tokens"]) for p in probes] == [(1000, 1)] * 2
    glimpses = [r for r in completions(small) if r.stream]
    assert [p.params["prompt"] for p in probes] == [g.params["prompt"] for g in glimpses[1:3]]
    assert rec["escalations"] == 2
    assert rec["requests"]["small"] == 5 + 2  # the glimpses (and "</think>"), the two probes
    assert [s["escalation_tokens"] for s in steps] == [0, 1, 1, 0]
    assert [s["wasted_tokens"] for s in steps] == [0, 2, 2, 1]  # the glimpse and the probe
    for step in steps:
        low, high = step["h_bounds"]
        assert low <= step["h_init"] <= high
        assert (low > 1.4) == (step["model"] == "large")  # certain: outside the bounds
    escalated, certain = steps[1], steps[3]
    assert escalated["h_bounds"][0] > 1.4  # the probe's bounds, tighter than the glimpse's
    assert escalated["residual_mass"] == pytest.approx(0.045)  # the probe's, as its bounds
    assert escalated["glimpse_residual_mass"] == pytest.approx(0.05)
    assert [s["escalation_requests"] for s in steps] == [0, 1, 1, 0]
    low, high = escalated["glimpse_h_bounds"]
    assert low < 1.4 < high
    assert low <= escalated["glimpse_h_init"] <= high
    assert low <= escalated["h_bounds"][0] <= escalated["h_bounds"][1] <= high
    assert escalated["glimpse_h_init"] != pytest.approx(escalated["h_init"])
    assert certain["residual_mass"] == pytest.approx(0.05)  # no probe: the glimpse's own
    assert certain["glimpse_h_init"] is certain["glimpse_h_bounds"] is None
    assert certain["glimpse_residual_mass"] is None


def tokenized(server: Any) -> list[str]:
    """Record the text of every ``/tokenize`` request of a prompt that ``server`` answers."""
    texts: list[str] = []
    answer = server.tokenize

    def tokenize(body: dict[str, Any]) -> Any:
        if "prompt" in body:
            assert body["add_special_tokens"] is False  # as the glimpse's prompt was tokenized
            texts.append(body["prompt"])
        return answer(body)

    server.tokenize = tokenize
    return texts


def test_a_skipped_step_escalates_on_the_tokens_the_glimpse_saw(servers: Any) -> None:
    """A close call on the first token with content after a skipped "\\n": the probe's
    prompt is the glimpse's prompt as the server tokenizes it plus the "\\n"'s id, not that
    text tokenized afresh (a server merges a trailing "\\n\\n" + "\\n" into other tokens).
    /tokenize of "\\n" alone is asked once per server."""
    steps = ["plain start", "\nclose call after a newline", "easy", "last"]
    script = Script(steps=steps, h_init=[0.2, 1.0, 0.1, 0.1, 0.0])
    small, large = servers(small=script, large=Script(steps=steps), max_logprobs=1000)
    texts = tokenized(small)
    model = router_for(small, large, threshold=1.4, entropy_estimator="topk_bounds")
    for call in range(2):
        small.reset()
        rec = model.invoke(QUESTION).response_metadata["glimprouter"]
        step = rec["steps"][1]
        assert (step["skipped"], step["first_token"]) == ("\n", "close")
        assert (step["model"], step["decision"]) == ("large", "escalated")
        glimpse, probe = completions(small)[1:3]
        assert not probe.stream
        assert probe.params["prompt"] == [ord(c) for c in glimpse.prompt] + [ord("\n")]
        assert step["escalation_requests"] == (3 if call == 0 else 2)  # /tokenize, the probe
        assert rec["requests"]["small"] == 5 + 1  # /tokenize is not a completions request
    prompt = completions(small)[1].prompt  # the same in both calls
    assert texts == ["\n", prompt, prompt]


@pytest.mark.parametrize("cannot", ["no /tokenize", "not one token"])
def test_a_skipped_step_is_estimated_where_its_tokens_are_unknown(
    servers: Any, cannot: str
) -> None:
    """A server without /tokenize, or a skipped token that does not come back as one id when
    tokenized alone: the ids the glimpse saw are unknown, so the close call is decided on the
    estimate, with no probe on another context."""
    skipped = "\n" if cannot == "no /tokenize" else "\n \n"
    steps = ["plain start", skipped + "close call after a newline", "easy", "last"]
    script = Script(steps=steps, h_init=[0.2, 1.0, 0.1, 0.1, 0.0])
    small, large = servers(small=script, large=Script(steps=steps), max_logprobs=1000)
    if cannot == "no /tokenize":
        render = small.tokenize
        small.tokenize = lambda body: (
            render(body) if "messages" in body else error(404, "NotFound", "", "Not Found")
        )
    model = router_for(small, large, threshold=1.4, entropy_estimator="topk_bounds")
    for call in range(2):
        rec = model.invoke(QUESTION).response_metadata["glimprouter"]
        step = rec["steps"][1]
        assert (step["skipped"], step["first_token"]) == (skipped, "close")
        assert step["decision"] == "estimated"
        assert step["escalation_requests"] == (1 if call == 0 else 0)  # learnt once
        assert step["glimpse_h_bounds"] is None  # no probe answered: the glimpse's values
        assert rec["escalations"] == 0
    assert all(r.stream for r in completions(small))


def test_topk_bounds_without_escalation_estimates(servers: Any) -> None:
    """A server that allows only 20 logprobs: the one refused probe teaches the router the
    cap, and every later close call is decided on the estimate, without a request."""
    h_init = [0.2, 1.0, 1.0, 2.0, 0.0]
    small, large = servers(small=Script(steps=SMALL_STEPS, h_init=h_init), max_logprobs=20)
    model = router_for(small, large, threshold=1.4, entropy_estimator="topk_bounds")
    for call in range(2):
        rec = model.invoke(QUESTION).response_metadata["glimprouter"]
        assert [s["decision"] for s in rec["steps"]] == [
            "certain", "estimated", "estimated", "certain"
        ]  # fmt: skip
        assert rec["escalations"] == 0
        # The refused probe is a request like any other, of the step that sent it.
        refusals = 1 if call == 0 else 0
        assert rec["requests"]["small"] == 5 + refusals
        assert [s["escalation_requests"] for s in rec["steps"]] == [0, refusals, 0, 0]
    refused = [r for r in completions(small) if not r.stream]
    assert len(refused) == 1  # learnt once per server
    assert refused[0].finish_reason is None
    off = router_for(small, large, threshold=1.4, entropy_estimator="topk_bounds",
                     escalation_logprobs=0)  # fmt: skip
    assert off.invoke(QUESTION).response_metadata["glimprouter"]["escalations"] == 0


def test_a_server_without_tokenize_says_so() -> None:
    from langchain_glimprouter import Backend, Router
    from langchain_glimprouter.errors import BackendResponseError

    class NoTokenize:
        def request_json(self, method: str, path: str, body: Any) -> dict[str, Any]:
            raise BackendResponseError("404", role="large", url="http://l/v1", status_code=404)

    backend = Backend(base_url="http://l/v1", model="l")
    router = Router(small=backend, large=backend, client_factory=lambda *a, **k: NoTokenize())
    with pytest.raises(BackendResponseError, match="no /tokenize endpoint") as caught:
        router.count_tokens({"prompt": "hi"})
    assert (caught.value.status_code, caught.value.role) == (404, "large")


@pytest.mark.parametrize("key", ["reasoning_content", "reasoning"])
def test_past_reasoning_is_not_resent_under_either_key(servers: Any, key: str) -> None:
    """A previous turn's chain (vLLM's and DeepSeek's name for it) stays out of the prompt, as
    the Qwen3 and DeepSeek-R1 templates leave it out; its answer goes in."""
    small, large = servers(chat_template=RENDERS_PAST_REASONING)
    past = AIMessage("First answer.", additional_kwargs={key: "THOUGHT OF THE FIRST TURN"})
    router_for(small, large).invoke([HumanMessage("First question?"), past, HumanMessage(QUESTION)])
    for server in (small, large):
        prompt = server.requests[0].prompt
        assert "First answer." in prompt
        assert "THOUGHT" not in prompt
