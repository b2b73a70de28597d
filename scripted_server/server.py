"""A scripted, deterministic imitation of vLLM's OpenAI-compatible server, for tests and benchmarks.

Each :class:`ScriptedServer` answers real HTTP on ``127.0.0.1`` (uvicorn in a daemon thread, with
its own event loop) with the wire format of vLLM's ``/v1/completions``, ``/tokenize``,
``/detokenize``, ``/v1/models`` and ``/health``. What it writes is fixed by a :class:`Script`
and by the prompt (see :func:`continuation`), so a router driving two of them step by step gets
reproducible text and first-token entropies, and the server's counters (:attr:`~ScriptedServer.
requests`, :attr:`~ScriptedServer.active`) tell how much work the router asked for.

Simplifications, all deterministic:

* a prompt counts ``len(prompt) // 4 + 1`` tokens; ``/tokenize`` gives one token per code point;
* the text is cut into tokens by :func:`split_tokens`; EOS is not a token (the last text token
  carries the finish reason; an empty continuation is one empty chunk);
* a request that is rejected (404 or 400) is logged too, with ``finish_reason`` None;
* a request with ``structured_outputs`` gets the scripted text up to the end of its first JSON
  value (:func:`first_json_value`), the schema itself is not checked;
* a stream pauses at least ``_ABORT_WINDOW_S`` (1 ms) between tokens, even with ``decode_s=0``,
  so that a client closing the stream after a token stops it within a token or two (with no
  pause the server, in another thread, would race through the whole text first);
* with ``steady=True`` the tokens of a request keep a fixed clock (token ``i`` is due
  ``prefill_s + i * decode_s`` after the request starts generating), as a GPU engine decodes
  whatever the client and the HTTP layer do; by default each pause is a fresh sleep, so the timer
  overshoot and the time spent writing each event add up over a stream.

:class:`ScriptedServerProcess` runs a :class:`ScriptedServer` in a child process of its own, so
that a benchmark's client does not share its interpreter (and GIL) with the emulated servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import multiprocessing
import random
import re
import socket
import threading
import time
import uuid
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import httpx
import uvicorn
from jinja2.sandbox import ImmutableSandboxedEnvironment
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
_WORDS = re.compile(r"^\s+|\s*\S+|\s+")
_GLUED = re.compile(r"\s*\S+|\s+")
_MIN_LOGPROB = -9999.0  # vLLM's floor for log(0)
_CHAOS: tuple[int | str, ...] = (500, 503, 429, "cut", "cut", "garbage")
_ABORT_WINDOW_S = 0.001  # least pause between streamed tokens, for a client's abort to be seen


def _dumps(obj: Any) -> str:
    """Compact JSON, as vLLM writes it."""
    return json.dumps(obj, separators=(",", ":"))


@dataclass
class Script:
    """What one scripted model writes: its reasoning steps, first-token entropies and answer."""

    steps: list[str]
    h_init: list[float] | float = 0.5
    answer: str | Callable[[str], str] = "The answer is 42."
    """The final answer, or a function of the prompt that gives it."""
    delimiter: str = "\n\n"
    end_with_think: bool = True
    residual_mass: float = 0.05

    def entropy(self, k: int) -> float:
        """Target first-token entropy for step ``k`` (a list is clamped to its last entry)."""
        if isinstance(self.h_init, list):
            return self.h_init[min(k, len(self.h_init) - 1)]
        return self.h_init


@dataclass
class RequestLog:
    """One ``/v1/completions`` request as the server saw it."""

    prompt: str
    params: dict[str, Any]
    stream: bool
    generated_tokens: int = 0
    finished: bool = False
    finish_reason: str | None = None
    received_s: float | None = None
    """``time.perf_counter()`` when the handler got the request (its body not yet read)."""
    authorization: str | None = None
    """The request's Authorization header."""
    started_s: float | None = None
    """``time.perf_counter()`` when the generation started (before the prefill pause)."""
    first_token_s: float | None = None
    """When the first token was handed to the HTTP layer."""
    last_token_s: float | None = None
    """When the last token (or the final empty chunk) was handed to the HTTP layer."""


def split_tokens(text: str, delimiter: str, at_start: bool = True) -> list[str]:
    """Cut ``text`` into tokens: each ``delimiter`` is a token of its own, and the text between two
    delimiters is cut by ``^\\s+|\\s*\\S+|\\s+`` (whitespace at its start, then a word with the
    whitespace before it; whitespace left at the end). With ``at_start`` False the text goes on
    a step already begun (a resumed stream), so its first word keeps the whitespace before it.
    ``"".join(split_tokens(text, d)) == text`` always holds."""
    tokens: list[str] = []
    for i, part in enumerate(text.split(delimiter)):
        if i:
            tokens.append(delimiter)
        tokens.extend((_WORDS if i or at_start else _GLUED).findall(part))
    return tokens


def continuation(script: Script, prompt: str) -> tuple[str, int]:
    """The whole text the model writes after ``prompt`` (up to EOS), and the step index ``k``.

    ``k`` counts the delimiters after the last ``"<think>\\n"``; with ``"</think>"`` there, the
    model writes the answer, else steps ``k, k+1, ...`` each followed by the delimiter, then
    ``"</think>" + delimiter + answer`` (only if ``end_with_think``; EOS otherwise).

    A prompt that ends inside that text (a resumed request) continues it where it stops."""
    _, think, body = prompt.rpartition("<think>\n")
    body = body if think else ""
    k = body.count(script.delimiter)
    answer = script.answer(prompt) if callable(script.answer) else script.answer
    if "</think>" in body:
        partial = body.rpartition("</think>")[2].removeprefix(script.delimiter)
        return answer.removeprefix(partial), k
    text = "".join(step + script.delimiter for step in script.steps[k:])
    if script.end_with_think:
        text += f"</think>{script.delimiter}{answer}"
    partial = body.rpartition(script.delimiter)[2]
    return text.removeprefix(partial), k


def first_json_value(text: str) -> str:
    """What a server constraining its output to JSON would write: the text up to the end of
    its first JSON value (all of it when there is none; the client then fails to parse it)."""
    start = len(text) - len(text.lstrip())
    try:
        _, end = json.JSONDecoder().raw_decode(text, start)
    except ValueError:
        return text
    return text[:end]


def _entropy(p: float, n: int) -> float:
    """Entropy (nats) of ``p`` on one outcome and ``(1 - p) / (n - 1)`` on each of ``n - 1``."""
    h = -p * math.log(p) if p > 0 else 0.0
    return h - (1 - p) * math.log((1 - p) / (n - 1)) if p < 1 else h


def first_top_logprobs(token: str, n: int, h: float, mass: float) -> dict[str, float]:
    """Top-``n`` logprobs (at least the sampled ``token``) with total probability ``1 - mass`` and
    renormalised entropy ``h``, clamped to ``[0, log n]``. The sampled token has renormalised
    probability ``p >= 1 / n`` (found by bisection, as the entropy falls with ``p``), the other
    ``n - 1`` (``"<alt1>"``, ...) share the rest equally."""
    n = max(n, 1)
    lo, hi = 1.0 / n, 1.0
    if h <= 0:
        lo = 1.0
    for _ in range(200 if lo < hi else 0):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _entropy(mid, n) > h else (lo, mid)
    p, total = lo, 1.0 - mass
    rest = (1 - p) * total / (n - 1) if n > 1 else 0.0
    sampled = math.log(p * total)
    alt = min(math.log(rest), sampled) if rest > 0 else _MIN_LOGPROB  # ties: no rounding above
    return {token: sampled} | {f"<alt{i}>": alt for i in range(1, n)}


def later_top_logprobs(token: str, n: int) -> dict[str, float]:
    """Top-``n`` logprobs for a token after the first: the sampled one far ahead of the rest."""
    return {token: -0.01} | {f"<alt{i}>": -10.0 - i for i in range(1, max(n, 1))}


def _error(status: int, type_: str, param: str, message: str) -> JSONResponse:
    """A vLLM error body."""
    body = {"error": {"message": message, "type": type_, "param": param, "code": status}}
    return JSONResponse(body, status_code=status)


def _choice(text: str, logprobs: Any, finish: str | None, stop: str | None) -> dict[str, Any]:
    """One choice of a vLLM completion (stream) response."""
    return {"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish,
            "stop_reason": stop}  # fmt: skip


class _Stream(StreamingResponse):
    """An event stream that closes the generation as soon as the response ends, aborted or not."""

    def __init__(
        self, body: AsyncGenerator[str, None], generation: AsyncGenerator[Any, None]
    ) -> None:
        super().__init__(body, media_type="text/event-stream")
        self._generation = generation

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._generation.aclose()


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
    cut_after: int | None = None
    """Break the connection (no finish, no [DONE]) after this many streamed tokens ..."""
    cut_count: int = 1
    """... in this many requests; later ones are left alone."""
    stall_s: float = 0.0
    """Pause this long before the first token of every request."""
    garbage: bool = False
    """Send a server-sent event that is not JSON ..."""
    garbage_after: int = 0
    """... after this many streamed tokens ..."""
    garbage_count: int | None = None
    """... in this many requests (None: every one)."""
    drop_logprobs: bool = False
    """Ignore the ``logprobs`` parameter (a server without logprobs support)."""
    chaos: float = 0.0
    """Probability that a request gets a random fault: HTTP 500, 503 or 429, a cut after 0-5
    tokens, or a non-JSON event (for soak tests)."""
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    seen: int = 0
    cuts: int = 0
    garbled: int = 0


class ScriptedServer:
    """A scripted vLLM server on a free loopback port; see the module docstring."""

    def __init__(
        self,
        script: Script,
        *,
        model: str = "scripted",
        max_logprobs: int = 20,
        max_model_len: int = 100_000,
        decode_s: float = 0.0,
        prefill_s: float = 0.0,
        chat_template: str = CHATML,
        steady: bool = False,
    ) -> None:
        self.script, self.model, self.max_logprobs = script, model, max_logprobs
        self.max_model_len, self.decode_s, self.prefill_s = max_model_len, decode_s, prefill_s
        self.steady = steady
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        self._template = env.from_string(chat_template)
        self.requests: list[RequestLog] = []
        self.faults = Faults()
        self.active = 0
        self._idle = threading.Condition()
        self.root_url = self.base_url = ""
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._app = Starlette(
            routes=[
                Route("/v1/completions", self._completions, methods=["POST"]),
                Route("/tokenize", self._tokenize, methods=["POST"]),
                Route("/detokenize", self._detokenize, methods=["POST"]),
                Route("/v1/models", self._models),
                Route("/health", self._health),
            ]
        )

    def start(self) -> ScriptedServer:
        """Serve in a daemon thread and wait until ``/health`` answers."""
        # With proto IPPROTO_TCP asyncio sets TCP_NODELAY (0 would let Nagle hold chunks ~40 ms).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.bind(("127.0.0.1", 0))
        self.root_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.base_url = f"{self.root_url}/v1"
        config = uvicorn.Config(
            self._app,
            log_config=None,
            access_log=False,
            lifespan="off",
            ws="none",
            timeout_graceful_shutdown=1,
        )
        self._server = server = uvicorn.Server(config)
        self._thread = threading.Thread(target=server.run, args=([sock],), daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while self._thread.is_alive() and time.monotonic() < deadline:
            try:
                httpx.get(f"{self.root_url}/health", timeout=1, trust_env=False).raise_for_status()
                return self
            except httpx.HTTPError:
                time.sleep(0.01)
        raise RuntimeError(f"scripted server {self.model!r} did not start")

    def stop(self) -> None:
        """Shut the server down (in-flight streams get one second) and join its thread."""
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> ScriptedServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

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

    def _check_model(self, body: dict[str, Any]) -> JSONResponse | None:
        name = body.get("model")
        if name is None or name == self.model:
            return None
        return _error(404, "NotFoundError", "model", f"The model `{name}` does not exist.")

    def _validate(self, body: dict[str, Any], n_prompt: int) -> JSONResponse | None:
        """The 400 vLLM would answer to this completion request, if any."""
        n_top, max_tokens, limit = body.get("logprobs"), body.get("max_tokens"), self.max_model_len
        if not isinstance(body.get("prompt"), str):
            return _error(400, "BadRequestError", "prompt", "prompt must be a string")
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
                return _error(400, "BadRequestError", str(param), text)
        return None

    async def _completions(self, request: Request) -> Response:
        received = time.perf_counter()
        body: dict[str, Any] = await request.json()
        prompt, stream = body.get("prompt"), bool(body.get("stream"))
        log = RequestLog(prompt=str(prompt), params=body, stream=stream, received_s=received)
        log.authorization = request.headers.get("authorization")
        with self._idle:
            self.requests.append(log)
        n_prompt = len(str(prompt)) // 4 + 1
        faults = self.faults
        faults.seen += 1
        if faults.status is not None and faults.seen >= faults.status_from:
            count = faults.status_count
            if count is None or faults.seen < faults.status_from + count:
                return _error(faults.status, "InjectedError", "none", "injected failure")
        kind = faults.rng.choice(_CHAOS) if faults.rng.random() < faults.chaos else None
        if kind in (500, 503, 429):
            return _error(int(kind), "InjectedError", "none", "injected chaos")
        if faults.drop_logprobs:
            body = {k: v for k, v in body.items() if k != "logprobs"}
            log.params = body
        error = self._check_model(body) or self._validate(body, n_prompt)
        if error is not None:
            return error
        max_tokens = body.get("max_tokens", 16)
        budget = self.max_model_len - n_prompt
        budget = budget if max_tokens is None else min(max_tokens, budget)
        generation = self._generate(request, log, str(prompt), budget)
        head: dict[str, Any] = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion"}
        head |= {"created": int(time.time()), "model": self.model}

        def usage() -> dict[str, int]:
            n = log.generated_tokens
            return {"prompt_tokens": n_prompt, "total_tokens": n_prompt + n, "completion_tokens": n}

        if not stream:
            choices = [choice async for choice in generation]
            if not log.finished:  # the client has gone
                return Response(status_code=499)
            text = "".join(choice["text"] for choice in choices)
            logprobs = None
            if body.get("logprobs") is not None:
                keys = ("text_offset", "token_logprobs", "tokens", "top_logprobs")
                lists = [c["logprobs"] for c in choices if c["logprobs"] is not None]
                logprobs = {key: [x for lp in lists for x in lp[key]] for key in keys}
            last = choices[-1] | {"text": text, "logprobs": logprobs}
            return JSONResponse(head | {"choices": [last], "usage": usage()})
        options = body.get("stream_options") or {}

        cut_after = faults.rng.randint(0, 5) if kind == "cut" else None
        if faults.cut_after is not None and faults.cuts < faults.cut_count:
            faults.cuts += 1
            cut_after = faults.cut_after

        garble_at = faults.rng.randint(0, 5) if kind == "garbage" else None
        if faults.garbage and (
            faults.garbage_count is None or faults.garbled < faults.garbage_count
        ):
            faults.garbled += 1
            garble_at = faults.garbage_after

        async def events() -> AsyncGenerator[str, None]:
            sent = 0
            async for choice in generation:
                if sent == garble_at:
                    yield "data: {this is not json\n\n"
                if sent == cut_after:
                    raise ConnectionAbortedError("injected cut")  # uvicorn drops the connection
                each = usage() if options.get("continuous_usage_stats") else None
                yield f"data: {_dumps(head | {'choices': [choice], 'usage': each})}\n\n"
                sent += 1
            if options.get("include_usage"):
                yield f"data: {_dumps(head | {'choices': [], 'usage': usage()})}\n\n"
            yield "data: [DONE]\n\n"

        return _Stream(events(), generation)

    def _logprobs(self, token: str, offset: int, n_top: int, step: int | None) -> dict[str, Any]:
        """vLLM's logprobs of one token; ``step`` is given for the first token of a response."""
        script = self.script
        top = (
            later_top_logprobs(token, n_top)
            if step is None
            else first_top_logprobs(token, n_top, script.entropy(step), script.residual_mass)
        )
        return {"text_offset": [offset], "token_logprobs": [top[token]], "tokens": [token],
                "top_logprobs": [top]}  # fmt: skip

    async def _generate(
        self, request: Request, log: RequestLog, prompt: str, budget: int
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Yield one stream choice per token, lazily; the last carries the finish reason."""
        text, k = continuation(self.script, prompt)
        if log.params.get("structured_outputs"):
            text = first_json_value(text)
        at_start = prompt.endswith(("<think>\n", self.script.delimiter))
        tokens = split_tokens(text, self.script.delimiter, at_start)
        first_content = next((i for i, token in enumerate(tokens) if token.strip()), 0)
        stop = log.params.get("stop") or []
        stops: list[str] = [stop] if isinstance(stop, str) else stop
        n_top: int | None = log.params.get("logprobs")
        gap = max(self.decode_s, _ABORT_WINDOW_S) if log.stream else self.decode_s
        clock = asyncio.get_running_loop().time
        self._add_active(1)
        try:
            log.started_s = time.perf_counter()
            first_due = clock() + self.prefill_s + self.faults.stall_s
            await asyncio.sleep(self.prefill_s + self.faults.stall_s)
            written = sent = ""
            for i, token in enumerate(tokens[: max(budget, 0)]):
                if i and self.steady:
                    await asyncio.sleep(max(first_due + i * gap - clock(), 0.0))
                elif i:
                    await asyncio.sleep(gap)
                if await request.is_disconnected():
                    return
                log.generated_tokens += 1
                offset, written = len(written), written + token
                hit = next((s for s in stops if s in written), None)
                visible = written if hit is None else written[: written.index(hit)]
                eos, full = hit is not None or i + 1 == len(tokens), i + 1 == budget
                finish = "stop" if eos else "length" if full else None
                # The step's entropy goes to its first token with content: whitespace before it
                # (a lone "\n" after the delimiter) is near-certain, as in a real model.
                step = k if i == first_content else None
                logprobs = None if n_top is None else self._logprobs(token, offset, n_top, step)
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
        finally:
            self._add_active(-1)

    async def _tokenize(self, request: Request) -> Response:
        body: dict[str, Any] = await request.json()
        error = self._check_model(body)
        if error is not None:
            return error
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
        out = {"count": len(tokens), "max_model_len": limit, "tokens": tokens, "token_strs": None}
        return JSONResponse(out)

    async def _detokenize(self, request: Request) -> Response:
        body: dict[str, Any] = await request.json()
        error = self._check_model(body)
        return error or JSONResponse({"prompt": "".join(map(chr, body.get("tokens", [])))})

    async def _health(self, _: Request) -> Response:
        return Response()

    async def _models(self, _: Request) -> Response:
        card: dict[str, Any] = {
            "id": self.model,
            "object": "model",
            "owned_by": "vllm",
            "root": self.model,
        }
        card["max_model_len"] = self.max_model_len
        return JSONResponse({"object": "list", "data": [card]})


def _serve_child(conn: Connection, script: Script, options: dict[str, Any]) -> None:
    """The child process of :class:`ScriptedServerProcess`: serve, then answer commands."""
    server = ScriptedServer(script, **options)
    try:
        server.start()
    except BaseException as exc:
        conn.send(("error", repr(exc)))
        raise
    conn.send(("ok", server.root_url))
    while True:
        try:
            command, arg = conn.recv()
        except EOFError:  # the parent has gone
            break
        if command == "requests":
            conn.send(list(server.requests))
        elif command == "reset":
            server.reset()
            conn.send(None)
        elif command == "wait_idle":
            conn.send(server.wait_idle(arg))
        elif command == "active":
            conn.send(server.active)
        elif command == "cpu":
            conn.send(time.process_time())
        elif command == "stop":
            break
    server.stop()
    conn.send(None)


class ScriptedServerProcess:
    """A :class:`ScriptedServer` in a child process (``spawn``), with the same client-side API
    (``start``/``stop``/context manager, ``base_url``, ``root_url``, ``model``, ``requests``,
    ``active``, ``reset``, ``wait_idle``) over a pipe; ``faults`` cannot be set. The script must
    pickle (a callable ``answer`` must be a module-level function).

    Use it to measure a client: the server then runs on its own interpreter, as a real one does,
    instead of taking turns with the client for the GIL.
    """

    def __init__(self, script: Script, *, model: str = "scripted", **options: Any) -> None:
        self.script, self.model = script, model
        self._options = {"model": model, **options}
        self.root_url = self.base_url = ""
        self._conn: Connection | None = None
        self._process: multiprocessing.process.BaseProcess | None = None
        self._lock = threading.Lock()

    def launch(self) -> ScriptedServerProcess:
        """Start the child process and return at once (:meth:`start` waits for it)."""
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        self._process = ctx.Process(
            target=_serve_child, args=(child, self.script, self._options), daemon=True
        )
        self._process.start()
        child.close()
        self._conn = parent
        return self

    def start(self, timeout: float = 60.0) -> ScriptedServerProcess:
        """Start the child (unless :meth:`launch` did) and wait until it serves."""
        if self._conn is None:
            self.launch()
        assert self._conn is not None
        if not self._conn.poll(timeout):
            self.stop()
            raise RuntimeError(f"scripted server process {self.model!r} did not start")
        status, value = self._conn.recv()
        if status != "ok":
            self.stop()
            raise RuntimeError(f"scripted server process {self.model!r} failed: {value}")
        self.root_url = value
        self.base_url = f"{value}/v1"
        return self

    def _call(self, command: str, arg: Any = None) -> Any:
        if self._conn is None:
            raise RuntimeError(f"scripted server process {self.model!r} is not running")
        with self._lock:
            self._conn.send((command, arg))
            return self._conn.recv()

    @property
    def requests(self) -> list[RequestLog]:
        """A copy of the child's request log."""
        result: list[RequestLog] = self._call("requests")
        return result

    @property
    def active(self) -> int:
        result: int = self._call("active")
        return result

    @property
    def cpu_s(self) -> float:
        """CPU time the child process has used so far (``time.process_time()`` there)."""
        result: float = self._call("cpu")
        return result

    def reset(self) -> None:
        self._call("reset")

    def wait_idle(self, timeout: float = 5.0) -> bool:
        result: bool = self._call("wait_idle", timeout)
        return result

    def stop(self) -> None:
        """Stop the server and end the child process."""
        if self._conn is not None:
            with contextlib.suppress(OSError, EOFError):
                self._call("stop")
            self._conn.close()
            self._conn = None
        if self._process is not None:
            self._process.join(timeout=10)
            if self._process.is_alive():
                self._process.kill()
                self._process.join()
            self._process = None

    def __enter__(self) -> ScriptedServerProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
