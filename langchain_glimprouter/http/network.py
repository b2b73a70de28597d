"""The async connections of the router's own clients to plain-HTTP servers: an asyncio-native
network backend for httpcore2 (under httpx2, under the openai SDK).

httpcore2's default backend goes through anyio, whose stream reads and writes each yield to the
event loop once even when the bytes are already there (a checkpoint), and wrap each in a cancel
scope. With 64 streams on one loop every such turn waits behind the other streams' tokens, and
a step boundary is a dozen of them: the next request of a question reached the server 6-9 ms
after the last token (median) against 2 ms for a minimal client (docs/benchmarks.md). Here a
read returns buffered bytes at once and waits on the loop only when there are none, and a write
hands its bytes to the transport, waiting only when the transport asks to pause. Everything
else (HTTP/1.1, pooling, keep-alive) stays httpcore2's.

Only ``http://`` servers use it (vLLM in the same cluster or on the same machine); ``https://``
keeps httpcore2's own backend, TLS included.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterable
from typing import Any, cast

import httpcore2
import httpx2

_HIGH_WATER = 256 * 1024  # bytes buffered before the socket stops being read
_LOW_WATER = 64 * 1024  # ... and below which it is read again


class _Protocol(asyncio.Protocol):
    """The bytes a connection received, and futures to wait for more or for a drained write.

    A reader that falls behind (a slow consumer of a long stream) pauses the socket's reads once
    ``_HIGH_WATER`` bytes wait, so the server feels back-pressure instead of the buffer growing."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.eof = False
        self.error: BaseException | None = None
        self.transport: asyncio.Transport | None = None
        self.readable: asyncio.Future[None] | None = None
        self.writable: asyncio.Future[None] | None = None
        self.paused = False
        self.reading_paused = False

    @staticmethod
    def _wake(future: asyncio.Future[None] | None) -> None:
        if future is not None and not future.done():
            future.set_result(None)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A transport, though not always an instance of asyncio.Transport (uvloop's is not).
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._wake(self.readable)
        if len(self.buffer) > _HIGH_WATER and not self.reading_paused and self.transport:
            self.reading_paused = True
            self.transport.pause_reading()

    def consumed(self) -> None:
        """Read the socket again once the reader has caught up."""
        if self.reading_paused and len(self.buffer) < _LOW_WATER and self.transport:
            self.reading_paused = False
            if not self.transport.is_closing():
                self.transport.resume_reading()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake(self.readable)
        return False  # close the transport

    def connection_lost(self, exc: BaseException | None) -> None:
        self.eof, self.error = True, exc
        self._wake(self.readable)
        self._wake(self.writable)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._wake(self.writable)


async def _wait(
    future: asyncio.Future[None], timeout: float | None, error: type[Exception]
) -> None:
    """Wait for ``future``; after ``timeout`` seconds raise ``error`` (a cancellation from
    outside stays a cancellation)."""
    if timeout is None:
        await future
        return
    expired = False

    def expire() -> None:
        nonlocal expired
        expired = True
        future.cancel()

    handle = asyncio.get_running_loop().call_later(timeout, expire)
    try:
        await future
    except asyncio.CancelledError:
        if expired:
            raise error(f"no bytes within {timeout} s") from None
        raise
    finally:
        handle.cancel()


class AsyncioStream(httpcore2.AsyncNetworkStream):
    """One TCP connection."""

    def __init__(self, protocol: _Protocol) -> None:
        self._p = protocol

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        p = self._p
        if not p.buffer and not p.eof:
            p.readable = asyncio.get_running_loop().create_future()
            try:
                await _wait(p.readable, timeout, httpcore2.ReadTimeout)
            finally:
                p.readable = None
        if p.buffer:
            data = bytes(p.buffer[:max_bytes])
            del p.buffer[:max_bytes]
            p.consumed()
            return data
        if p.error is not None:
            raise httpcore2.ReadError(f"the connection broke: {p.error}") from p.error
        return b""  # the server closed the connection

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        p = self._p
        if not buffer:
            return
        if p.transport is None or p.transport.is_closing():
            raise httpcore2.WriteError("the connection is closed")
        p.transport.write(buffer)
        if p.paused:
            p.writable = asyncio.get_running_loop().create_future()
            try:
                await _wait(p.writable, timeout, httpcore2.WriteTimeout)
            finally:
                p.writable = None

    async def aclose(self) -> None:
        if self._p.transport is not None:
            self._p.transport.close()

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":  # an idle connection the server closed (or wrote to)
            return bool(self._p.buffer) or self._p.eof
        return None if self._p.transport is None else self._p.transport.get_extra_info(info)


class AsyncioBackend(httpcore2.AsyncNetworkBackend):
    """Plain TCP connections on the running asyncio loop (see the module docstring)."""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        local = (local_address, 0) if local_address else None
        try:
            transport, protocol = await asyncio.wait_for(
                loop.create_connection(_Protocol, host, port, local_addr=local), timeout
            )
        except TimeoutError as exc:
            raise httpcore2.ConnectTimeout(f"no connection within {timeout} s") from exc
        except OSError as exc:
            raise httpcore2.ConnectError(str(exc)) from exc
        sock: socket.socket | None = transport.get_extra_info("socket")
        for option in socket_options or ():
            if sock is not None:
                sock.setsockopt(*option)
        return AsyncioStream(protocol)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def async_transport(base_url: str, limits: httpx2.Limits, verify: Any) -> httpx2.AsyncHTTPTransport:
    """httpx2's async transport, on :class:`AsyncioBackend` for an ``http://`` server.

    httpx2 takes no network backend, so its connection pool is replaced by one with the same
    settings that has it (``AsyncHTTPTransport._pool``; a unit test fails if that changes)."""
    transport = httpx2.AsyncHTTPTransport(limits=limits, verify=verify)
    if base_url.startswith("http://"):
        transport._pool = httpcore2.AsyncConnectionPool(
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=AsyncioBackend(),
        )
    return transport
