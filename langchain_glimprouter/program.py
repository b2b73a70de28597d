"""The sans-I/O protocol between the routing logic and the network.

Routing decisions are written once, as generators ("programs") that *yield* the I/O they need —
:class:`Request` a JSON answer, :class:`Open` a completions stream, :class:`Read` its next chunk,
:class:`Close` it — and :class:`Emit` what the caller should see. Two small drivers,
:func:`drive` (sync) and :func:`adrive` (async), perform those operations with a
:class:`~langchain_glimprouter.backends.BackendClient` per role. A failure is thrown back into the
program at the ``yield`` that asked for the operation, so the program decides what to do about it.

At most one stream is open at a time; the drivers close it whatever happens (an error, the
consumer stopping early, ``asyncio`` cancellation), which makes the server abort the request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Mapping
from contextlib import AsyncExitStack, ExitStack
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from langchain_glimprouter.backends import BackendClient, Chunk
from langchain_glimprouter.errors import (
    BackendResponseError,
    BackendUnreachableError,
    GlimpRouterError,
)

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})

E = TypeVar("E")
R = TypeVar("R")


@dataclass(frozen=True)
class Request:
    """Send one JSON request to a backend; the program receives the decoded answer (a dict)."""

    role: str
    method: str
    path: str
    body: dict[str, Any] | None = None


@dataclass(frozen=True)
class Open:
    """Open a streamed ``/v1/completions`` request on a backend."""

    role: str
    body: dict[str, Any]


@dataclass(frozen=True)
class Read:
    """Read the next :class:`~langchain_glimprouter.backends.Chunk` of the open stream (or None)."""


@dataclass(frozen=True)
class Close:
    """Close the open stream; the server aborts the request."""


@dataclass(frozen=True)
class Sleep:
    """Wait before the next operation (a retry's backoff)."""

    seconds: float


@dataclass(frozen=True)
class Emit(Generic[E]):
    """Hand an event to the caller."""

    event: E


Op = Request | Open | Read | Close | Sleep | Emit[Any]
Program = Generator[Op, Any, R]
"""A routing program: yields operations, receives their results, returns ``R``."""


def is_retryable(error: GlimpRouterError) -> bool:
    """Failures that leave nothing behind on the server, so sending the request again is safe:
    the connection failed, or the server refused with 429 or a 5xx status."""
    if isinstance(error, BackendResponseError):
        return error.status_code in RETRYABLE_STATUS
    return isinstance(error, BackendUnreachableError)


def backoff(attempt: int) -> float:
    """Seconds to wait before retry number ``attempt`` (1, 2, ...): 0.25, 0.5, 1, 2, 2, ..."""
    return float(min(2.0, 0.25 * 2 ** (attempt - 1)))


def retrying(
    program: Program[R],
    retries: Mapping[str, int],
    on_retry: Callable[[str, GlimpRouterError], None] = lambda role, error: None,
) -> Program[R]:
    """Wrap ``program`` so that every :class:`Request` and :class:`Open` that fails in a
    retryable way (see :func:`is_retryable`) is sent again, up to ``retries[role]`` times with
    :func:`backoff`; the program sees only the last failure."""
    value: Any = None
    error: GlimpRouterError | None = None
    try:
        while True:
            try:
                op = program.throw(error) if error is not None else program.send(value)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            value, error = None, None
            attempt = 0
            while True:
                try:
                    value = yield op
                    break
                except GlimpRouterError as exc:
                    limit = retries.get(op.role, 0) if isinstance(op, (Request, Open)) else 0
                    if attempt >= limit or not is_retryable(exc):
                        error = exc
                        break
                    attempt += 1
                    on_retry(op.role, exc)  # type: ignore[union-attr]
                    yield Sleep(backoff(attempt))
    finally:
        program.close()


def drive(program: Program[Any], clients: Mapping[str, BackendClient]) -> Iterator[Any]:
    """Run ``program`` synchronously, yielding the events it emits."""
    stack: ExitStack | None = None
    chunks: Iterator[Chunk] | None = None
    value: Any = None
    error: GlimpRouterError | None = None
    try:
        while True:
            try:
                op = program.throw(error) if error is not None else program.send(value)
            except StopIteration:
                return
            value, error = None, None
            if isinstance(op, Emit):
                yield op.event
                continue
            try:
                if isinstance(op, Request):
                    value = clients[op.role].request_json(op.method, op.path, op.body)
                elif isinstance(op, Open):
                    opening = ExitStack()
                    chunks = opening.enter_context(clients[op.role].stream(op.body))
                    stack = opening
                elif isinstance(op, Read):
                    assert chunks is not None, "Read without an open stream"
                    value = next(chunks, None)
                elif isinstance(op, Sleep):
                    time.sleep(op.seconds)
                elif stack is not None:  # Close
                    stack.close()
                    stack, chunks = None, None
            except GlimpRouterError as exc:
                error = exc
    finally:
        if stack is not None:
            stack.close()
        program.close()


async def adrive(program: Program[Any], clients: Mapping[str, BackendClient]) -> AsyncIterator[Any]:
    """Run ``program`` on the running event loop, yielding the events it emits."""
    stack: AsyncExitStack | None = None
    chunks: AsyncIterator[Chunk] | None = None
    value: Any = None
    error: GlimpRouterError | None = None
    try:
        while True:
            try:
                op = program.throw(error) if error is not None else program.send(value)
            except StopIteration:
                return
            value, error = None, None
            if isinstance(op, Emit):
                yield op.event
                continue
            try:
                if isinstance(op, Request):
                    value = await clients[op.role].arequest_json(op.method, op.path, op.body)
                elif isinstance(op, Open):
                    aopening = AsyncExitStack()
                    chunks = await aopening.enter_async_context(clients[op.role].astream(op.body))
                    stack = aopening
                elif isinstance(op, Read):
                    assert chunks is not None, "Read without an open stream"
                    value = await anext(chunks, None)
                elif isinstance(op, Sleep):
                    await asyncio.sleep(op.seconds)
                elif stack is not None:  # Close
                    await stack.aclose()
                    stack, chunks = None, None
            except GlimpRouterError as exc:
                error = exc
    finally:
        if stack is not None:
            await stack.aclose()
        program.close()
