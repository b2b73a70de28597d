"""A second server kind: one role on llama-cpp-python's server, the other on vLLM.

The llama.cpp server (``python -m llama_cpp.server`` on SmolLM2-135M's GGUF, from the cached
environment of ``make llamacpp-env``) is started once for this module; the vLLM side is the
session's pair. llama-cpp-python renders no template over HTTP, so its Backend renders the GGUF's
own template client-side (:func:`gguf_chat_template`).

What each request did on the llama.cpp server is read from its log (it has no metrics): uvicorn's
access line per request, and llama.cpp's ``llama_perf_context_print: eval time`` line when a
generation runs to its end. A stream the client closed mid-generation never logs that line (the
server abandons its generator), and "Disconnected from client" is not logged reliably either (it
depends on where the close catches the server), so a request is known to be cut when it has no
end line once the server has served a later one: the server generates for one request at a time,
and :func:`llama_counts` sends a small ``/v1/chat/completions`` request (counted apart) and reads
the log when it is answered.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from langchain_core.messages import HumanMessage, SystemMessage

from langchain_glimprouter import Backend, GlimpRouterChatModel
from langchain_glimprouter.cli.servers import free_port
from langchain_glimprouter.core.entropy import first_token_entropy
from langchain_glimprouter.core.prompts import open_thinking, render_jinja
from langchain_glimprouter.errors import PromptRenderingError
from tests.support.accounting import assert_all_small, closed_early, glimpse_requests, written
from tests.support.llamacpp import LlamaCppServer

from .conftest import Pair, delta, tiny_model_missed, vllm_counters

QUESTION = "Tom has 3 boxes with 12 apples in each box. He gives away 7. How many are left?"
SYSTEM = "You are a careful math tutor. Reason step by step and put a blank line between steps."
NAME = "smollm2-llamacpp"


@pytest.fixture(scope="module")
def llamacpp() -> Iterator[LlamaCppServer]:
    server = LlamaCppServer(NAME, free_port())
    try:
        server.start()
    except RuntimeError as exc:  # the environment is missing: `make test` builds it
        pytest.fail(str(exc))
    try:
        server.wait_ready(timeout=180, poll=0.2)
        yield server
    finally:
        server.stop()


def log_counts(server: LlamaCppServer) -> dict[str, int]:
    """Completions requests and generations run to their end, so far (the probes left out)."""
    assert server.log_path is not None
    text = server.log_path.read_text(errors="replace")
    probes = text.count('"POST /v1/chat/completions HTTP/1.1" 200')
    return {
        "requests": text.count('"POST /v1/completions HTTP/1.1" 200'),
        "finished": len(re.findall(r"llama_perf_context_print:\s+eval time", text)) - probes,
    }


def llama_counts(server: LlamaCppServer) -> dict[str, int]:
    """The log's counts once every earlier request is over: the server serves one request at a
    time, so it answers the probe only after them (a cut one without its end line)."""
    probe = {"model": NAME, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
    answer = httpx.post(server.base_url + "/chat/completions", json=probe, timeout=60)
    assert answer.status_code == 200, answer.text
    return log_counts(server)


def vllm_counts(backend: Backend) -> dict[str, int]:
    counted = vllm_counters(backend)
    return {"requests": counted["requests"], "tokens": counted["generated"]}


def router(small: Backend, large: Backend, threshold: float, **kwargs: Any) -> GlimpRouterChatModel:
    settings: dict[str, Any] = {"max_reasoning_tokens": 96, "max_tokens": 24, "seed": 7}
    settings.update(kwargs)
    return GlimpRouterChatModel(small=small, large=large, threshold=threshold, **settings)


MESSAGES = [SystemMessage(SYSTEM), HumanMessage(QUESTION)]
PLAIN = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]


def test_server_facts_and_rendering(llamacpp: LlamaCppServer, vllm_pair: Pair) -> None:
    root = llamacpp.base_url[: -len("/v1")]
    models = httpx.get(llamacpp.base_url + "/models", timeout=10).json()
    assert [card["id"] for card in models["data"]] == [NAME]
    assert "max_model_len" not in models["data"][0]  # the router cannot cap max_tokens by it
    for path in ("/tokenize", "/apply-template"):  # no server-side rendering
        assert httpx.post(root + path, json={}, timeout=10).status_code == 404
    # The GGUF's template, rendered here, gives the prompt vLLM renders for the same model.
    backend = llamacpp.backend()
    ours = render_jinja(backend.chat_template or "", PLAIN, **backend.chat_template_kwargs)
    model = vllm_pair.small.model
    body = {"model": model, "messages": PLAIN, "add_generation_prompt": True}
    with httpx.Client(base_url=vllm_pair.small.root_url, timeout=10) as vllm:
        ids = vllm.post("/tokenize", json=body).json()["tokens"]
        theirs = vllm.post("/detokenize", json={"model": model, "tokens": ids}).json()["prompt"]
    assert ours == theirs
    # No logprobs cap: more than vLLM's 20 come back.
    answer = httpx.post(llamacpp.base_url + "/completions", timeout=30, json={
        "model": NAME, "prompt": ours, "max_tokens": 1, "logprobs": 50,
    }).json()  # fmt: skip
    assert len(answer["choices"][0]["logprobs"]["top_logprobs"][0]) >= 45  # token texts may collide
    llama_counts(llamacpp)


def test_small_llamacpp_large_vllm_every_step_small(
    llamacpp: LlamaCppServer, vllm_pair: Pair
) -> None:
    before, large_before = llama_counts(llamacpp), vllm_counts(vllm_pair.large)
    msg = router(llamacpp.backend(), vllm_pair.large, math.inf).invoke(MESSAGES)
    after, large_after = llama_counts(llamacpp), vllm_counts(vllm_pair.large)
    rec = msg.response_metadata["glimprouter"]
    assert rec["n_steps"] >= 1
    assert rec["steps"][0]["index"] == 0
    assert_all_small(rec)
    # Step 0's H_init is the entropy of the server's own top-20 after the rendered prompt.
    backend = llamacpp.backend()
    prompt = open_thinking(render_jinja(backend.chat_template or "", PLAIN,
                                        **backend.chat_template_kwargs))  # fmt: skip
    first = httpx.post(llamacpp.base_url + "/completions", timeout=30, json={
        "model": NAME, "prompt": prompt, "max_tokens": 1, "logprobs": 20,
    }).json()["choices"][0]["logprobs"]["top_logprobs"][0]  # fmt: skip
    h, residual = first_token_entropy(first.values(), k=20)
    assert rec["steps"][0]["h_init"] == pytest.approx(h, abs=1e-3)
    assert rec["steps"][0]["residual_mass"] == pytest.approx(residual, abs=1e-3)
    before["requests"] += 1
    before["finished"] += 1
    after = llama_counts(llamacpp)
    # One llama.cpp request per step, each run to its end (unless closed at </think>); the
    # answer on vLLM.
    assert rec["requests"] == glimpse_requests(rec) == {"small": len(written(rec)), "large": 1}
    llama = delta(after, before)
    assert llama["requests"] == rec["requests"]["small"]
    assert llama["requests"] - closed_early(rec)["small"] <= llama["finished"] <= llama["requests"]
    large = delta(large_after, large_before)
    assert large["requests"] == 1
    assert large["tokens"] == rec["tokens"]["large"] == rec["answer_tokens"] >= 1
    assert isinstance(msg.content, str)


def test_small_llamacpp_zero_threshold_sends_nothing_to_it(
    llamacpp: LlamaCppServer, vllm_pair: Pair
) -> None:
    before, large_before = llama_counts(llamacpp), vllm_counts(vllm_pair.large)
    msg = router(llamacpp.backend(), vllm_pair.large, 0.0).invoke(MESSAGES)
    after, large_after = llama_counts(llamacpp), vllm_counts(vllm_pair.large)
    rec = msg.response_metadata["glimprouter"]
    assert rec["n_steps"] >= 1
    assert rec["n_large_steps"] == rec["n_steps"]
    assert all(step["h_init"] is None for step in rec["steps"])
    assert after == before  # not even a rendering request: llama.cpp is rendered client-side
    assert rec["requests"] == glimpse_requests(rec) == {"small": 0, "large": len(written(rec)) + 1}
    assert delta(large_after, large_before)["requests"] == rec["requests"]["large"]


def test_aborted_glimpses_stop_on_llamacpp(llamacpp: LlamaCppServer, vllm_pair: Pair) -> None:
    """Mixed routing with the small model on llama.cpp: every intervened step's glimpse is
    closed after its first token with content. Each run is held to the server's log; seeds are
    tried until a chain mixes both kinds of step (sampling decides)."""
    tau = 1.5
    for seed in range(1, 7):
        before, large_before = llama_counts(llamacpp), vllm_counts(vllm_pair.large)
        msg = router(llamacpp.backend(), vllm_pair.large, tau, seed=seed).invoke(MESSAGES)
        after, large_after = llama_counts(llamacpp), vllm_counts(vllm_pair.large)
        rec = msg.response_metadata["glimprouter"]
        large_steps = [s for s in rec["steps"] if s["model"] == "large"]
        small_steps = [s for s in rec["steps"] if s["model"] == "small"]
        assert all(s["h_init"] > tau for s in large_steps)
        assert all(s["h_init"] <= tau for s in small_steps)
        llama = delta(after, before)
        # Delegated: one request run to its end. Intervened: the glimpse, closed after its
        # first token with content (and the whitespace it read past), plus one vLLM request.
        assert llama["requests"] == rec["requests"]["small"] == glimpse_requests(rec)["small"]
        assert delta(large_after, large_before)["requests"] == rec["requests"]["large"]
        assert rec["requests"]["large"] == glimpse_requests(rec)["large"]
        for step in large_steps:  # the whitespace read past is one token or more
            assert step["wasted_tokens"] >= 2 if step["skipped"] else step["wasted_tokens"] == 1
        # Every delegated step ran to its end (but one closed at </think>); a cut glimpse
        # whose whole step was shorter than the time the server takes to notice the close may
        # still have finished, so at most every request did.
        closed = closed_early(rec)["small"]
        assert len(small_steps) - (rec["chain_end"] == "think_end") <= llama["finished"]
        assert llama["requests"] - closed <= llama["finished"] <= llama["requests"]
        if 0 < rec["n_large_steps"] < rec["n_steps"]:
            return
    tiny_model_missed(f"no chain mixed small and large steps at tau={tau}")


def test_closing_a_stream_stops_the_generation(llamacpp: LlamaCppServer) -> None:
    """A 300-token stream closed after its first chunk never runs to its end, while the next
    request (which the server only serves once no generation is running, as it generates for one
    request at a time) does."""
    before = llama_counts(llamacpp)
    prompt = "<|im_start|>user\nTell a long story.<|im_end|>\n<|im_start|>assistant\n"
    # EOS and <|im_end|> (ids 0 and 2) banned: the story cannot end before the close does
    body = {"model": NAME, "prompt": prompt, "max_tokens": 300, "logprobs": 20, "stream": True,
            "logit_bias": {"0": -100, "2": -100}}  # fmt: skip
    with httpx.Client(timeout=60) as http:
        with http.stream("POST", llamacpp.base_url + "/completions", json=body) as response:
            first = next(line for line in response.iter_lines() if line.startswith("data: {"))
        assert '"top_logprobs"' in first
        follow = http.post(llamacpp.base_url + "/completions", json={**body, "stream": False,
                                                                      "max_tokens": 2})  # fmt: skip
    assert follow.status_code == 200
    assert delta(llama_counts(llamacpp), before) == {"requests": 2, "finished": 1}


def test_small_vllm_large_llamacpp(llamacpp: LlamaCppServer, vllm_pair: Pair) -> None:
    """The other way round: every step's glimpse on vLLM, interventions and the answer on
    llama.cpp, whose requests always run to their end (unless closed at </think>). Seeds are
    tried until a step goes to the large model (sampling decides)."""
    tau = 1.5
    for seed in range(1, 7):
        before, small_before = llama_counts(llamacpp), vllm_counts(vllm_pair.small)
        msg = router(vllm_pair.small, llamacpp.backend(), tau, seed=seed).invoke(MESSAGES)
        after, small_after = llama_counts(llamacpp), vllm_counts(vllm_pair.small)
        rec = msg.response_metadata["glimprouter"]
        large_steps = [s for s in rec["steps"] if s["model"] == "large"]
        assert all(s["h_init"] is not None and s["h_init"] > tau for s in large_steps)
        assert rec["requests"] == glimpse_requests(rec)
        assert delta(small_after, small_before)["requests"] == rec["requests"]["small"]
        llama = delta(after, before)
        assert llama["requests"] == rec["requests"]["large"]
        assert llama["requests"] - closed_early(rec)["large"] <= llama["finished"]
        assert llama["finished"] <= llama["requests"]
        assert rec["tokens"]["large"] >= rec["answer_tokens"]  # counted from the stream
        assert isinstance(msg.content, str)
        assert msg.response_metadata["model_name"] == NAME
        if rec["n_large_steps"] >= 1:
            return
    tiny_model_missed(f"no step went to the large model at tau={tau}")


# -- one BOS and the same accounting as on vLLM (issue 31) -----------------------------------------


def both_roles(backend: Backend, threshold: float, **kwargs: Any) -> GlimpRouterChatModel:
    """The one llama.cpp server in both roles: no vLLM needed for what concerns this kind."""
    return router(backend, backend, threshold, **kwargs)


def test_the_bos_is_checked_once_on_the_real_server(llamacpp: LlamaCppServer) -> None:
    """SmolLM2's GGUF says add_bos_token false: the server adds nothing, so its template's own
    text is the prompt. A template that writes {{ bos_token }} in front of it doubles the
    first token (ids [1, 1, ...]) and one that writes an empty bos_token leaves it without: both
    are PromptRenderingError on the real server's tokenizer, before any completion."""
    good = llamacpp.backend()
    model = both_roles(good, math.inf, max_reasoning_tokens=8, max_tokens=4)
    model.invoke(MESSAGES)
    renders = model.router.facts.renders
    assert renders.tokenizers == {llamacpp.base_url: "llama-cpp-python"}
    assert list(renders.bos.values()) == [""]  # nothing to drop: exactly one <|im_start|> first
    before = llama_counts(llamacpp)
    template = "{{ bos_token }}" + (good.chat_template or "")
    doubled = good.model_copy(update={"chat_template": template})
    with pytest.raises(PromptRenderingError, match=r"same token twice.*ids \[1, 1, "):
        both_roles(doubled, math.inf).invoke(MESSAGES)
    kwargs = {**good.chat_template_kwargs, "bos_token": ""}
    missing = doubled.model_copy(update={"chat_template_kwargs": kwargs})
    with pytest.raises(PromptRenderingError, match=r"llama-cpp-python\) adds no BOS"):
        both_roles(missing, math.inf).invoke(MESSAGES)
    assert llama_counts(llamacpp)["requests"] == before["requests"]  # no completion was sent


def test_tokens_and_prompt_tokens_match_the_servers_own_usage(llamacpp: LlamaCppServer) -> None:
    """Greedy small-only reasoning on llama.cpp: each step replayed without streaming (same
    prompt, stop, budget) gets llama-cpp-python's own usage. Its prompt tokens (BOS included)
    sum to the record's. Its completion tokens are the step's recorded tokens, the stop
    string's token included as vLLM counts it, but for one: a stop string the model writes in
    two tokens ("\\n", "\\n") is streamed only up to its first (measured: a step of 57 text
    tokens recorded 58, the server's usage 59; docs/servers.md)."""
    backend = llamacpp.backend()
    model = both_roles(backend, math.inf, temperature=0.0, max_reasoning_tokens=64)
    rec = model.invoke(MESSAGES).response_metadata["glimprouter"]
    steps = rec["steps"]
    assert steps
    assert all(step["model"] == "small" for step in steps)
    assert rec["requests"]["small"] == len(steps) + (rec["chain_end"] == "think_end")
    prompt = open_thinking(render_jinja(backend.chat_template or "", PLAIN,
                                        **backend.chat_template_kwargs))  # fmt: skip
    remaining, prompt_tokens, compared = 64, 0, 0
    for step in steps:
        body = {"model": NAME, "prompt": prompt, "max_tokens": remaining, "stop": ["\n\n"],
                "temperature": 0.0, "seed": 7}  # fmt: skip
        usage = httpx.post(llamacpp.base_url + "/completions", json=body, timeout=120).json()
        usage = usage["usage"]
        prompt_tokens += usage["prompt_tokens"]
        if step["finish"] == "length":
            assert step["tokens"] == usage["completion_tokens"], step
        elif step["finish"] == "delimiter":
            assert usage["completion_tokens"] - 1 <= step["tokens"] <= usage["completion_tokens"]
            compared += 1
        prompt += step["text"] + "\n\n"
        remaining -= step["tokens"]
    assert compared >= 1  # a step ended by its delimiter, so the stop token is in the count
    if rec["requests"]["small"] == len(steps):  # no request past the last step
        assert rec["prompt_tokens"]["small"] == prompt_tokens
    assert rec["prompt_tokens"]["large"] >= 1  # the answer's prompt, counted as well
