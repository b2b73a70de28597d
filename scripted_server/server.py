"""A scripted, deterministic imitation of vLLM's OpenAI-compatible server, for tests and benchmarks.

Each :class:`ScriptedServer` answers real HTTP on ``127.0.0.1`` (uvicorn in a daemon thread, with
its own event loop) with the wire format of vLLM's ``/v1/completions``, ``/tokenize``,
``/detokenize``, ``/v1/models`` and ``/health``. What it writes is fixed by a :class:`Script`
and by the prompt (see :func:`continuation`), so a router driving two of them step by step gets
reproducible text and first-token entropies, and the server's counters (:attr:`~ScriptedServer.
requests`, :attr:`~ScriptedServer.active`) tell how much work the router asked for.

What it answers is :mod:`scripted_server.answers` (no HTTP; a test's fake client answers from it
too); this module adapts it to HTTP and paces the tokens in time.

Simplifications, all deterministic:

* a text prompt counts ``len(prompt) // 4 + 1`` tokens; ``/tokenize`` gives one token per code
  point, and a prompt of token ids (accepted, as vLLM accepts it) is read back that way;
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
import multiprocessing
import socket
import threading
import time
from collections.abc import AsyncGenerator
from multiprocessing.connection import Connection
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from scripted_server.answers import Answer, Completion, Due, RequestLog, ScriptedModel, dumps
from scripted_server.script import Script

_ABORT_WINDOW_S = 0.001  # least pause between streamed tokens, for a client's abort to be seen


def _json(answer: Answer) -> JSONResponse:
    return JSONResponse(answer.body, status_code=answer.status)


def _sse(payload: dict[str, Any] | str) -> str:
    """One server-sent event: a JSON object, or raw data (``[DONE]``, an injected non-JSON one)."""
    return f"data: {payload if isinstance(payload, str) else dumps(payload)}\n\n"


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


class ScriptedServer(ScriptedModel):
    """A scripted vLLM server on a free loopback port; see the module docstring."""

    def __init__(
        self,
        script: Script,
        *,
        decode_s: float = 0.0,
        prefill_s: float = 0.0,
        steady: bool = False,
        **model: Any,
    ) -> None:
        """``model``: the :class:`~scripted_server.answers.ScriptedModel`'s settings (``model``,
        ``max_logprobs``, ``max_model_len``, ``chat_template``); the rest paces the tokens."""
        super().__init__(script, **model)
        self.decode_s, self.prefill_s, self.steady = decode_s, prefill_s, steady
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

    @property
    def connections(self) -> int:
        """HTTP connections open on the server now (uvicorn's own count)."""
        return 0 if self._server is None else len(self._server.server_state.connections)

    def __enter__(self) -> ScriptedServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def _completions(self, request: Request) -> Response:
        received = time.perf_counter()
        body: dict[str, Any] = await request.json()
        authorization = request.headers.get("authorization")
        accepted = self.completion(
            body, received_s=received, authorization=authorization, headers=request.headers
        )
        if isinstance(accepted, Answer):
            return _json(accepted)
        generation = self._generate(request, accepted)
        if not accepted.log.stream:
            choices = [choice async for choice in generation]
            if not accepted.log.finished:  # the client has gone
                return Response(status_code=499)
            return _json(accepted.response(choices))

        async def events() -> AsyncGenerator[str, None]:
            async for choice in generation:
                for payload in accepted.events(choice):
                    yield _sse(payload)
                if accepted.failed:
                    return
            for payload in accepted.closing_events():
                yield _sse(payload)

        return _Stream(events(), generation)

    async def _generate(
        self, request: Request, completion: Completion
    ) -> AsyncGenerator[dict[str, Any], None]:
        """The completion's choices, each when its token is due; none once the client has gone."""
        gap = max(self.decode_s, _ABORT_WINDOW_S) if completion.log.stream else self.decode_s
        clock = asyncio.get_running_loop().time
        self._add_active(1)
        try:
            completion.log.started_s = time.perf_counter()
            first_due = clock() + self.prefill_s
            await asyncio.sleep(self.prefill_s)
            for item in completion.generate():
                if not isinstance(item, Due):
                    yield item
                    continue
                if item.index == completion.stall_at:
                    await asyncio.sleep(completion.stall_s)
                    first_due += completion.stall_s
                if item.index and self.steady:
                    await asyncio.sleep(max(first_due + item.index * gap - clock(), 0.0))
                elif item.index:
                    await asyncio.sleep(gap)
                if await request.is_disconnected():
                    return
        finally:
            self._add_active(-1)

    async def _tokenize(self, request: Request) -> Response:
        return _json(self.tokenize(await request.json()))

    async def _detokenize(self, request: Request) -> Response:
        return _json(self.detokenize(await request.json()))

    async def _health(self, _: Request) -> Response:
        return Response()

    async def _models(self, _: Request) -> Response:
        return _json(self.models())


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
