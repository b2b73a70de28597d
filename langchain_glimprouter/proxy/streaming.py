"""Work that stops the moment the client goes away.

The router's driver closes its open backend stream when it is cancelled or closed, which makes
the server abort the request (:mod:`langchain_glimprouter.http.drivers`). Starlette by itself
notices a client that left only at the next write (ASGI 2.4), so a glimpse or a long prefill
would run on. Here the work runs in a task beside a watcher of ``http.disconnect``: when the
client leaves first, the task is cancelled (once, as asyncio does, so the driver's cleanup runs
to the end) and awaited, so both servers' requests are aborted before the handler returns.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from starlette.responses import StreamingResponse
from starlette.types import Message, Receive, Scope, Send

T = TypeVar("T")


class ClientGone(Exception):
    """The client disconnected before the work was done."""


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(receive: Receive, work: Awaitable[T]) -> T:
    """``await work``, or cancel it and raise :class:`ClientGone` as soon as ``receive`` says
    the client has disconnected."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(receive))
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for running in (task, watcher):
            running.cancel()
        await asyncio.gather(task, watcher, return_exceptions=True)
    if not task.cancelled():
        return task.result()
    raise ClientGone


def _body(data: bytes, *, more: bool) -> Message:
    return {"type": "http.response.body", "body": data, "more_body": more}


class EventStream(StreamingResponse):
    """A ``text/event-stream`` response of ``events`` (each the text of one event, ``data: ...
    \\n\\n``) that stops reading them when the client disconnects, between events or while one
    is being produced.

    ``close`` is awaited exactly once when the response ends, however it ends: done, failed,
    or the client gone, even before the first event was asked for. ``events`` has not started
    then, so closing it runs none of its code: what must happen at the end belongs in
    ``close``, not in a ``finally`` of ``events``.
    """

    def __init__(self, events: AsyncIterator[str], close: Callable[[], Awaitable[None]]) -> None:
        super().__init__(events, media_type="text/event-stream")
        self.events, self.close = events, close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            with contextlib.suppress(ClientGone):
                await unless_disconnected(receive, self._pump(send))
        finally:
            await self.close()

    async def _pump(self, send: Send) -> None:
        start = {"type": "http.response.start", "status": self.status_code}
        try:
            await send({**start, "headers": self.raw_headers})
            async for event in self.events:
                await send(_body(event.encode(), more=True))
            await send(_body(b"", more=False))
        except OSError:  # the client left while an event was being sent (ASGI 2.4)
            raise ClientGone from None
