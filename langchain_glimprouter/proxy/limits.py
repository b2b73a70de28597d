"""The proxy's limits on slow and numerous clients, with their defaults (the
``glimprouter proxy`` flags of the same names):

* ``--header-timeout`` (:data:`HEADER_TIMEOUT_S`): a connection must send a whole request head
  within this many seconds of opening (or of its previous response), else it gets a 408 and is
  closed. uvicorn has no such timeout: its ``timeout_keep_alive`` runs only between requests and
  is reset by every byte received, so a client that sends nothing, or its headers a byte at a
  time, held a connection for ever. :class:`TimedH11Protocol` adds it.
* ``--body-timeout`` (:data:`BODY_TIMEOUT_S`): the app reads a request's whole body within this
  many seconds, else answers 408 ``request_timeout`` (:func:`body_timed_out`).
* ``--limit-concurrency`` (:data:`CONCURRENCY`): uvicorn's ``limit_concurrency``, with uvicorn's
  rule (this many connections open on the worker, or requests running), but answered by the
  app in OpenAI's error shape: :class:`TimedH11Protocol` marks such a request
  (:data:`OVERLOADED`) instead of letting uvicorn answer its plain-text 503, and
  :class:`OverloadGate` answers it 503 ``server_overloaded`` with ``Retry-After`` (the request
  id, the access log, CORS and ``/metrics`` as for any request).
* ``--timeout-keep-alive`` (:data:`KEEP_ALIVE_S`): uvicorn's, an idle connection's life between
  requests.

A request head is also bounded in size by h11 (uvicorn's ``h11_max_incomplete_event_size``,
16 KiB by default: a longer head is a 400), and a body by ``max_body_bytes`` (413).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

import h11
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from langchain_glimprouter.proxy.access_log import request_id
from langchain_glimprouter.proxy.errors import SERVER, ApiError

HEADER_TIMEOUT_S = 10.0
BODY_TIMEOUT_S = 30.0
CONCURRENCY = 512
KEEP_ALIVE_S = 5
RETRY_AFTER_S = 1
"""The ``Retry-After`` of a 503 ``server_overloaded`` (the openai SDKs wait that long, then
retry)."""
OVERLOADED = "glimprouter.overloaded"
"""The ASGI scope key by which :class:`TimedH11Protocol` marks a request beyond
``limit_concurrency`` (its value: the limit)."""
HEADER_TIMEOUT_ENV = "GLIMPROUTER_PROXY_HEADER_TIMEOUT"
"""The header timeout a :class:`TimedH11Protocol` reads (so that uvicorn's worker processes,
which import the class by name, get it too)."""
BODY_TIMEOUT_ENV = "GLIMPROUTER_PROXY_BODY_TIMEOUT"
_LATE = b"the request head took too long.\n"
_TIMED_OUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(_LATE), _LATE)
)


def body_timed_out(seconds: float) -> ApiError:
    return ApiError(
        408,
        f"the request body did not arrive within {seconds:g} seconds; send it at once (the "
        "operator sets this limit with --body-timeout).",
        code="request_timeout",
    )


def overloaded(limit: int) -> ApiError:
    """The 503 of a request beyond the worker's ``--limit-concurrency``."""
    return ApiError(
        503,
        f"the glimprouter proxy is at its concurrency limit ({limit} per worker; request "
        f"{request_id()}); retry after {RETRY_AFTER_S} s (the operator sets it with "
        "--limit-concurrency).",
        type=SERVER,
        code="server_overloaded",
    )


class OverloadGate:
    """ASGI middleware: a request :class:`TimedH11Protocol` marked :data:`OVERLOADED` is
    answered 503 ``server_overloaded`` with ``Retry-After``, before any endpoint runs;
    ``on_overload`` (the metrics) is told of it."""

    def __init__(self, app: ASGIApp, on_overload: Callable[[], None] | None = None) -> None:
        self.app, self.on_overload = app, on_overload

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = scope.get(OVERLOADED)
        if limit is None:
            await self.app(scope, receive, send)
            return
        if self.on_overload is not None:
            self.on_overload()
        response = overloaded(limit).response()
        response.headers["retry-after"] = str(RETRY_AFTER_S)
        await response(scope, receive, send)


def header_timeout() -> float:
    """:data:`HEADER_TIMEOUT_ENV`'s value, else :data:`HEADER_TIMEOUT_S` (0: none)."""
    return float(os.environ.get(HEADER_TIMEOUT_ENV) or HEADER_TIMEOUT_S)


class TimedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request head: armed when the
    connection opens and after each response, disarmed once a whole head is in (a request
    running, a body being read or a long stream being written are never cut by it). Its
    ``limit_concurrency`` is uvicorn's rule, but a request beyond it goes to the app marked
    :data:`OVERLOADED` (for :class:`OverloadGate`), not to uvicorn's plain-text 503."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timeout = header_timeout()
        self._head_timer: asyncio.TimerHandle | None = None
        self._limit, self.limit_concurrency = self.limit_concurrency, None
        if self._limit is not None:
            self.app = self._gated(self.app, self._limit)

    def _gated(self, app: ASGIApp, limit: int) -> ASGIApp:
        """``app``, told of each request beyond ``limit`` by uvicorn's rule (connections open,
        or requests running besides this one)."""

        async def gated(scope: Scope, receive: Receive, send: Send) -> None:
            if len(self.connections) >= limit or len(self.tasks) - 1 >= limit:
                scope[OVERLOADED] = limit
            await app(scope, receive, send)

        return gated

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._settle()

    def on_response_complete(self) -> None:
        self._arm()
        super().on_response_complete()
        self._settle()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        if self._head_timeout > 0:
            self._head_timer = self.loop.call_later(self._head_timeout, self._head_late)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _settle(self) -> None:
        """Disarm once the current request's head is in (a request cycle is running)."""
        if self.cycle is not None and not self.cycle.response_complete:
            self._disarm()

    def _head_late(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self.conn.our_state in (h11.IDLE, h11.DONE):
            self.transport.write(_TIMED_OUT)
        self.transport.close()
