"""Who writes a step: the glimpse of its first token (and the escalation of a decision too close
to call), the small model's whole draft and its measure, the coin, and the threshold or the
controller that turns a measure into a decision. The specifics of each strategy come from its
:class:`~langchain_glimprouter.core.strategies.StrategySpec`."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from langchain_glimprouter.core.dialects import Hints
from langchain_glimprouter.core.entropy import EntropyBounds, entropy_bounds, first_token_entropy
from langchain_glimprouter.core.generation import Chain, Generation, Streams
from langchain_glimprouter.core.ops import RETRYABLE_STATUS, Close, Program, Request
from langchain_glimprouter.core.prompts import THINK_CLOSE
from langchain_glimprouter.core.settings import RouteSettings, ServerFacts
from langchain_glimprouter.core.strategies import (
    JUDGE_PROMPT,
    SPECS,
    StrategySpec,
    judge_score,
    mean_step_entropy,
    perplexity,
)
from langchain_glimprouter.errors import (
    BackendResponseError,
    BackendTimeoutError,
    BackendUnreachableError,
    GlimpRouterError,
    LogprobsCapError,
    MissingLogprobsError,
    StreamInterruptedError,
)
from langchain_glimprouter.records import Role

ROLES: tuple[Role, Role] = ("small", "large")


@dataclass(frozen=True)
class Glimpse:
    """What the glimpse of a step start measured."""

    h: float | None
    """H_init; None when the small model ended at once (nothing to measure)."""
    residual: float | None
    token: str | None
    """The token measured: the step's first token with content."""
    skipped: tuple[str, ...]
    """The whitespace-only tokens read past before it, as the server spelled them."""
    bounds: EntropyBounds | None = None
    """``topk_bounds``: what the top k say of the exact entropy."""


@dataclass(frozen=True)
class Verdict:
    """A ``topk_bounds`` decision and what it cost."""

    large: bool
    decision: str
    """"certain", "estimated" or "escalated" (see StepRecord.decision)."""
    bounds: EntropyBounds
    """The bounds it was taken on: the escalation probe's, when one answered."""
    probed: bool = False
    """An escalation probe answered: ``bounds`` are its, not the glimpse's."""
    tokens: int = 0
    """Small-model tokens the escalation generated (thrown away)."""
    requests: int = 0
    """Requests the escalation sent to the small server: probes (refused ones included) and
    ``/tokenize``."""
    latency_s: float = 0.0


NO_GLIMPSE = Glimpse(None, None, None, ())


@dataclass(frozen=True)
class Choice:
    """Who writes a step, and what the decision measured and cost."""

    writer: Role
    gen: Generation | None = None
    """The small stream that goes on to write the step (None: the writer starts afresh)."""
    glimpse: Glimpse = NO_GLIMPSE
    score: float | None = None
    """The draft's measure (generate-then-measure strategies)."""
    tau: float | None = None
    """The threshold applied."""
    verdict: Verdict | None = None
    wasted: int = 0
    """Small-model tokens thrown away (a glimpse or a draft the large model rewrites)."""
    fallback: bool = False
    """The small backend failed: the large one writes the step in its place."""


class Decider:
    """The decisions of one routed call: who writes each step, over the call's stream I/O
    (``io``) and its chain so far (``chain``)."""

    def __init__(
        self, io: Streams, chain: Chain, settings: RouteSettings, facts: ServerFacts
    ) -> None:
        self.io = io
        self.chain = chain
        self.s = settings
        self.facts = facts
        self.strategy: StrategySpec = SPECS[settings.strategy]
        self.small_down = False
        """The small server failed and ``on_small_failure="large"``: steps go large."""
        self.rng = random.Random(settings.seed)
        """The coin of ``strategy="random"`` (reproducible with a seed)."""

    def falls_back(self, role: str | None, error: GlimpRouterError) -> bool:
        """Whether the call carries on with the large server alone after ``role``'s
        ``error``: the small server failed, the call has a large one, and it may fall back."""
        return role == "small" and "large" in self.roles() and self._small_failed(error)

    def choose(self, cap: int) -> Program[Choice]:
        """Who writes the next step (at most ``cap`` tokens), as the strategy decides."""
        s, spec = self.s, self.strategy
        roles = self.roles()
        if len(roles) == 1:
            return Choice(roles[0])
        if self.small_down:
            return Choice("large", fallback=True)
        if spec.decider == "coin":
            return Choice("large" if self.rng.random() < (s.target_rate or 0.0) else "small")
        stop = list(s.step_delimiter)
        verdict: Verdict | None = None
        score: float | None = None
        try:
            if spec.decider == "draft":
                probe, score = yield from self._drafted(cap, stop)
                has_tops = spec.draft_logprobs == "top" and probe.token_tops
                glimpse = self._measure(probe) if has_tops else NO_GLIMPSE
                large, tau = self._decide(score)
            else:
                probe, glimpse = yield from self._probe(cap, stop)
                if glimpse.bounds is not None and s.controller is None:
                    verdict = yield from self._bounded(probe, glimpse, glimpse.bounds)
                    large, tau = verdict.large, self.fixed_threshold
                else:
                    large, tau = self._decide(glimpse.h)
        except GlimpRouterError as exc:
            if not self.falls_back(getattr(exc, "role", None), exc):
                raise  # a judge's (large) failure is never absorbed
            yield Close()
            return Choice("large", fallback=True)
        if not large and (s.probe == "stream" or spec.decider == "draft"):
            return Choice("small", probe, glimpse, score, tau, verdict)  # the stream goes on
        if not probe.ended:
            yield Close()
        self.io.settle(probe)
        writer: Role = "large" if large else "small"
        return Choice(writer, None, glimpse, score, tau, verdict, wasted=probe.settled_tokens)

    def _glimpse(self, gen: Generation) -> Program[Glimpse]:
        """Read the small stream up to the step's first token with content: whitespace-only
        tokens before it end the delimiter (a step that starts with a lone "\\n"), so the
        glimpse reads past them, in the same stream, and measures that token's distribution."""
        while gen.content_start() is None and (yield from self.io.next(gen)) is not None:
            pass
        return self._measure(gen)

    def _measure(self, gen: Generation) -> Glimpse:
        return measure_start(gen, self.s, self.io.dialect("small").hints, self.io.url("small"))

    def _small_failed(self, error: GlimpRouterError) -> bool:
        """Whether to carry on without the small backend after ``error`` (fallback): only for
        a server that is down or failing, never for a configuration problem."""
        transient = isinstance(
            error, (BackendUnreachableError, BackendTimeoutError, StreamInterruptedError)
        ) or (isinstance(error, BackendResponseError) and error.status_code in RETRYABLE_STATUS)
        if self.s.on_small_failure != "large" or not transient:
            return False
        self.small_down = True
        self.io.record.small_failures += 1
        return True

    @property
    def fixed_threshold(self) -> float:
        """The call's own threshold; asked only when no controller decides in its place."""
        if self.s.threshold is None:
            raise RuntimeError("a call whose controller decides has no fixed threshold")
        return self.s.threshold

    def roles(self) -> tuple[Role, ...]:
        """The backends this call uses."""
        s, spec = self.s, self.strategy
        if spec.writer is not None:
            return (spec.writer,)
        if spec.decider == "glimpse" and s.controller is None and s.threshold == 0:
            return ("large",)  # every step goes large: no glimpse
        return ROLES

    def _decide(self, value: float | None) -> tuple[bool, float | None]:
        """Whether a measured step goes large, and the threshold applied. ``value`` is the
        strategy's measure (None: the small model ended at once, nothing to measure: small)."""
        s, spec = self.s, self.strategy
        if value is None:
            return False, None
        if s.controller is not None:
            large, tau = s.controller.route(spec.difficulty(value))
            return large, spec.difficulty(tau)
        tau = self.fixed_threshold
        return spec.difficulty(value) > spec.difficulty(tau), tau

    def _bounded(
        self, gen: Generation, glimpse: Glimpse, bounds: EntropyBounds
    ) -> Program[Verdict]:
        """Decide on the bounds of H_init; a threshold too close to call from the top k is
        settled by one 1-token request for more of the same distribution (the escalation), on
        exactly the tokens the glimpse ``gen`` measured it after."""
        large, how = bounds.decide(self.fixed_threshold)
        if how != "uncertain":
            return Verdict(large, how, bounds)
        k = self._escalation_k(bounds)
        if k is None:  # escalation off, or the server allows no more than the glimpse had
            return Verdict(large, "estimated", bounds)
        started = time.perf_counter()
        prompt, sent = yield from self._context(gen, glimpse)
        while prompt is not None and k is not None:
            body = self.io.body("small", prompt, 1, [], k)
            body["stream"] = False
            body.pop("stream_options", None)
            try:
                answer = yield Request("small", "POST", "/v1/completions", body)
            except LogprobsCapError as exc:  # learnt once per server; then retried at its cap
                self.io.record.requests["small"] += 1
                sent += 1
                url = self.io.url("small")
                self.facts.max_logprobs[url] = min(exc.cap, k - 1)  # lower each time: this ends
                k = self._escalation_k(bounds)
                continue
            self.io.record.requests["small"] += 1
            self.io.record.escalations += 1
            usage = answer.get("usage") or {}
            tokens = int(usage.get("completion_tokens") or 1)
            self.io.record.tokens["small"] += tokens
            self.io.record.prompt_tokens["small"] += int(usage.get("prompt_tokens") or 0)
            choice = (answer.get("choices") or [{}])[0]
            tops = ((choice.get("logprobs") or {}).get("top_logprobs") or [None])[0]
            took = time.perf_counter() - started
            if not tops:
                return Verdict(large, "estimated", bounds, False, tokens, sent + 1, took)
            wider = entropy_bounds(tops.values(), k=k)
            large, sure = wider.decide(self.fixed_threshold)
            taken = "escalated" if sure == "certain" else "estimated"
            return Verdict(large, taken, wider, True, tokens, sent + 1, took)
        took = time.perf_counter() - started
        return Verdict(large, "estimated", bounds, requests=sent, latency_s=took)

    def _escalation_k(self, bounds: EntropyBounds) -> int | None:
        """How many logprobs an escalation probe asks for: ``escalation_logprobs``, within the
        cap the small server is known to have; None when that is no more than ``bounds`` had."""
        s = self.s
        cap = self.facts.max_logprobs.get(self.io.url("small"))
        k = s.escalation_logprobs if cap is None else min(s.escalation_logprobs, cap)
        return k if k > bounds.k else None

    def _context(
        self, gen: Generation, glimpse: Glimpse
    ) -> Program[tuple[str | list[int] | None, int]]:
        """The prompt of an escalation probe that conditions on exactly the tokens the glimpse
        ``gen`` measured after, and the ``/tokenize`` requests it took.

        At the stream's first token that is the glimpse's own text prompt. After skipped
        whitespace it must be token ids: the same text with the skipped tokens appended would
        be tokenized afresh, and a trailing "\\n\\n" + "\\n" merges into other tokens than the
        model generated. So the ids are the glimpse's prompt as the server tokenizes it
        (``/tokenize``, as it tokenized the glimpse's) and each skipped token's id (tokenized
        alone: it must come back as one id). None where the server cannot say (no ``/tokenize``,
        a token that is not one id alone) or the glimpse's stream was resumed mid-way (its
        tokens came after two prompts): the decision is then taken on the estimate."""
        prompt: str = gen.body["prompt"]
        if not glimpse.skipped:
            return prompt, 0
        if gen.resumes:
            return None, 0
        url = self.io.url("small")
        sent = 0
        skipped: list[int] = []
        for token in glimpse.skipped:
            if (url, token) not in self.facts.token_ids:
                ids, n = yield from self._tokenize(gen, token)
                sent += n
                self.facts.token_ids[url, token] = ids[0] if ids and len(ids) == 1 else None
            if (token_id := self.facts.token_ids[url, token]) is None:
                return None, sent
            skipped.append(token_id)
        ids, n = yield from self._tokenize(gen, prompt)
        return (None if ids is None else ids + skipped), sent + n

    def _tokenize(self, gen: Generation, text: str) -> Program[tuple[list[int] | None, int]]:
        """``text`` as the small server tokenizes ``gen``'s prompt, and the requests that took;
        None from a server whose dialect has no tokenizer or that cannot say (learnt once)."""
        url = self.io.url("small")
        if url in self.facts.untokenized:
            return None, 0
        add_special = gen.body.get("add_special_tokens", True)
        tokenizing = self.io.dialect("small").tokenize(
            "small", gen.body["model"], text, add_special
        )
        if tokenizing is None:
            return None, 0
        ids = yield from tokenizing
        if ids is None:
            self.facts.untokenized.add(url)
        return ids, 1

    def _probe(self, max_tokens: int, stop: list[str]) -> Program[tuple[Generation, Glimpse]]:
        """The small backend's glimpse of the next step: its stream and what it measured."""
        s, prompt = self.s, self.chain.prompt("small")
        if s.probe == "stream":
            body = self.io.body("small", prompt, max_tokens, stop, s.top_logprobs)
        else:
            body = self.io.body("small", prompt, 1, [], s.top_logprobs)
        probe = Generation("small", body)
        yield from self.io.open(probe)
        glimpse = yield from self._glimpse(probe)
        if s.probe == "separate" and not probe.ended:
            yield from self.io.consume(probe, None)
        return probe, glimpse

    def _drafted(
        self, max_tokens: int, stop: list[str]
    ) -> Program[tuple[Generation, float | None]]:
        """A whole step written by the small backend and its measure (``decider="draft"``):
        the mean entropy, the perplexity, or the large backend's judge score (None: the small
        model wrote nothing)."""
        s, spec = self.s, self.strategy
        logprobs = {"top": s.top_logprobs, "one": 1, None: None}[spec.draft_logprobs]
        prompt = self.chain.prompt("small")
        draft = Generation("small", self.io.body("small", prompt, max_tokens, stop, logprobs))
        yield from self.io.open(draft)
        while (yield from self.io.next(draft)) is not None:
            if THINK_CLOSE in draft.text:  # the chain is over: not a token more
                yield Close()
                draft.ended = True
                break
        text = draft.text.split(THINK_CLOSE)[0]
        if not text.strip():
            return draft, None
        if spec.measure == "judge":
            return draft, (yield from self._judge(text))
        try:
            if spec.measure == "mean_entropy":
                return draft, mean_step_entropy(
                    draft.token_tops, s.entropy_estimator, s.top_logprobs
                )
            return draft, perplexity(draft.token_logprobs)
        except ValueError:
            hint = self.io.dialect("small").hints.logprobs.format(k=s.top_logprobs)
            raise MissingLogprobsError(
                f"the server returned no logprobs for the step's tokens, so {s.strategy} "
                f"cannot measure it. Make sure the server supports `logprobs` on "
                f"/v1/completions ({hint}).",
                role="small",
                url=self.io.url("small"),
            ) from None

    def _judge(self, text: str) -> Program[float]:
        """The large backend's one-token score (0-9) of the small model's step ``text``."""
        prompt = self.chain.prompt("large") + text + JUDGE_PROMPT
        judge = Generation("large", self.io.body("large", prompt, 1, [], self.s.top_logprobs))
        yield from self.io.open(judge)
        while (yield from self.io.next(judge)) is not None:
            pass
        self.io.settle(judge)
        if judge.top_logprobs is None:
            hint = sentence(self.io.dialect("large").hints.logprobs, self.s.top_logprobs)
            raise MissingLogprobsError(
                "the large server returned no top_logprobs for the judge's score token "
                f"(specreason). {hint}, or lower top_logprobs.",
                role="large",
                url=self.io.url("large"),
            )
        return judge_score(judge.top_logprobs)


def measure_start(gen: Generation, settings: RouteSettings, hints: Hints, url: str) -> Glimpse:
    """H_init of the first token with content among those ``gen`` (the small stream, from
    ``url``) received (the first token when there is none: a step of whitespace only), with
    ``settings``' estimator; ``hints`` word the error of a server that sent no logprobs."""
    at = gen.content_start()
    if at is None:
        at = 0
    tops = gen.token_tops[at] if at < len(gen.token_tops) else gen.top_logprobs
    if tops:
        token = gen.token_texts[at] if at < len(gen.token_texts) else gen.first_token
        skipped = tuple(gen.token_texts[:at])
        if settings.entropy_estimator == "topk_bounds":
            bounds = entropy_bounds(tops.values(), k=settings.top_logprobs)
            return Glimpse(bounds.estimate, bounds.residual, token, skipped, bounds)
        h, residual = first_token_entropy(
            tops.values(), settings.entropy_estimator, k=settings.top_logprobs
        )
        return Glimpse(h, residual, token, skipped)
    if gen.tokens == 0 and gen.ended:
        return NO_GLIMPSE  # the model ended at once (EOS): empty step
    raise MissingLogprobsError(
        "the server returned no top_logprobs for the step's first token, so H_init cannot "
        f"be measured. {sentence(hints.logprobs, settings.top_logprobs)} (or lower "
        "top_logprobs), and make sure the server supports `logprobs` on /v1/completions.",
        role="small",
        url=url,
    )


def sentence(hint: str, k: int) -> str:
    """A dialect's logprobs hint for ``k`` logprobs, as a sentence's start."""
    text = hint.format(k=k)
    return text[:1].upper() + text[1:]
