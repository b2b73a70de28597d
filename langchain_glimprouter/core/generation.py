"""One piece of generated text across the streams that produce it (:class:`Generation`), the
chain the steps build (:class:`Chain`), and the I/O every part of the step loop shares
(:class:`Streams`): the request body, opening a stream, reading it with resumption of a cut
stream, and accounting its tokens to its server."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from langchain_glimprouter.core.dialects import Dialect, dialect_named
from langchain_glimprouter.core.dialects.bos import LLAMACPP_PYTHON, count_prompt
from langchain_glimprouter.core.events import ReasoningDelta
from langchain_glimprouter.core.ops import Close, Emit, Open, Program, Read, Request
from langchain_glimprouter.core.prompts import THINK_CLOSE
from langchain_glimprouter.core.savings import LargeTime, StreamClock
from langchain_glimprouter.core.servers import ServerSpec
from langchain_glimprouter.core.settings import RouteSettings, ServerFacts
from langchain_glimprouter.core.wire import Chunk
from langchain_glimprouter.errors import (
    BackendResponseError,
    BackendTimeoutError,
    InvalidArgumentError,
    StreamInterruptedError,
)
from langchain_glimprouter.records import Role, RoutingRecord


@dataclass
class Generation:
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
    stalled: bool = False
    """A stream of this text on this backend already stalled (timed out) and was resumed."""
    token_logprobs: list[float | None] = field(default_factory=list)
    token_tops: list[dict[str, float]] = field(default_factory=list)
    token_texts: list[str] = field(default_factory=list)
    clock: StreamClock = field(default_factory=StreamClock)
    """The timing of the current stream."""

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


class Holdback:
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


def ended_by(gen: Generation, delimiters: tuple[str, ...]) -> str:
    """The delimiter that ended ``gen``'s step (the server excludes it from the text)."""
    if isinstance(gen.stop_reason, str) and gen.stop_reason in delimiters:
        return gen.stop_reason
    if len(delimiters) == 1:
        return delimiters[0]
    raise InvalidArgumentError(
        f"the {gen.role} server did not say which of the step delimiters {delimiters!r} "
        "ended a step (no `stop_reason`, as vLLM sends), so the chain cannot be rebuilt "
        "exactly. Use a single step_delimiter with this server."
    )


class Chain:
    """The reasoning chain of one routed call, and each server's rendered prompt before it."""

    def __init__(self) -> None:
        self.prefix: dict[str, str] = {}
        """Each server's rendered prompt before the chain."""
        self.steps: list[str] = []
        self.seps: list[str] = []
        """What followed each kept step in the chain: the delimiter that ended it, or nothing."""
        self.text = ""
        """Every kept step followed by its separator: what both prompts append to their prefix."""

    def prompt(self, role: str) -> str:
        return self.prefix[role] + self.text

    @property
    def lead(self) -> str:
        """The separator after the last step (what a streamed step's text starts with)."""
        return self.seps[-1] if self.seps else ""

    @property
    def split(self) -> bool:
        """The last step was cut at ``max_step_tokens`` (nothing follows it yet)."""
        return self.seps[-1:] == [""]

    def add(self, step: str, sep: str) -> None:
        self.steps.append(step)
        self.seps.append(sep)
        self.text += step + sep

    def extend(self, text: str, sep: str) -> None:
        """Continue the last step (cut short of its delimiter) with ``text`` and ``sep``."""
        self.steps[-1] += text
        self.seps[-1] = sep
        self.text += text + sep

    def reasoning(self) -> str:
        """The steps as the caller sees the reasoning: without the last separator."""
        text = "".join(t + sep for t, sep in zip(self.steps, self.seps, strict=True))
        return text.removesuffix(self.seps[-1]) if self.seps else ""


class Streams:
    """The stream I/O of one routed call, shared by its step loop and its decisions."""

    def __init__(
        self,
        servers: Mapping[str, ServerSpec],
        settings: RouteSettings,
        facts: ServerFacts,
        record: RoutingRecord,
    ) -> None:
        self.servers = servers
        self.s = settings
        self.facts = facts
        self.record = record
        self.retries = {
            role: settings.max_retries if spec.max_retries is None else spec.max_retries
            for role, spec in servers.items()
        }
        """Retries of a failed request or a cut stream, per role."""
        self.large = LargeTime()
        """The large backend's streams of this call, timed."""

    def url(self, role: str) -> str:
        return self.servers[role].base_url

    def dialect(self, role: str) -> Dialect:
        """The kind of ``role``'s server, as rendering its prompt found it."""
        return dialect_named(self.facts.renders.methods.get(self.url(role)))

    def learn_limits(self, role: str) -> Program[None]:
        """Learn the context window of ``role``'s model from ``/v1/models`` (once a server)."""
        spec = self.servers[role]
        if (spec.base_url, spec.model) in self.facts.max_model_len:
            return
        limit: int | None = None
        try:
            listing = yield Request(role, "GET", "/v1/models")
            for card in listing.get("data") or []:
                if card.get("id") == spec.model and isinstance(card.get("max_model_len"), int):
                    limit = card["max_model_len"]
        except BackendResponseError:
            limit = None
        self.facts.max_model_len[spec.base_url, spec.model] = limit

    def body(
        self,
        role: str,
        prompt: str | list[int],
        max_tokens: int,
        stop: list[str],
        logprobs: int | None,
    ) -> dict[str, Any]:
        """A completions request; ``prompt`` is text, or token ids (an escalation probe's)."""
        spec = self.servers[role]
        limit = self.facts.max_model_len.get((spec.base_url, spec.model))
        body: dict[str, Any] = {
            "model": spec.model,
            "prompt": prompt,
            "max_tokens": min(max_tokens, limit) if limit else max_tokens,
            "stream": True,
            **self.dialect(role).body_extras(),
        }
        if stop:
            body["stop"] = stop
        if logprobs is not None:
            body["logprobs"] = logprobs
        for key in ("temperature", "top_p", "seed"):
            if (value := getattr(self.s, key)) is not None:
                body[key] = value
        body.update(spec.extra_body)
        return body

    def open(self, gen: Generation) -> Program[None]:
        body = gen.request()
        if self.facts.renders.tokenizers.get(self.url(gen.role)) == LLAMACPP_PYTHON:
            # Its streams report no usage: the prompt's tokens as it reads them, counted with
            # its own tokenizer (the request waits for nothing the stream would not).
            gen.prompt_tokens = yield from count_prompt(gen.role, body["model"], body["prompt"])
        gen.clock = StreamClock()
        yield Open(gen.role, body)
        self.record.requests[gen.role] += 1

    def settle(self, gen: Generation) -> None:
        """Account the current stream of ``gen`` to its server and start a fresh count."""
        if gen.role == "large":
            self.large.add(gen.clock, gen.stream_tokens)
        gen.clock = StreamClock()  # accounted: a second settle adds no time
        self.record.tokens[gen.role] += gen.stream_tokens
        self.record.prompt_tokens[gen.role] += gen.prompt_tokens or 0
        gen.settled_tokens += gen.stream_tokens
        gen.usage_tokens, gen.counted_tokens, gen.prompt_tokens = None, 0, None

    def next(self, gen: Generation) -> Program[Chunk | None]:
        """The next chunk of ``gen``'s open stream. A stream cut before its finish_reason (a
        broken connection, a malformed event, an error event of the server's own failure) is
        resumed where it broke (its prompt extended by the text received, so nothing is
        duplicated), up to the server's retry count; a stalled one (no chunk within the
        timeout) once, as each stall costs a whole timeout."""
        while True:
            try:
                chunk: Chunk | None = yield Read()
                if chunk is None and gen.finish_reason is None:
                    raise StreamInterruptedError(
                        "the stream ended before the server reported a finish_reason. Check "
                        "the server's log (crash, restart or proxy timeout) and retry.",
                        role=gen.role,
                        url=self.url(gen.role),
                    )
            except StreamInterruptedError as exc:
                stalled = isinstance(exc, BackendTimeoutError)
                if gen.resumes >= self.retries[gen.role] or (stalled and gen.stalled):
                    raise
                gen.stalled |= stalled
                gen.resumes += 1
                self.record.resumed_streams += 1
                self.settle(gen)
                yield Close()
                yield from self.open(gen)
                continue
            if chunk is None:
                gen.ended = True
            else:
                gen.feed(chunk)
                gen.clock.read(gen.stream_tokens)
            return chunk

    def consume(self, gen: Generation, emit: Holdback | None) -> Program[None]:
        """Read ``gen``'s stream to its end (or to ``</think>``), emitting reasoning deltas."""
        while True:
            if emit is not None:
                if delta := emit.delta(gen.text):
                    yield Emit(ReasoningDelta(delta))
                if THINK_CLOSE in gen.text:  # the chain is over: not a token more of this step
                    if not gen.ended:
                        yield Close()
                    return
            if (yield from self.next(gen)) is None:
                return


def incomplete_json(gen: Generation, support: str) -> str | None:
    """Why the constrained part of an answer is not one whole JSON value (None: it is);
    ``support`` names what the server must support (its dialect's wording)."""
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
                f"support structured outputs ({support})"
            )
        return (
            f"the answer is not the JSON the server was asked to constrain it to ({exc}): "
            f"the server must support structured outputs ({support})"
        )
    return None
