"""What a scripted vLLM server answers, with no HTTP: the JSON answer of ``/v1/completions``
(streamed or not), ``/tokenize``, ``/detokenize`` and ``/v1/models`` for a request body, the
sequence of server-sent event payloads of a stream, vLLM's 400/404 errors, the injected
:class:`Faults`, and the :class:`RequestLog` of every completions request.

:class:`ScriptedModel` holds all of it; :class:`~scripted_server.server.ScriptedServer` serves it
over HTTP (and paces the tokens in time), a test's fake client calls it directly. A completion is
a lazy generator (:meth:`Completion.generate`): it yields a :class:`Due` before each token, where
the server waits for the token's time and stops if the client has gone, then the token's choice.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from jinja2.sandbox import ImmutableSandboxedEnvironment

from scripted_server.script import (
    CHATML,
    Script,
    continuation,
    first_json_value,
    split_tokens,
    token_logprobs,
)

_CHAOS: tuple[int | str, ...] = (500, 503, 429, "cut", "cut", "garbage", "error")
GARBAGE = "{this is not json"
"""The data of the injected event that is not JSON."""
DONE = "[DONE]"


def dumps(obj: Any) -> str:
    """Compact JSON, as vLLM writes it."""
    return json.dumps(obj, separators=(",", ":"))


class InjectedCut(ConnectionAbortedError):
    """Raised by :meth:`Completion.events` where :attr:`Faults.cut_after` breaks the stream
    (uvicorn then drops the connection)."""


@dataclass(frozen=True)
class Answer:
    """A JSON answer: its body and HTTP status."""

    body: dict[str, Any]
    status: int = 200


@dataclass(frozen=True)
class Due:
    """Token ``index`` of a completion is next: the server waits until it is due."""

    index: int


_REFUSED_SCHEMA = "The provided JSON schema contains features not supported by xgrammar."


def error(status: int, type_: str, param: str | None, message: str) -> Answer:
    """A vLLM error answer."""
    body = {"error": {"message": message, "type": type_, "param": param, "code": status}}
    return Answer(body, status)


def prompt_text(prompt: Any) -> str | None:
    """The text of a completions prompt: a string, or token ids (one per code point, as
    ``/tokenize`` gives them); None for anything else (vLLM answers 400)."""
    if isinstance(prompt, str):
        return prompt
    ids = prompt if isinstance(prompt, list) and prompt else []
    if ids and all(isinstance(i, int) and 0 <= i <= 0x10FFFF for i in ids):
        return "".join(map(chr, ids))
    return None


def error_event(status: int) -> dict[str, Any]:
    """The event vLLM sends (then ``[DONE]``) when a streamed request fails mid-stream: with
    code 500 its engine's failure (``GenerationError``, "Internal server error"), 503 one it
    says is safe to retry, 400 a request it refuses."""
    kind = {500: "InternalServerError", 503: "ServiceUnavailableError"}.get(status)
    message = "Internal server error" if status == 500 else "injected failure"
    return error(status, kind or "BadRequestError", None, message).body


def _choice(text: str, logprobs: Any, finish: str | None, stop: str | None) -> dict[str, Any]:
    """One choice of a vLLM completion (stream) response."""
    return {"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish,
            "stop_reason": stop}  # fmt: skip


@dataclass
class RequestLog:
    """One ``/v1/completions`` request as the server saw it."""

    prompt: str
    """Its prompt's text (token ids decoded; ``params["prompt"]`` as sent)."""
    params: dict[str, Any]
    stream: bool
    generated_tokens: int = 0
    finished: bool = False
    finish_reason: str | None = None
    received_s: float | None = None
    """``time.perf_counter()`` when the handler got the request (its body not yet read)."""
    authorization: str | None = None
    """The request's Authorization header."""
    headers: dict[str, str] = field(default_factory=dict)
    """The request's headers (names in lower case)."""
    started_s: float | None = None
    """``time.perf_counter()`` when the generation started (before the prefill pause)."""
    first_token_s: float | None = None
    """When the first token was handed to the HTTP layer."""
    last_token_s: float | None = None
    """When the last token (or the final empty chunk) was handed to the HTTP layer."""


@dataclass
class Faults:
    """Failures a :class:`ScriptedServer` injects into ``/v1/completions`` (set ``server.faults``).

    Completions requests are numbered from 1 as they arrive.
    """

    status: int | None = None
    """Answer this HTTP status (with a vLLM-style error body) ..."""
    status_from: int = 1
    """... from the Nth completions request on ..."""
    status_count: int | None = None
    """... for this many requests (None: every one from then on)."""
    refuse_schema: bool = False
    """Answer HTTP 400 to a request with ``structured_outputs``, as vLLM does to a JSON schema
    its grammar backend cannot compile."""
    cut_after: int | None = None
    """Break the connection (no finish, no [DONE]) after this many streamed tokens ..."""
    cut_count: int = 1
    """... in this many requests; later ones are left alone."""
    stall_s: float = 0.0
    """Pause this long before a token ..."""
    stall_after: int = 0
    """... after this many tokens (0: before the first) ..."""
    stall_count: int | None = None
    """... in this many requests (None: every one)."""
    garbage: bool = False
    """Send a server-sent event that is not JSON ..."""
    garbage_after: int = 0
    """... after this many streamed tokens ..."""
    garbage_count: int | None = None
    """... in this many requests (None: every one)."""
    error_event: int | None = None
    """End a stream with vLLM's error event of this code (then ``[DONE]``) ..."""
    error_event_after: int = 0
    """... after this many streamed tokens ..."""
    error_event_count: int | None = None
    """... in this many requests (None: every one)."""
    drop_logprobs: bool = False
    """Ignore the ``logprobs`` parameter (a server without logprobs support)."""
    chaos: float = 0.0
    """Probability that a request gets a random fault: HTTP 500, 503 or 429, a cut after 0-5
    tokens, a non-JSON event or an error event (code 500) after 0-5 tokens (for soak tests)."""
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    seen: int = 0
    cuts: int = 0
    garbled: int = 0
    errored: int = 0
    stalls: int = 0
    chaos_drawn: dict[str, int] = field(default_factory=dict)
    """The random faults drawn so far, by kind ("500", "cut", "error", ...); a cut or an event
    drawn after more tokens than its stream has never happens."""


@dataclass
class Completion:
    """One accepted ``/v1/completions`` request: its generation and the answer around it."""

    script: Script
    log: RequestLog
    n_prompt: int
    budget: int
    head: dict[str, Any]
    cut_after: int | None = None
    stall_at: int | None = None
    stall_s: float = 0.0
    """Before which token (index) the generation pauses, and how long."""
    garble_at: int | None = None
    fail_at: int | None = None
    fail_code: int = 500
    """Where (events sent) and with which code the stream ends in an error event."""
    failed: bool = False
    """The error event went out: the stream is over."""
    sent: int = 0
    """Stream events sent so far (for the injected faults)."""

    def usage(self) -> dict[str, int]:
        n, n_prompt = self.log.generated_tokens, self.n_prompt
        return {"prompt_tokens": n_prompt, "total_tokens": n_prompt + n, "completion_tokens": n}

    def generate(self) -> Iterator[Due | dict[str, Any]]:
        """A :class:`Due` before each token, then its choice, lazily; the last choice carries
        the finish reason. Closing the generator early leaves the log unfinished (an abort)."""
        log, script, prompt = self.log, self.script, self.log.prompt
        text, k = continuation(script, prompt)
        if log.params.get("structured_outputs"):
            text = first_json_value(text)
        at_start = prompt.endswith(("<think>\n", script.delimiter))
        tokens = split_tokens(text, script.delimiter, at_start)
        first_content = next((i for i, token in enumerate(tokens) if token.strip()), 0)
        stop = log.params.get("stop") or []
        stops: list[str] = [stop] if isinstance(stop, str) else stop
        n_top: int | None = log.params.get("logprobs")
        written = sent = ""
        for i, token in enumerate(tokens[: max(self.budget, 0)]):
            yield Due(i)
            log.generated_tokens += 1
            offset, written = len(written), written + token
            hit = next((s for s in stops if s in written), None)
            visible = written if hit is None else written[: written.index(hit)]
            eos, full = hit is not None or i + 1 == len(tokens), i + 1 == self.budget
            finish = "stop" if eos else "length" if full else None
            # The step's entropy goes to its first token with content: whitespace before it
            # (a lone "\n" after the delimiter) is near-certain, as in a real model.
            step = k if i == first_content else None
            logprobs = None if n_top is None else token_logprobs(script, token, offset, n_top, step)
            if finish is not None:
                log.finished, log.finish_reason = True, finish
            log.last_token_s = time.perf_counter()
            if i == 0:
                log.first_token_s = log.last_token_s
            yield _choice(visible[len(sent) :], logprobs, finish, hit)
            sent = visible
            if finish is not None:
                return
        log.finished, log.finish_reason = True, "length" if tokens else "stop"
        log.last_token_s = time.perf_counter()
        yield _choice("", None, log.finish_reason, None)

    def response(self, choices: list[dict[str, Any]]) -> Answer:
        """The answer of a request that is not streamed, from all the choices it generated."""
        text = "".join(choice["text"] for choice in choices)
        logprobs = None
        if self.log.params.get("logprobs") is not None:
            keys = ("text_offset", "token_logprobs", "tokens", "top_logprobs")
            lists = [c["logprobs"] for c in choices if c["logprobs"] is not None]
            logprobs = {key: [x for lp in lists for x in lp[key]] for key in keys}
        last = choices[-1] | {"text": text, "logprobs": logprobs}
        return Answer(self.head | {"choices": [last], "usage": self.usage()})

    def events(self, choice: dict[str, Any]) -> Iterator[dict[str, Any] | str]:
        """The server-sent event payloads (a JSON object, or raw data) a streamed choice goes
        out as: its event, after an injected non-JSON one; raises :class:`InjectedCut` where
        the stream is cut; where it fails, the error event and ``[DONE]`` instead (and
        :attr:`failed` is set: nothing more goes out)."""
        if self.sent == self.fail_at:
            self.failed = True
            yield error_event(self.fail_code)
            yield DONE
            return
        if self.sent == self.garble_at:
            yield GARBAGE
        if self.sent == self.cut_after:
            raise InjectedCut("injected cut")
        options = self.log.params.get("stream_options") or {}
        each = self.usage() if options.get("continuous_usage_stats") else None
        yield self.head | {"choices": [choice], "usage": each}
        self.sent += 1

    def closing_events(self) -> Iterator[dict[str, Any] | str]:
        """The payloads after the generation: the usage (if asked for), then ``[DONE]``."""
        if (self.log.params.get("stream_options") or {}).get("include_usage"):
            yield self.head | {"choices": [], "usage": self.usage()}
        yield DONE


class ScriptedModel:
    """A scripted vLLM model: what it answers to each request, what it logged, how many
    completions are generating (:attr:`active`, kept by whoever runs the generations)."""

    def __init__(
        self,
        script: Script,
        *,
        model: str = "scripted",
        max_logprobs: int = 20,
        max_model_len: int = 100_000,
        chat_template: str = CHATML,
    ) -> None:
        self.script, self.model, self.max_logprobs = script, model, max_logprobs
        self.max_model_len = max_model_len
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        self._template = env.from_string(chat_template)
        self.requests: list[RequestLog] = []
        self.faults = Faults()
        self.active = 0
        self._idle = threading.Condition()

    def reset(self) -> None:
        """Forget the logged requests (``active`` is a live gauge, 0 whenever idle)."""
        with self._idle:
            self.requests = []

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until no completion is generating; False if one still is after ``timeout``."""
        with self._idle:
            return self._idle.wait_for(lambda: self.active == 0, timeout)

    def _add_active(self, delta: int) -> None:
        with self._idle:
            self.active += delta
            self._idle.notify_all()

    def check_model(self, body: dict[str, Any]) -> Answer | None:
        name = body.get("model")
        if name is None or name == self.model:
            return None
        return error(404, "NotFoundError", "model", f"The model `{name}` does not exist.")

    def validate(self, body: dict[str, Any], n_prompt: int) -> Answer | None:
        """The 400 vLLM would answer to this completion request, if any."""
        n_top, max_tokens, limit = body.get("logprobs"), body.get("max_tokens"), self.max_model_len
        if prompt_text(body.get("prompt")) is None:
            return error(400, "BadRequestError", "prompt", "prompt must be a string or token ids")
        checks = [
            (n_top is not None and n_top > self.max_logprobs, "logprobs", n_top,
             f"Requested sample logprobs of {n_top}, which is greater than max allowed: "
             f"{self.max_logprobs}"),
            (n_prompt > limit, "input_tokens", n_prompt,
             f"This model's maximum context length is {limit} tokens. However, your prompt "
             f"contains at least {n_prompt} input tokens, which exceeds this limit even without"
             " any output tokens. Please reduce the length of the input prompt."),
            (max_tokens is not None and max_tokens > limit, "max_tokens", max_tokens,
             f"max_tokens={max_tokens} cannot be greater than max_model_len={limit}. Please"
             " request fewer output tokens."),
        ]  # fmt: skip
        for failed, param, value, message in checks:
            if failed:
                text = f"{message} (parameter={param}, value={value})"
                return error(400, "BadRequestError", str(param), text)
        return None

    def completion(
        self,
        body: dict[str, Any],
        *,
        received_s: float | None = None,
        authorization: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Completion | Answer:
        """Log a ``/v1/completions`` request and accept it (a :class:`Completion`), or answer
        the error it gets: an injected fault, an unknown model, a 400."""
        prompt, stream = body.get("prompt"), bool(body.get("stream"))
        text = prompt_text(prompt)
        log = RequestLog(prompt=str(text), params=body, stream=stream, received_s=received_s)
        log.authorization = authorization
        log.headers = {k.lower(): v for k, v in (headers or {}).items()}
        with self._idle:
            self.requests.append(log)
        n_prompt = len(prompt) if isinstance(prompt, list) else len(str(text)) // 4 + 1
        faults = self.faults
        faults.seen += 1
        if faults.status is not None and faults.seen >= faults.status_from:
            count = faults.status_count
            if count is None or faults.seen < faults.status_from + count:
                return error(faults.status, "InjectedError", "none", "injected failure")
        kind = faults.rng.choice(_CHAOS) if faults.rng.random() < faults.chaos else None
        if kind is not None:
            faults.chaos_drawn[str(kind)] = faults.chaos_drawn.get(str(kind), 0) + 1
        if kind in (500, 503, 429):
            return error(int(kind), "InjectedError", "none", "injected chaos")
        if faults.drop_logprobs:
            body = {k: v for k, v in body.items() if k != "logprobs"}
            log.params = body
        failure = self.check_model(body) or self.validate(body, n_prompt)
        if failure is not None:
            return failure
        if faults.refuse_schema and body.get("structured_outputs"):
            return error(400, "BadRequestError", "structured_outputs", _REFUSED_SCHEMA)
        max_tokens = body.get("max_tokens", 16)
        budget = self.max_model_len - n_prompt
        budget = budget if max_tokens is None else min(max_tokens, budget)
        head: dict[str, Any] = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion"}
        head |= {"created": int(time.time()), "model": self.model}
        completion = Completion(self.script, log, n_prompt, budget, head)
        if faults.stall_s and (faults.stall_count is None or faults.stalls < faults.stall_count):
            faults.stalls += 1
            completion.stall_at, completion.stall_s = faults.stall_after, faults.stall_s
        if not stream:
            return completion

        completion.cut_after = faults.rng.randint(0, 5) if kind == "cut" else None
        if faults.cut_after is not None and faults.cuts < faults.cut_count:
            faults.cuts += 1
            completion.cut_after = faults.cut_after

        completion.garble_at = faults.rng.randint(0, 5) if kind == "garbage" else None
        if faults.garbage and (
            faults.garbage_count is None or faults.garbled < faults.garbage_count
        ):
            faults.garbled += 1
            completion.garble_at = faults.garbage_after

        completion.fail_at = faults.rng.randint(0, 5) if kind == "error" else None
        if faults.error_event is not None and (
            faults.error_event_count is None or faults.errored < faults.error_event_count
        ):
            faults.errored += 1
            completion.fail_at, completion.fail_code = faults.error_event_after, faults.error_event
        return completion

    def tokenize(self, body: dict[str, Any]) -> Answer:
        failure = self.check_model(body)
        if failure is not None:
            return failure
        if "messages" in body:
            kwargs = {
                "add_generation_prompt": body.get("add_generation_prompt", True),
                "tools": body.get("tools"),
                **body.get("chat_template_kwargs", {}),
            }
            text = self._template.render(messages=body["messages"], **kwargs)
        else:
            text = body.get("prompt", "")
        tokens, limit = [ord(c) for c in text], self.max_model_len
        return Answer({"count": len(tokens), "max_model_len": limit, "tokens": tokens,
                       "token_strs": None})  # fmt: skip

    def detokenize(self, body: dict[str, Any]) -> Answer:
        failure = self.check_model(body)
        return failure or Answer({"prompt": "".join(map(chr, body.get("tokens", [])))})

    def models(self) -> Answer:
        card: dict[str, Any] = {
            "id": self.model,
            "object": "model",
            "owned_by": "vllm",
            "root": self.model,
        }
        card["max_model_len"] = self.max_model_len
        return Answer({"object": "list", "data": [card]})
