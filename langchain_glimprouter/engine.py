"""The probe-then-dispatch step loop over two backends. No LangChain in here.

For each reasoning step the small backend *glimpses*: it starts generating the step and the
entropy ``H_init`` of its first token's top-k distribution decides who writes the step. At or
below the threshold the small model goes on in the same stream (one request per delegated
step); above it the small stream is closed at once (the server aborts it, the glimpsed token is
discarded) and the large backend writes the step from the same context, rendered with its own
chat template. The final answer after ``</think>`` is always written by the large backend.

Prompts are append-only (each backend's prefix, then ``step + delimiter`` per step), so both
servers' prefix caches hit across steps. The loop is a :mod:`~langchain_glimprouter.program`:
it yields I/O operations and :class:`Emit`\\ s events, and the same code runs sync and async.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from langchain_glimprouter.backends import Backend, Chunk
from langchain_glimprouter.entropy import Estimator, first_token_entropy
from langchain_glimprouter.errors import (
    BackendResponseError,
    MissingLogprobsError,
    StreamInterruptedError,
)
from langchain_glimprouter.program import Close, Emit, Open, Program, Read, Request
from langchain_glimprouter.prompts import THINK_CLOSE, RenderCache, render
from langchain_glimprouter.records import ChainEnd, Role, RoutingRecord, StepRecord

Probe = Literal["stream", "separate"]
ROLES: tuple[Role, Role] = ("small", "large")


@dataclass(frozen=True)
class RouteSettings:
    """Everything one routed call needs besides the conversation and the servers."""

    threshold: float
    estimator: Estimator = "topk_renormalized"
    probe: Probe = "stream"
    top_logprobs: int = 20
    max_reasoning_tokens: int = 8192
    max_tokens: int = 2048
    temperature: float | None = 0.6
    top_p: float | None = 0.95
    seed: int | None = None
    step_delimiter: str = "\n\n"
    stop: tuple[str, ...] = ()
    """Stop sequences of the final answer."""


@dataclass(frozen=True)
class ReasoningDelta:
    """New text of the reasoning chain (steps joined by the delimiter), as it is produced."""

    text: str


@dataclass(frozen=True)
class StepDone:
    """A reasoning step is finished."""

    record: StepRecord


@dataclass(frozen=True)
class AnswerDelta:
    """New text of the final answer."""

    text: str


@dataclass(frozen=True)
class Result:
    """The end of a routed call: the whole answer, chain and routing record."""

    answer: str
    reasoning: str
    finish_reason: str | None
    record: RoutingRecord
    input_tokens: int
    output_tokens: int
    reasoning_tokens: int


Event = ReasoningDelta | StepDone | AnswerDelta | Result


@dataclass
class ServerFacts:
    """What the router learned about the servers; reused across calls of one router."""

    renders: RenderCache = field(default_factory=RenderCache)
    max_model_len: dict[tuple[str, str], int | None] = field(default_factory=dict)
    """Context window per (base_url, model), from the server's /v1/models; None if unknown."""


@dataclass
class _Generation:
    """What one streamed request produced so far."""

    text: str = ""
    counted_tokens: int = 0
    usage_tokens: int | None = None
    prompt_tokens: int | None = None
    first_token: str | None = None
    top_logprobs: dict[str, float] | None = None
    finish_reason: str | None = None
    stop_reason: str | int | None = None
    reports_stop_reason: bool = False
    ended: bool = False

    def feed(self, chunk: Chunk) -> None:
        self.text += chunk.text
        self.counted_tokens += chunk.n_tokens
        if chunk.completion_tokens is not None:
            self.usage_tokens = chunk.completion_tokens
        if chunk.prompt_tokens is not None:
            self.prompt_tokens = chunk.prompt_tokens
        if self.first_token is None and chunk.first_token is not None:
            self.first_token, self.top_logprobs = chunk.first_token, chunk.top_logprobs
        if chunk.finish_reason is not None:
            self.finish_reason = chunk.finish_reason
            self.stop_reason = chunk.stop_reason
            self.reports_stop_reason = chunk.reports_stop_reason

    @property
    def tokens(self) -> int:
        return self.usage_tokens if self.usage_tokens is not None else self.counted_tokens

    @property
    def hit_eos(self) -> bool:
        """Ended by the model's end-of-sequence token rather than a stop string."""
        if self.finish_reason != "stop":
            return False
        return self.stop_reason is None if self.reports_stop_reason else not self.text.strip()


class _Holdback:
    """Releases streamed step text, holding back what could be the start of ``</think>``."""

    def __init__(self, lead: str) -> None:
        self.lead = lead
        self.sent = 0

    def delta(self, text: str, final: bool = False) -> str:
        end = len(text)
        if THINK_CLOSE in text:
            end = text.index(THINK_CLOSE)
        elif not final:
            for n in range(min(len(THINK_CLOSE) - 1, len(text)), 0, -1):
                if text.endswith(THINK_CLOSE[:n]):
                    end -= n
                    break
        if end <= self.sent or not text[:end].strip():
            return ""
        out, self.sent = text[self.sent : end], end
        if self.lead:
            out, self.lead = self.lead + out, ""
        return out


class _Run:
    """State of one routed call; its generator methods are the routing program."""

    def __init__(
        self,
        messages: list[dict[str, Any]],
        backends: Mapping[str, Backend],
        settings: RouteSettings,
        facts: ServerFacts,
    ) -> None:
        self.messages = messages
        self.backends = backends
        self.s = settings
        self.facts = facts
        self.record = RoutingRecord(
            threshold=settings.threshold, estimator=settings.estimator, probe=settings.probe
        )
        self.prefix: dict[str, str] = {}
        self.steps: list[str] = []
        self.chain = ""
        """Every kept step followed by the delimiter: what both prompts append to their prefix."""

    # -- I/O helpers ---------------------------------------------------------------------------

    def _learn_limits(self, role: str) -> Program[None]:
        backend = self.backends[role]
        if (backend.base_url, backend.model) in self.facts.max_model_len:
            return
        limit: int | None = None
        try:
            listing = yield Request(role, "GET", "/v1/models")
            for card in listing.get("data") or []:
                if card.get("id") == backend.model and isinstance(card.get("max_model_len"), int):
                    limit = card["max_model_len"]
        except BackendResponseError:
            limit = None
        self.facts.max_model_len[backend.base_url, backend.model] = limit

    def _body(
        self, role: str, prompt: str, max_tokens: int, stop: list[str], logprobs: int | None
    ) -> dict[str, Any]:
        backend = self.backends[role]
        limit = self.facts.max_model_len.get((backend.base_url, backend.model))
        body: dict[str, Any] = {
            "model": backend.model,
            "prompt": prompt,
            "max_tokens": min(max_tokens, limit) if limit else max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True, "continuous_usage_stats": True},
            "add_special_tokens": False,
        }
        if stop:
            body["stop"] = stop
        if logprobs is not None:
            body["logprobs"] = logprobs
        for key in ("temperature", "top_p", "seed"):
            if (value := getattr(self.s, key)) is not None:
                body[key] = value
        body.update(backend.extra_body)
        return body

    def _consume(self, role: str, gen: _Generation, emit: _Holdback | None) -> Program[None]:
        """Read the open stream to its end (or to ``</think>``), emitting reasoning deltas."""
        while True:
            chunk = yield Read()
            if chunk is None:
                gen.ended = True
                break
            gen.feed(chunk)
            if emit is not None and (delta := emit.delta(gen.text)):
                yield Emit(ReasoningDelta(delta))
            if emit is not None and THINK_CLOSE in gen.text:
                yield Close()  # the chain is over: no need for the rest of this step
                break
        if gen.ended and gen.finish_reason is None:
            raise StreamInterruptedError(
                "the stream ended before the server reported a finish_reason. Check the "
                "server's log (crash, restart or proxy timeout) and retry.",
                role=role,
                url=self.backends[role].base_url,
            )

    def _account(self, role: Role, gen: _Generation) -> None:
        self.record.requests[role] += 1
        self.record.tokens[role] += gen.tokens
        self.record.prompt_tokens[role] += gen.prompt_tokens or 0

    def _glimpse(self, gen: _Generation) -> Program[tuple[float | None, float | None]]:
        """Read the small stream up to its first token; return (H_init, residual mass)."""
        while gen.first_token is None:
            chunk = yield Read()
            if chunk is None:
                gen.ended = True
                break
            gen.feed(chunk)
        if gen.top_logprobs:
            return first_token_entropy(
                gen.top_logprobs.values(), self.s.estimator, k=self.s.top_logprobs
            )
        if gen.tokens == 0 and gen.ended:
            return None, None  # the model ended at once (EOS): an empty step
        raise MissingLogprobsError(
            "the server returned no top_logprobs for the step's first token, so H_init cannot "
            f"be measured. Start vLLM with --max-logprobs >= {self.s.top_logprobs} (or lower "
            "top_logprobs), and make sure the server supports `logprobs` on /v1/completions.",
            role="small",
            url=self.backends["small"].base_url,
        )

    # -- the program ---------------------------------------------------------------------------

    def run(self) -> Program[None]:
        started = time.perf_counter()
        s = self.s
        roles: tuple[Role, ...] = ROLES if s.threshold > 0 else ("large",)
        for role in roles:
            yield from self._learn_limits(role)
            self.prefix[role] = yield from render(
                role, self.backends[role], self.messages, self.facts.renders
            )
        end: ChainEnd | None = None
        reasoning_tokens = 0
        last_text: str | None = None
        closing = THINK_CLOSE + "\n\n"
        while end is None:
            remaining = s.max_reasoning_tokens - reasoning_tokens
            if remaining <= 0:
                end, closing = "budget", "\n" + THINK_CLOSE + "\n\n"
                break
            step = yield from self._step(len(self.steps), remaining)
            reasoning_tokens += step.tokens
            text = step.text
            if step.finish == "think_end":
                end = "think_end"
            elif step.finish == "length":
                end, closing = "budget", "\n" + THINK_CLOSE + "\n\n"
            elif step.finish == "eos" or not text.strip():
                end = "eos"
            elif last_text is not None and text.strip() == last_text:
                end, step.finish = "loop", "loop"
            last_text = text.strip()
            if text.strip():
                self.steps.append(text)
                self.record.steps.append(step)
                self.chain += text if end in ("think_end", "budget") else text + s.step_delimiter
                yield Emit(StepDone(step))
        if end == "think_end":
            closing = THINK_CLOSE + "\n\n"
        self.record.chain_end = end
        answer = yield from self._answer(self.prefix["large"] + self.chain + closing)
        rec = self.record
        rec.n_steps = len(rec.steps)
        rec.n_large_steps = sum(1 for st in rec.steps if st.model == "large")
        rec.intervention_rate = rec.n_large_steps / rec.n_steps if rec.n_steps else 0.0
        rec.reasoning_tokens = reasoning_tokens
        rec.latency_s = time.perf_counter() - started
        output = rec.tokens["small"] + rec.tokens["large"]
        yield Emit(
            Result(
                answer=answer.text,
                reasoning=s.step_delimiter.join(self.steps),
                finish_reason=answer.finish_reason,
                record=rec,
                input_tokens=rec.prompt_tokens["small"] + rec.prompt_tokens["large"],
                output_tokens=output,
                reasoning_tokens=output - rec.answer_tokens,
            )
        )

    def _step(self, index: int, remaining: int) -> Program[StepRecord]:
        s = self.s
        started = time.perf_counter()
        stop = [s.step_delimiter]
        h: float | None = None
        residual: float | None = None
        first: str | None = None
        wasted = 0
        writer: Role = "large"
        gen: _Generation | None = None
        if s.threshold > 0:
            k = s.top_logprobs
            if s.probe == "stream":
                probe = _Generation()
                yield Open("small", self._body("small", self._prompt("small"), remaining, stop, k))
                h, residual = yield from self._glimpse(probe)
                if h is None or h <= s.threshold:
                    writer, gen = "small", probe
                else:
                    if not probe.ended:
                        yield Close()
                    wasted = probe.tokens
                    self._account("small", probe)
            else:
                probe = _Generation()
                yield Open("small", self._body("small", self._prompt("small"), 1, [], k))
                h, residual = yield from self._glimpse(probe)
                if not probe.ended:
                    yield from self._consume("small", probe, None)
                wasted = probe.tokens
                self._account("small", probe)
                writer = "small" if h is None or h <= s.threshold else "large"
            first = probe.first_token
        lead = s.step_delimiter if index else ""
        holdback = _Holdback(lead)
        if gen is None:
            gen = _Generation()
            yield Open(writer, self._body(writer, self._prompt(writer), remaining, stop, None))
        elif delta := holdback.delta(gen.text):
            yield Emit(ReasoningDelta(delta))
        yield from self._consume(writer, gen, holdback)
        self._account(writer, gen)
        self.record.wasted_small_tokens += wasted
        text = gen.text
        if THINK_CLOSE in text:
            text, finish = text[: text.index(THINK_CLOSE)], "think_end"
        elif gen.finish_reason == "length":
            finish = "length"
        elif gen.hit_eos:
            finish = "eos"
        else:
            finish = "delimiter"
        if text.strip() and (delta := holdback.delta(text, final=True)):
            yield Emit(ReasoningDelta(delta))
        return StepRecord(
            index=index,
            model=writer,
            h_init=h,
            first_token=first,
            residual_mass=residual,
            tokens=gen.tokens,
            text=text,
            latency_s=time.perf_counter() - started,
            wasted_tokens=wasted,
            finish=finish,
        )

    def _prompt(self, role: str) -> str:
        return self.prefix[role] + self.chain

    def _answer(self, prompt: str) -> Program[_Generation]:
        gen = _Generation()
        yield Open("large", self._body("large", prompt, self.s.max_tokens, list(self.s.stop), None))
        while True:
            chunk = yield Read()
            if chunk is None:
                break
            gen.feed(chunk)
            if chunk.text:
                yield Emit(AnswerDelta(chunk.text))
        if gen.finish_reason is None:
            raise StreamInterruptedError(
                "the answer stream ended before the server reported a finish_reason. Check "
                "the server's log and retry.",
                role="large",
                url=self.backends["large"].base_url,
            )
        self._account("large", gen)
        self.record.answer_tokens = gen.tokens
        return gen


def route(
    messages: list[dict[str, Any]],
    backends: Mapping[str, Backend],
    settings: RouteSettings,
    facts: ServerFacts,
) -> Program[None]:
    """The routing program for one conversation; drive it with ``program.drive``/``adrive``.

    It emits :class:`ReasoningDelta`, :class:`StepDone` and :class:`AnswerDelta` events as the
    chain and the answer are produced, and one :class:`Result` at the end.
    """
    return _Run(messages, backends, settings, facts).run()
