"""The probe-then-dispatch step loop over two backends. No LangChain in here.

For each reasoning step the small backend *glimpses*: it starts generating the step and the
entropy ``H_init`` of its first token's top-k distribution decides who writes the step. At or
below the threshold the small model goes on in the same stream (one request per delegated
step); above it the small stream is closed at once (the server aborts it, the glimpsed token is
discarded) and the large backend writes the step from the same context, rendered with its own
chat template. The final answer after ``</think>`` is written by the large backend.

The baselines (``large_only``, ``small_only``, which also answers, ``random``) and the
generate-then-measure strategies (``step_entropy``, ``step_ppl``, ``specreason``; see
:mod:`~langchain_glimprouter.routing.strategies`) run in the same step loop, so they record the
same.

Prompts are append-only (each backend's prefix, then ``step + delimiter`` per step), so both
servers' prefix caches hit across steps. The loop is a :mod:`~langchain_glimprouter.routing.ops`:
it yields I/O operations and :class:`Emit`\\ s events, and the same code runs sync and async.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from langchain_glimprouter.backend import Backend
from langchain_glimprouter.errors import (
    BackendResponseError,
    BackendTimeoutError,
    BackendUnreachableError,
    GlimpRouterError,
    InvalidArgumentError,
    LogprobsCapError,
    MissingLogprobsError,
    StreamInterruptedError,
)
from langchain_glimprouter.records import ChainEnd, Role, RoutingRecord, StepRecord
from langchain_glimprouter.routing.entropy import (
    EntropyBounds,
    Estimator,
    entropy_bounds,
    first_token_entropy,
)
from langchain_glimprouter.routing.ops import (
    RETRYABLE_STATUS,
    Close,
    Emit,
    Open,
    Program,
    Read,
    Request,
    replica_order,
    retrying,
)
from langchain_glimprouter.routing.prompts import THINK_CLOSE, RenderCache, render
from langchain_glimprouter.routing.strategies import (
    JUDGE_PROMPT,
    MEASURED,
    AdaptiveThreshold,
    Strategy,
    difficulty,
    judge_score,
    mean_step_entropy,
    perplexity,
)
from langchain_glimprouter.routing.wire import Chunk

Probe = Literal["stream", "separate"]
REPLICA_COOLDOWN_S = 30.0
"""How long a replica found unreachable is tried last by new conversations."""
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
    delimiters: tuple[str, ...] = ("\n\n",)
    """What ends a reasoning step (stop strings); the one that ended it is kept in the chain."""
    max_step_tokens: int | None = None
    """A longer step is cut there and the next step continues its text (None: no limit)."""
    escalation_logprobs: int = 1000
    """``topk_bounds``: k of the 1-token probe of a step too close to call (0: never)."""
    strategy: Strategy = "glimpse"
    target_rate: float | None = None
    """Share of large steps: the probability of ``random``, the controller's target."""
    controller: AdaptiveThreshold | None = None
    """``threshold="auto"``: decides in place of ``threshold`` (shared across calls)."""
    stop: tuple[str, ...] = ()
    """Stop sequences of the final answer."""
    max_retries: int = 2
    """Retries of a failed request or a cut stream, unless the Backend sets its own."""
    on_small_failure: Literal["raise", "large"] = "raise"
    """What a failure of the small backend does: raise, or send the steps to the large one."""
    tools: tuple[dict[str, Any], ...] = ()
    """OpenAI-style tool definitions, rendered into both backends' prompts."""
    answer: AnswerConstraint | None = None
    """A constrained final answer (a forced tool call, a JSON schema), or free text."""


@dataclass(frozen=True)
class AnswerConstraint:
    """The final answer as ``prefix`` + text the server constrains to ``schema`` + ``suffix``.

    ``prefix`` is written into the large backend's prompt (the model continues after it) and is
    part of the answer; ``schema`` is a JSON schema enforced by the server's structured outputs
    (vLLM: ``structured_outputs.json``); ``suffix`` closes the answer when the server stopped
    on its own (not at ``max_tokens``).
    """

    schema: dict[str, Any]
    prefix: str = ""
    suffix: str = ""


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
    down: dict[str, float] = field(default_factory=dict)
    """Replica URLs found unreachable, with when (time.monotonic); skipped for a while."""
    max_model_len: dict[tuple[str, str], int | None] = field(default_factory=dict)
    """Context window per (base_url, model), from the server's /v1/models; None if unknown."""
    max_logprobs: dict[str, int] = field(default_factory=dict)
    """The logprobs cap a server refused more than (vLLM's --max-logprobs), per base_url."""


@dataclass
class _Generation:
    """One piece of generated text (a step, a glimpse or the answer), across the streams that
    produced it: a cut stream is resumed from the text received so far, and a step may move from
    the small to the large backend (fallback)."""

    role: Role
    body: dict[str, Any]
    """The request as first sent; a resumed stream appends ``text`` to its prompt."""
    text: str = ""
    settled_tokens: int = 0
    """Tokens of the streams already finished or abandoned (and accounted)."""
    counted_tokens: int = 0
    usage_tokens: int | None = None
    prompt_tokens: int | None = None
    first_token: str | None = None
    top_logprobs: dict[str, float] | None = None
    finish_reason: str | None = None
    stop_reason: str | int | None = None
    reports_stop_reason: bool = False
    ended: bool = False
    resumes: int = 0
    token_logprobs: list[float | None] = field(default_factory=list)
    token_tops: list[dict[str, float]] = field(default_factory=list)
    token_texts: list[str] = field(default_factory=list)

    def feed(self, chunk: Chunk) -> None:
        self.text += chunk.text
        self.token_logprobs.extend(chunk.token_logprobs)
        self.token_tops.extend(chunk.token_top_logprobs)
        self.token_texts.extend(chunk.token_texts)
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

    def content_start(self) -> int | None:
        """Index of the first token with content (not whitespace only); None until one came."""
        return next((i for i, token in enumerate(self.token_texts) if token.strip()), None)

    @property
    def stream_tokens(self) -> int:
        """Tokens of the current stream."""
        return self.usage_tokens if self.usage_tokens is not None else self.counted_tokens

    @property
    def tokens(self) -> int:
        return self.settled_tokens + self.stream_tokens

    def request(self) -> dict[str, Any]:
        """The body for the next stream: the original, continued after the text so far."""
        if not self.text and not self.settled_tokens:
            return self.body
        return {
            **self.body,
            "prompt": self.body["prompt"] + self.text,
            "max_tokens": max(1, self.body["max_tokens"] - self.tokens),
        }

    @property
    def hit_eos(self) -> bool:
        """Ended by the model's end-of-sequence token rather than a stop string."""
        if self.finish_reason != "stop":
            return False
        return self.stop_reason is None if self.reports_stop_reason else not self.text.strip()


@dataclass(frozen=True)
class _Glimpse:
    """What the glimpse of a step start measured."""

    h: float | None
    """H_init; None when the small model ended at once (nothing to measure)."""
    residual: float | None
    token: str | None
    """The token measured: the step's first token with content."""
    skipped: str
    """The whitespace-only tokens read past before it."""
    bounds: EntropyBounds | None = None
    """``topk_bounds``: what the top k say of the exact entropy."""


@dataclass(frozen=True)
class _Verdict:
    """A ``topk_bounds`` decision and what it cost."""

    large: bool
    decision: str
    """"certain", "estimated" or "escalated" (see StepRecord.decision)."""
    bounds: EntropyBounds
    """The bounds it was taken on: the escalation's, when there was one."""
    tokens: int = 0
    """Small-model tokens the escalation generated (thrown away)."""
    latency_s: float = 0.0


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
            threshold=settings.threshold,
            estimator=settings.estimator,
            probe=settings.probe,
            strategy=settings.strategy,
            target_rate=settings.target_rate,
        )
        self.retries = {
            role: settings.max_retries if backend.max_retries is None else backend.max_retries
            for role, backend in backends.items()
        }
        self.small_down = False
        """The small backend failed and ``on_small_failure="large"``: steps go large."""
        self.prefix: dict[str, str] = {}
        self.steps: list[str] = []
        self.seps: list[str] = []
        """What followed each kept step in the chain: the delimiter that ended it, or nothing."""
        self.chain = ""
        """Every kept step followed by its separator: what both prompts append to their prefix."""
        self.rng = random.Random(settings.seed)
        """The coin of ``strategy="random"`` (reproducible with a seed)."""

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

    def _open(self, gen: _Generation) -> Program[None]:
        yield Open(gen.role, gen.request())
        self.record.requests[gen.role] += 1

    def _settle(self, gen: _Generation) -> None:
        """Account the current stream of ``gen`` to its backend and start a fresh count."""
        self.record.tokens[gen.role] += gen.stream_tokens
        self.record.prompt_tokens[gen.role] += gen.prompt_tokens or 0
        gen.settled_tokens += gen.stream_tokens
        gen.usage_tokens, gen.counted_tokens, gen.prompt_tokens = None, 0, None

    def _next(self, gen: _Generation) -> Program[Chunk | None]:
        """The next chunk of ``gen``'s open stream. A stream cut before its finish_reason is
        resumed where it broke (its prompt extended by the text received, so nothing is
        duplicated), up to the backend's retry count."""
        while True:
            try:
                chunk: Chunk | None = yield Read()
                if chunk is None and gen.finish_reason is None:
                    raise StreamInterruptedError(
                        "the stream ended before the server reported a finish_reason. Check "
                        "the server's log (crash, restart or proxy timeout) and retry.",
                        role=gen.role,
                        url=self.backends[gen.role].base_url,
                    )
            except StreamInterruptedError:
                if gen.resumes >= self.retries[gen.role]:
                    raise
                gen.resumes += 1
                self.record.resumed_streams += 1
                self._settle(gen)
                yield Close()
                yield from self._open(gen)
                continue
            if chunk is None:
                gen.ended = True
            else:
                gen.feed(chunk)
            return chunk

    def _consume(self, gen: _Generation, emit: _Holdback | None) -> Program[None]:
        """Read ``gen``'s stream to its end (or to ``</think>``), emitting reasoning deltas."""
        while True:
            if emit is not None:
                if delta := emit.delta(gen.text):
                    yield Emit(ReasoningDelta(delta))
                if THINK_CLOSE in gen.text:  # the chain is over: not a token more of this step
                    if not gen.ended:
                        yield Close()
                    return
            if (yield from self._next(gen)) is None:
                return

    def _glimpse(self, gen: _Generation) -> Program[_Glimpse]:
        """Read the small stream up to the step's first token with content: whitespace-only
        tokens before it end the delimiter (a step that starts with a lone "\\n"), so the
        glimpse reads past them, in the same stream, and measures that token's distribution."""
        while gen.content_start() is None and (yield from self._next(gen)) is not None:
            pass
        return self._measure_start(gen)

    def _measure_start(self, gen: _Generation) -> _Glimpse:
        """H_init of the first token with content among those ``gen`` received (the first
        token when there is none: a step of whitespace only)."""
        at = gen.content_start()
        if at is None:
            at = 0
        tops = gen.token_tops[at] if at < len(gen.token_tops) else gen.top_logprobs
        if tops:
            token = gen.token_texts[at] if at < len(gen.token_texts) else gen.first_token
            skipped = "".join(gen.token_texts[:at])
            if self.s.estimator == "topk_bounds":
                bounds = entropy_bounds(tops.values(), k=self.s.top_logprobs)
                return _Glimpse(bounds.estimate, bounds.residual, token, skipped, bounds)
            h, residual = first_token_entropy(
                tops.values(), self.s.estimator, k=self.s.top_logprobs
            )
            return _Glimpse(h, residual, token, skipped)
        if gen.tokens == 0 and gen.ended:
            return _Glimpse(None, None, None, "")  # the model ended at once (EOS): empty step
        raise MissingLogprobsError(
            "the server returned no top_logprobs for the step's first token, so H_init cannot "
            f"be measured. Start vLLM with --max-logprobs >= {self.s.top_logprobs} (or lower "
            "top_logprobs), and make sure the server supports `logprobs` on /v1/completions.",
            role="small",
            url=self.backends["small"].base_url,
        )

    def _small_failed(self, error: GlimpRouterError) -> bool:
        """Whether to carry on without the small backend after ``error`` (fallback): only for
        a server that is down or failing, never for a configuration problem."""
        transient = isinstance(
            error, (BackendUnreachableError, BackendTimeoutError, StreamInterruptedError)
        ) or (isinstance(error, BackendResponseError) and error.status_code in RETRYABLE_STATUS)
        if self.s.on_small_failure != "large" or not transient:
            return False
        self.small_down = True
        self.record.small_failures += 1
        return True

    # -- the program ---------------------------------------------------------------------------

    def _roles(self) -> tuple[Role, ...]:
        """The backends this call uses."""
        s = self.s
        if s.strategy == "small_only":
            return ("small",)
        if s.strategy == "large_only" or (
            s.strategy == "glimpse" and s.controller is None and s.threshold == 0
        ):
            return ("large",)
        return ROLES

    def run(self) -> Program[None]:
        started = time.perf_counter()
        s = self.s
        roles = self._roles()
        for role in roles:
            try:
                yield from self._learn_limits(role)
                self.prefix[role] = yield from render(
                    role, self.backends[role], self.messages, self.facts.renders, list(s.tools)
                )
            except GlimpRouterError as exc:
                if role != "small" or "large" not in roles or not self._small_failed(exc):
                    raise
        end: ChainEnd | None = None
        reasoning_tokens = 0
        last_text: str | None = None
        closing = THINK_CLOSE + "\n\n"
        while end is None:
            remaining = s.max_reasoning_tokens - reasoning_tokens
            if remaining <= 0:
                end, closing = "budget", "\n" + THINK_CLOSE + "\n\n"
                break
            step, sep = yield from self._step(len(self.steps), remaining)
            reasoning_tokens += step.tokens
            text = step.text
            if step.finish == "delimiter" and not text.strip() and self.seps[-1:] == [""]:
                # The step before was split at max_step_tokens just short of its delimiter.
                self.steps[-1] += text
                self.seps[-1] = sep
                self.chain += text + sep
                continue
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
                self.seps.append("" if end in ("think_end", "budget") else sep)
                self.record.steps.append(step)
                self.chain += text + self.seps[-1]
                yield Emit(StepDone(step))
        if end == "think_end":
            closing = THINK_CLOSE + "\n\n"
        self.record.chain_end = end
        writer: Role = "small" if s.strategy == "small_only" else "large"
        prompt = self.prefix[writer] + self.chain + closing
        answer_text, finish_reason = yield from self._answer(writer, prompt, s.answer)
        rec = self.record
        rec.n_steps = len(rec.steps)
        rec.n_large_steps = sum(1 for st in rec.steps if st.model == "large")
        rec.intervention_rate = rec.n_large_steps / rec.n_steps if rec.n_steps else 0.0
        rec.reasoning_tokens = reasoning_tokens
        rec.latency_s = time.perf_counter() - started
        if s.controller is not None and (tau := s.controller.threshold) is not None:
            rec.threshold = -tau if s.strategy == "specreason" else tau
        output = rec.tokens["small"] + rec.tokens["large"]
        reasoning = "".join(t + sep for t, sep in zip(self.steps, self.seps, strict=True))
        yield Emit(
            Result(
                answer=answer_text,
                reasoning=reasoning.removesuffix(self.seps[-1]) if self.seps else "",
                finish_reason=finish_reason,
                record=rec,
                input_tokens=rec.prompt_tokens["small"] + rec.prompt_tokens["large"],
                output_tokens=output,
                reasoning_tokens=output - rec.answer_tokens,
            )
        )

    def _decide(self, value: float | None) -> tuple[bool, float | None]:
        """Whether a measured step goes large, and the threshold applied. ``value`` is the
        strategy's measure (None: the small model ended at once, nothing to measure: small)."""
        s = self.s
        if value is None:
            return False, None
        if s.controller is not None:
            large, tau = s.controller.route(difficulty(s.strategy, value))
            return large, -tau if s.strategy == "specreason" else tau
        return difficulty(s.strategy, value) > difficulty(s.strategy, s.threshold), s.threshold

    def _bounded(self, glimpse: _Glimpse, bounds: EntropyBounds) -> Program[_Verdict]:
        """Decide on the bounds of H_init; a threshold too close to call from the top k is
        settled by one 1-token request for more of the same distribution (the escalation)."""
        s = self.s
        large, how = bounds.decide(s.threshold)
        if how != "uncertain":
            return _Verdict(large, how, bounds)
        url = self.backends["small"].base_url
        k = min(s.escalation_logprobs, self.facts.max_logprobs.get(url, s.escalation_logprobs))
        if k <= bounds.k:  # escalation off, or the server allows no more than the glimpse had
            return _Verdict(large, "estimated", bounds)
        started = time.perf_counter()
        body = self._body("small", self._prompt("small") + glimpse.skipped, 1, [], k)
        body["stream"] = False
        body.pop("stream_options", None)
        try:
            answer = yield Request("small", "POST", "/v1/completions", body)
        except LogprobsCapError as exc:  # learnt once per server; then retried at its cap
            self.facts.max_logprobs[url] = min(exc.cap, k - 1)  # lower each time: this ends
            return (yield from self._bounded(glimpse, bounds))
        self.record.requests["small"] += 1
        self.record.escalations += 1
        usage = answer.get("usage") or {}
        tokens = int(usage.get("completion_tokens") or 1)
        self.record.tokens["small"] += tokens
        self.record.prompt_tokens["small"] += int(usage.get("prompt_tokens") or 0)
        choice = (answer.get("choices") or [{}])[0]
        tops = ((choice.get("logprobs") or {}).get("top_logprobs") or [None])[0]
        took = time.perf_counter() - started
        if not tops:
            return _Verdict(large, "estimated", bounds, tokens, took)
        wider = entropy_bounds(tops.values(), k=k)
        large, how = wider.decide(s.threshold)
        return _Verdict(
            large, "escalated" if how == "certain" else "estimated", wider, tokens, took
        )

    def _probe(self, max_tokens: int, stop: list[str]) -> Program[tuple[_Generation, _Glimpse]]:
        """The small backend's glimpse of the next step: its stream and what it measured."""
        s = self.s
        if s.probe == "stream":
            probe = _Generation("small", self._body("small", self._prompt("small"), max_tokens,
                                                    stop, s.top_logprobs))  # fmt: skip
        else:
            probe = _Generation("small", self._body("small", self._prompt("small"), 1, [],
                                                    s.top_logprobs))  # fmt: skip
        yield from self._open(probe)
        glimpse = yield from self._glimpse(probe)
        if s.probe == "separate" and not probe.ended:
            yield from self._consume(probe, None)
        return probe, glimpse

    def _drafted(
        self, max_tokens: int, stop: list[str]
    ) -> Program[tuple[_Generation, float | None]]:
        """A whole step written by the small backend and its measure (``MEASURED`` strategies):
        the mean entropy, the perplexity, or the large backend's judge score (None: the small
        model wrote nothing)."""
        s = self.s
        logprobs = {"step_entropy": s.top_logprobs, "step_ppl": 1}.get(s.strategy)
        draft = _Generation("small", self._body("small", self._prompt("small"), max_tokens, stop,
                                                logprobs))  # fmt: skip
        yield from self._open(draft)
        while (yield from self._next(draft)) is not None:
            if THINK_CLOSE in draft.text:  # the chain is over: not a token more
                yield Close()
                draft.ended = True
                break
        text = draft.text.split(THINK_CLOSE)[0]
        if not text.strip():
            return draft, None
        if s.strategy == "specreason":
            return draft, (yield from self._judge(text))
        try:
            if s.strategy == "step_entropy":
                return draft, mean_step_entropy(draft.token_tops, s.estimator, s.top_logprobs)
            return draft, perplexity(draft.token_logprobs)
        except ValueError:
            raise MissingLogprobsError(
                f"the server returned no logprobs for the step's tokens, so {s.strategy} "
                "cannot measure it. Make sure the server supports `logprobs` on "
                f"/v1/completions (vLLM: --max-logprobs >= {s.top_logprobs}).",
                role="small",
                url=self.backends["small"].base_url,
            ) from None

    def _judge(self, text: str) -> Program[float]:
        """The large backend's one-token score (0-9) of the small model's step ``text``."""
        prompt = self._prompt("large") + text + JUDGE_PROMPT
        judge = _Generation("large", self._body("large", prompt, 1, [], self.s.top_logprobs))
        yield from self._open(judge)
        while (yield from self._next(judge)) is not None:
            pass
        self._settle(judge)
        if judge.top_logprobs is None:
            raise MissingLogprobsError(
                "the large server returned no top_logprobs for the judge's score token "
                "(specreason). Start it with --max-logprobs >= "
                f"{self.s.top_logprobs}, or lower top_logprobs.",
                role="large",
                url=self.backends["large"].base_url,
            )
        return judge_score(judge.top_logprobs)

    def _step(self, index: int, remaining: int) -> Program[tuple[StepRecord, str]]:
        """One reasoning step: its record and the separator that follows it in the chain."""
        s = self.s
        started = time.perf_counter()
        cap = min(remaining, s.max_step_tokens or remaining)
        stop = list(s.delimiters)
        glimpse = _Glimpse(None, None, None, "")
        score: float | None = None
        tau: float | None = None
        wasted = 0
        verdict: _Verdict | None = None
        fallback = False
        writer: Role = "large"
        gen: _Generation | None = None
        roles = self._roles()
        if roles == ("small",):
            writer = "small"
        elif roles == ("large",):
            pass
        elif self.small_down:
            fallback = True
        elif s.strategy == "random":
            writer = "large" if self.rng.random() < (s.target_rate or 0.0) else "small"
        else:
            try:
                if s.strategy in MEASURED:
                    probe, score = yield from self._drafted(cap, stop)
                    if s.strategy == "step_entropy" and probe.token_tops:
                        glimpse = self._measure_start(probe)
                    large, tau = self._decide(score)
                else:
                    probe, glimpse = yield from self._probe(cap, stop)
                    if glimpse.bounds is not None and s.controller is None:
                        verdict = yield from self._bounded(glimpse, glimpse.bounds)
                        large, tau = verdict.large, s.threshold
                    else:
                        large, tau = self._decide(glimpse.h)
            except GlimpRouterError as exc:
                if getattr(exc, "role", None) != "small" or not self._small_failed(exc):
                    raise  # a judge's (large) failure is never absorbed
                yield Close()
                fallback = True
            else:
                if (s.probe == "stream" or s.strategy in MEASURED) and not large:
                    writer, gen = "small", probe
                else:
                    if not probe.ended:
                        yield Close()
                    wasted = probe.tokens
                    self._settle(probe)
                    writer = "large" if large else "small"
        holdback = _Holdback(self.seps[-1] if self.seps else "")
        if gen is None:
            gen = _Generation(writer, self._body(writer, self._prompt(writer), cap, stop,
                                                 None))  # fmt: skip
            yield from self._open(gen)
        if not gen.ended:
            try:
                yield from self._consume(gen, holdback)
            except GlimpRouterError as exc:
                if gen.role != "small" or "large" not in roles or not self._small_failed(exc):
                    raise
                # The small backend died mid-step: the large one continues the same text.
                yield Close()
                self._settle(gen)
                gen.role, gen.resumes, fallback, writer = "large", 0, True, "large"
                gen.body = self._body("large", self._prompt("large"), cap, stop, None)
                yield from self._open(gen)
                yield from self._consume(gen, holdback)
        self._settle(gen)
        if verdict is not None:
            wasted += verdict.tokens
        self.record.wasted_small_tokens += wasted
        text = gen.text
        sep = ""
        if THINK_CLOSE in text:
            text, finish = text[: text.index(THINK_CLOSE)], "think_end"
        elif gen.finish_reason == "length":
            finish = "split" if cap < remaining else "length"
        elif gen.hit_eos:
            finish = "eos"
        else:
            finish, sep = "delimiter", self._ended_by(gen)
        if text.strip() and (delta := holdback.delta(text, final=True)):
            yield Emit(ReasoningDelta(delta))
        record = StepRecord(
            index=index,
            model=writer,
            h_init=verdict.bounds.estimate if verdict is not None else glimpse.h,
            first_token=glimpse.token,
            skipped=glimpse.skipped,
            residual_mass=glimpse.residual,
            score=score,
            threshold=tau,
            tokens=gen.tokens,
            text=text,
            latency_s=time.perf_counter() - started,
            wasted_tokens=wasted,
            decision=verdict.decision if verdict is not None else None,
            h_bounds=(verdict.bounds.lower, verdict.bounds.upper) if verdict is not None else None,
            escalation_tokens=verdict.tokens if verdict is not None else 0,
            escalation_s=verdict.latency_s if verdict is not None else 0.0,
            finish=finish,
            fallback=fallback,
        )
        return record, sep

    def _ended_by(self, gen: _Generation) -> str:
        """The delimiter that ended ``gen``'s step (the server excludes it from the text)."""
        delimiters = self.s.delimiters
        if isinstance(gen.stop_reason, str) and gen.stop_reason in delimiters:
            return gen.stop_reason
        if len(delimiters) == 1:
            return delimiters[0]
        raise InvalidArgumentError(
            f"the {gen.role} server did not say which of the step delimiters {delimiters!r} "
            "ended a step (no `stop_reason`, as vLLM sends), so the chain cannot be rebuilt "
            "exactly. Use a single step_delimiter with this server."
        )

    def _prompt(self, role: str) -> str:
        return self.prefix[role] + self.chain

    def _answer(
        self, role: Role, prompt: str, constraint: AnswerConstraint | None
    ) -> Program[tuple[str, str | None]]:
        """The final answer's text and finish reason, written by ``role``."""
        lead, stop = "", list(self.s.stop)
        if constraint is not None:
            lead, stop = constraint.prefix, []  # a stop string could cut the JSON
        body = self._body(role, prompt + lead, self.s.max_tokens, stop, None)
        if constraint is not None:
            body["structured_outputs"] = {"json": constraint.schema}
        gen = _Generation(role, body)
        yield from self._open(gen)
        if lead:
            yield Emit(AnswerDelta(lead))
        sent = 0
        while (yield from self._next(gen)) is not None:
            if len(gen.text) > sent:
                yield Emit(AnswerDelta(gen.text[sent:]))
                sent = len(gen.text)
        self._settle(gen)
        self.record.answer_tokens = gen.tokens
        if constraint is not None:
            self.record.answer_error = _incomplete_json(gen)
        tail = ""
        if constraint is not None and constraint.suffix and gen.finish_reason == "stop":
            tail = constraint.suffix
            yield Emit(AnswerDelta(tail))
        return lead + gen.text + tail, gen.finish_reason


def _incomplete_json(gen: _Generation) -> str | None:
    """Why the constrained part of an answer is not one whole JSON value (None: it is)."""
    try:
        json.loads(gen.text)
    except ValueError as exc:
        if gen.finish_reason == "length":
            return (
                f"the answer reached its token limit (max_tokens={gen.body['max_tokens']}) "
                f"before its JSON was complete: raise max_tokens, on the router or per call"
            )
        if not gen.text.strip():
            return (
                f"the server wrote no JSON (finish_reason={gen.finish_reason!r}): it must "
                "support structured outputs (vLLM's `structured_outputs`)"
            )
        return (
            f"the answer is not the JSON the server was asked to constrain it to ({exc}): "
            "the server must support structured outputs (vLLM's `structured_outputs`)"
        )
    return None


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
    run = _Run(messages, backends, settings, facts)
    # A conversation is known by its opening messages, so every turn of it (an agent loop, a
    # chat) prefers the same replica and finds its prefix in that server's cache.
    key = json.dumps(messages[:2], sort_keys=True, default=str)
    now = time.monotonic()
    down = {url for url, since in facts.down.items() if now - since < REPLICA_COOLDOWN_S}
    orders = {role: replica_order(b.urls, key, down) for role, b in backends.items()}

    def count(role: str, error: GlimpRouterError) -> None:
        run.record.retries += 1

    def moved(role: str, replica: int) -> None:
        failed = orders[role][orders[role].index(replica) - 1]
        facts.down[backends[role].urls[failed]] = time.monotonic()
        run.record.failovers += 1

    return retrying(run.run(), run.retries, orders, count, moved)
