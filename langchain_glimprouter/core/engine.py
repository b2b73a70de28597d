"""The probe-then-dispatch step loop over two backends. No LangChain in here.

For each reasoning step the small backend *glimpses*: it starts generating the step and the
entropy ``H_init`` of its first token's top-k distribution decides who writes the step. At or
below the threshold the small model goes on in the same stream (one request per delegated
step); above it the small stream is closed at once (the server aborts it, the glimpsed token is
discarded) and the large backend writes the step from the same context, rendered with its own
chat template. The final answer after ``</think>`` is written by the large backend.

The baselines (``large_only``, ``small_only``, which also answers, ``random``) and the
generate-then-measure strategies (``step_entropy``, ``step_ppl``, ``specreason``; see
:mod:`~langchain_glimprouter.core.strategies`) run in the same step loop, so they record the
same.

Prompts are append-only (each backend's prefix, then ``step + delimiter`` per step), so both
servers' prefix caches hit across steps. The loop is a :mod:`~langchain_glimprouter.core.ops`:
it yields I/O operations and :class:`Emit`\\ s events, and the same code runs sync and async.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from typing import Any

from langchain_glimprouter.core.decisions import Choice, Decider
from langchain_glimprouter.core.events import (
    AnswerDelta,
    ReasoningDelta,
    Result,
    StepDone,
)
from langchain_glimprouter.core.generation import (
    Chain,
    Generation,
    Holdback,
    Streams,
    ended_by,
    incomplete_json,
)
from langchain_glimprouter.core.ops import Close, Emit, Program, replica_order, retrying
from langchain_glimprouter.core.prompts import THINK_CLOSE, render
from langchain_glimprouter.core.savings import savings
from langchain_glimprouter.core.servers import ServerSpec
from langchain_glimprouter.core.settings import AnswerConstraint, RouteSettings, ServerFacts
from langchain_glimprouter.errors import GlimpRouterError
from langchain_glimprouter.records import ChainEnd, Role, RoutingRecord, StepRecord

REPLICA_COOLDOWN_S = 30.0
"""How long a replica found unreachable is tried last by new conversations."""


class _Run:
    """One routed call: its record, its stream I/O (``io``), its chain so far (``chain``) and
    who decides each step (``decider``); :meth:`run` is the routing program."""

    def __init__(
        self,
        messages: list[dict[str, Any]],
        servers: Mapping[str, ServerSpec],
        settings: RouteSettings,
        facts: ServerFacts,
    ) -> None:
        self.messages = messages
        self.servers = servers
        self.s = settings
        self.facts = facts
        self.record = RoutingRecord(
            threshold=settings.threshold,
            estimator=settings.entropy_estimator,
            probe=settings.probe,
            strategy=settings.strategy,
            target_rate=settings.target_rate,
        )
        self.io = Streams(servers, settings, facts, self.record)
        self.chain = Chain()
        self.decider = Decider(self.io, self.chain, settings, facts)
        self.renders = facts.renders.staged()
        """This call's renders, kept for later calls once a backend took a step of it."""

    # -- the program ---------------------------------------------------------------------------

    def run(self) -> Program[None]:
        started = time.perf_counter()
        yield from self._prepare()
        end, reasoning_tokens = yield from self._reason()
        self.record.chain_end = end
        closing = ("\n" if end == "budget" else "") + THINK_CLOSE + "\n\n"
        writer: Role = self.decider.strategy.writer or "large"
        prompt = self.chain.prompt(writer) + closing
        answer, finish_reason = yield from self._answer(writer, prompt, self.s.answer)
        yield Emit(self._result(answer, writer, finish_reason, reasoning_tokens, started))

    def _prepare(self) -> Program[None]:
        """Each server's context window and prompt before the chain; a small server that
        fails here leaves the call to the large one (``on_small_failure="large"``)."""
        for role in self.decider.roles():
            try:
                yield from self.io.learn_limits(role)
                self.chain.prefix[role] = yield from render(
                    role, self.servers[role], self.messages, self.renders, list(self.s.tools)
                )
            except GlimpRouterError as exc:
                if not self.decider.falls_back(role, exc):
                    raise

    def _reason(self) -> Program[tuple[ChainEnd, int]]:
        """The reasoning chain, step by step: how it ended and the tokens it took."""
        end: ChainEnd | None = None
        tokens = 0
        last: str | None = None
        while end is None:
            remaining = self.s.max_reasoning_tokens - tokens
            if remaining <= 0:
                return "budget", tokens
            step, sep = yield from self._step(len(self.chain.steps), remaining)
            self.renders.commit()  # a backend took a step: the prompts are worth keeping
            tokens += step.tokens
            if step.finish == "delimiter" and not step.text.strip() and self.chain.split:
                # The step before was split at max_step_tokens just short of its delimiter.
                self.chain.extend(step.text, sep)
                continue
            end = chain_end(step, last)
            last = step.text.strip()
            if not last:  # the chain ended where a step would start: no step
                self.record.end_step = step
                continue
            self.chain.add(step.text, "" if end in ("think_end", "budget") else sep)
            self.record.steps.append(step)
            yield Emit(StepDone(step))
        return end, tokens

    def _result(
        self,
        answer: str,
        writer: Role,
        finish_reason: str | None,
        reasoning_tokens: int,
        started: float,
    ) -> Result:
        """The call's result, its record completed; ``writer`` wrote the answer."""
        rec = self.record
        rec.n_steps = len(rec.steps)
        rec.n_large_steps = sum(1 for st in rec.steps if st.model == "large")
        rec.intervention_rate = rec.n_large_steps / rec.n_steps if rec.n_steps else 0.0
        rec.reasoning_tokens = reasoning_tokens
        rec.latency_s = time.perf_counter() - started
        for name, value in savings(rec, writer, self.io.large).items():
            setattr(rec, name, value)
        if self.s.controller is not None and (tau := self.s.controller.threshold) is not None:
            rec.threshold = self.decider.strategy.difficulty(tau)
        output = rec.tokens["small"] + rec.tokens["large"]
        return Result(
            answer=answer,
            reasoning=self.chain.reasoning(),
            finish_reason=finish_reason,
            record=rec,
            input_tokens=rec.prompt_tokens["small"] + rec.prompt_tokens["large"],
            output_tokens=output,
            reasoning_tokens=output - rec.answer_tokens,
        )

    def _step(self, index: int, remaining: int) -> Program[tuple[StepRecord, str]]:
        """One reasoning step: who writes it, the writing, and its record with the separator
        that follows it in the chain."""
        started = time.perf_counter()
        cap = min(remaining, self.s.max_step_tokens or remaining)
        choice = yield from self.decider.choose(cap)
        gen = choice.gen
        if gen is None:
            writer = choice.writer
            body = self.io.body(writer, self.chain.prompt(writer), cap, list(self.s.step_delimiter),
                                None)  # fmt: skip
            gen = Generation(writer, body)
            yield from self.io.open(gen)
        holdback = Holdback(self.chain.lead)
        fell_back = yield from self._write(gen, holdback, cap)
        return (yield from self._finish(index, gen, holdback, choice, fell_back, cap, remaining,
                                        started))  # fmt: skip

    def _write(self, gen: Generation, holdback: Holdback, cap: int) -> Program[bool]:
        """Read the step's stream to its end. When the small server dies mid-step (and
        ``on_small_failure="large"``), the large one continues the same text: returns True."""
        if gen.ended:
            return False
        try:
            yield from self.io.consume(gen, holdback)
        except GlimpRouterError as exc:
            if not self.decider.falls_back(gen.role, exc):
                raise
            yield Close()
            self.io.settle(gen)
            gen.role, gen.resumes, gen.stalled = "large", 0, False
            gen.body = self.io.body(
                "large", self.chain.prompt("large"), cap, list(self.s.step_delimiter), None
            )
            yield from self.io.open(gen)
            yield from self.io.consume(gen, holdback)
            return True
        return False

    def _finish(
        self,
        index: int,
        gen: Generation,
        holdback: Holdback,
        choice: Choice,
        fell_back: bool,
        cap: int,
        remaining: int,
        started: float,
    ) -> Program[tuple[StepRecord, str]]:
        """Account the written step, release the rest of its text, and record it."""
        self.io.settle(gen)
        verdict = choice.verdict
        wasted = choice.wasted + (verdict.tokens if verdict is not None else 0)
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
            finish, sep = "delimiter", ended_by(gen, self.s.step_delimiter)
        if text.strip() and (delta := holdback.delta(text, final=True)):
            yield Emit(ReasoningDelta(delta))
        record = StepRecord(
            index=index,
            model=gen.role,
            first_token=choice.glimpse.token,
            skipped="".join(choice.glimpse.skipped),
            score=choice.score,
            threshold=choice.tau,
            tokens=gen.tokens,
            text=text,
            latency_s=time.perf_counter() - started,
            wasted_tokens=wasted,
            finish=finish,
            fallback=choice.fallback or fell_back,
            **measured(choice),
        )
        return record, sep

    def _answer(
        self, role: Role, prompt: str, constraint: AnswerConstraint | None
    ) -> Program[tuple[str, str | None]]:
        """The final answer's text and finish reason, written by ``role``."""
        lead, stop = "", list(self.s.stop)
        if constraint is not None:
            lead, stop = constraint.prefix, []  # a stop string could cut the JSON
        body = self.io.body(role, prompt + lead, self.s.max_tokens, stop, None)
        if constraint is not None:
            body.update(self.io.dialect(role).constrain(constraint.schema))
        gen = Generation(role, body)
        yield from self.io.open(gen)
        if lead:
            yield Emit(AnswerDelta(lead))
        sent = 0
        while (yield from self.io.next(gen)) is not None:
            if len(gen.text) > sent:
                yield Emit(AnswerDelta(gen.text[sent:]))
                sent = len(gen.text)
        self.io.settle(gen)
        self.record.answer_tokens = gen.tokens
        if constraint is not None:
            support = self.io.dialect(role).hints.structured_outputs
            self.record.answer_error = incomplete_json(gen, support)
        tail = ""
        if constraint is not None and constraint.suffix and gen.finish_reason == "stop":
            tail = constraint.suffix
            yield Emit(AnswerDelta(tail))
        return lead + gen.text + tail, gen.finish_reason


def chain_end(step: StepRecord, last: str | None) -> ChainEnd | None:
    """Whether ``step`` ends the chain, and how (None: it goes on); ``last`` is the text of
    the step before. A step that repeats it is a loop (its finish says so)."""
    text = step.text.strip()
    if step.finish == "think_end":
        return "think_end"
    if step.finish == "length":
        return "budget"
    if step.finish == "eos" or not text:
        return "eos"
    if last is not None and text == last:
        step.finish = "loop"
        return "loop"
    return None


def measured(choice: Choice) -> dict[str, Any]:
    """What a step record says of its decision's measure: the glimpse's, or with
    ``topk_bounds`` the bounds the decision was taken on (an escalation probe's, when one
    answered; the glimpse's own values then under ``glimpse_*``) and what the escalation cost."""
    glimpse, verdict = choice.glimpse, choice.verdict
    if verdict is None:
        return {"h_init": glimpse.h, "residual_mass": glimpse.residual}
    bounds = verdict.bounds
    fields: dict[str, Any] = {
        "h_init": bounds.estimate,
        "residual_mass": bounds.residual,
        "h_bounds": (bounds.lower, bounds.upper),
        "decision": verdict.decision,
        "escalation_tokens": verdict.tokens,
        "escalation_requests": verdict.requests,
        "escalation_s": verdict.latency_s,
    }
    if verdict.probed and glimpse.bounds is not None:
        fields["glimpse_h_init"] = glimpse.h
        fields["glimpse_h_bounds"] = (glimpse.bounds.lower, glimpse.bounds.upper)
        fields["glimpse_residual_mass"] = glimpse.residual
    return fields


def opening(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages that name a conversation: up to and with its first user message (all of
    them when there is none), which every later turn repeats."""
    first = next((i for i, m in enumerate(messages) if m.get("role") == "user"), len(messages))
    return messages[: first + 1]


def route(
    messages: list[dict[str, Any]],
    servers: Mapping[str, ServerSpec],
    settings: RouteSettings,
    facts: ServerFacts,
) -> Program[None]:
    """The routing program for one conversation, to run with a driver
    (:func:`~langchain_glimprouter.http.drivers.drive` or ``adrive``).

    It emits :class:`ReasoningDelta`, :class:`StepDone` and :class:`AnswerDelta` events as the
    chain and the answer are produced, and one :class:`Result` at the end.
    """
    run = _Run(messages, servers, settings, facts)
    # A conversation is known by its opening messages (up to its first user message), so every
    # turn of it (an agent loop, a chat) prefers the same replica and finds its prefix in that
    # server's cache, and carries the same session id to a gateway.
    key = json.dumps(opening(messages), sort_keys=True, default=str)
    now = time.monotonic()
    down = {url for url, since in facts.down.items() if now - since < REPLICA_COOLDOWN_S}
    orders = {role: replica_order(spec.urls, key, down) for role, spec in servers.items()}

    def count(role: str, error: GlimpRouterError) -> None:
        run.record.retries += 1

    def moved(role: str, replica: int) -> None:
        failed = orders[role][orders[role].index(replica) - 1]
        facts.down[servers[role].urls[failed]] = time.monotonic()
        run.record.failovers += 1

    session = hashlib.sha256(key.encode()).hexdigest()[:32]
    return retrying(run.run(), run.io.retries, orders, count, moved, session)
