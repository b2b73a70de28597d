"""The drivers: run a routing program (:mod:`langchain_glimprouter.core.ops`), performing its
operations with one :class:`Client` per replica of each role, synchronously (:func:`drive`) or on
the running event loop (:func:`adrive`).

At most one stream is open at a time; the drivers close it whatever happens (an error, the
consumer stopping early, ``asyncio`` cancellation), which makes the server abort the request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    AsyncExitStack,
    ExitStack,
)
from typing import Any, Protocol

from langchain_glimprouter.core.ops import Emit, Open, Program, Read, Request, Sleep
from langchain_glimprouter.core.wire import Chunk
from langchain_glimprouter.errors import GlimpRouterError


class Client(Protocol):
    """What the drivers need of one server's client
    (:class:`~langchain_glimprouter.http.client.BackendClient`, or a test's fake)."""

    def request_json(
        self, method: str, path: str, body: dict[str, Any] | None, session: str | None = None
    ) -> dict[str, Any]: ...

    async def arequest_json(
        self, method: str, path: str, body: dict[str, Any] | None, session: str | None = None
    ) -> dict[str, Any]: ...

    def stream(
        self, body: dict[str, Any], session: str | None = None
    ) -> AbstractContextManager[Iterator[Chunk]]: ...

    def astream(
        self, body: dict[str, Any], session: str | None = None
    ) -> AbstractAsyncContextManager[AsyncIterator[Chunk]]: ...


Clients = Mapping[str, Sequence[Client]]
"""A client per replica URL of each role."""


def drive(program: Program[Any], clients: Clients) -> Iterator[Any]:
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
                    client = clients[op.role][op.replica]
                    value = client.request_json(op.method, op.path, op.body, op.session)
                elif isinstance(op, Open):
                    if stack is not None:  # the previous stream ended: release it first
                        stack.close()
                        stack, chunks = None, None
                    opening = ExitStack()
                    stream = clients[op.role][op.replica].stream(op.body, op.session)
                    chunks = opening.enter_context(stream)
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


async def adrive(program: Program[Any], clients: Clients) -> AsyncIterator[Any]:
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
                    client = clients[op.role][op.replica]
                    value = await client.arequest_json(op.method, op.path, op.body, op.session)
                elif isinstance(op, Open):
                    if stack is not None:  # the previous stream ended: release it first
                        await stack.aclose()
                        stack, chunks = None, None
                    aopening = AsyncExitStack()
                    astream = clients[op.role][op.replica].astream(op.body, op.session)
                    chunks = await aopening.enter_async_context(astream)
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
