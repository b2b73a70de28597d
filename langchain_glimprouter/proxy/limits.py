"""The proxy's limits on slow and numerous clients, with their defaults (the
``glimprouter proxy`` flags of the same names):

* ``--header-timeout`` (:data:`HEADER_TIMEOUT_S`): a connection must send a whole request head
  within this many seconds of opening (or of its previous response), else it gets a 408 and is
  closed. uvicorn has no such timeout: its ``timeout_keep_alive`` runs only between requests and
  is reset by every byte received, so a client that sends nothing, or its headers a byte at a
  time, held a connection for ever. :class:`TimedH11Protocol` adds it.
* ``--body-timeout`` (:data:`BODY_TIMEOUT_S`): the app reads a request's whole body within this
  many seconds, else answers 408 ``request_timeout`` (:func:`body_timed_out`).
* ``--limit-concurrency`` (:data:`CONCURRENCY`): uvicorn's ``limit_concurrency``: with this many
  connections open (or requests running), a new request gets uvicorn's plain 503.
* ``--timeout-keep-alive`` (:data:`KEEP_ALIVE_S`): uvicorn's, an idle connection's life between
  requests.

A request head is also bounded in size by h11 (uvicorn's ``h11_max_incomplete_event_size``,
16 KiB by default: a longer head is a 400), and a body by ``max_body_bytes`` (413).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from langchain_glimprouter.proxy.errors import ApiError

HEADER_TIMEOUT_S = 10.0
BODY_TIMEOUT_S = 30.0
CONCURRENCY = 512
KEEP_ALIVE_S = 5
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


def header_timeout() -> float:
    """:data:`HEADER_TIMEOUT_ENV`'s value, else :data:`HEADER_TIMEOUT_S` (0: none)."""
    return float(os.environ.get(HEADER_TIMEOUT_ENV) or HEADER_TIMEOUT_S)


class TimedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request head: armed when the
    connection opens and after each response, disarmed once a whole head is in (a request
    running, a body being read or a long stream being written are never cut by it)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timeout = header_timeout()
        self._head_timer: asyncio.TimerHandle | None = None

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
