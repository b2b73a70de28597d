"""The asyncio network backend on real sockets: reads, timeouts, a server that closes; on
asyncio's own loop and on uvloop (which uvicorn picks where it is installed)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpcore2
import pytest

from langchain_glimprouter.http.network import _HIGH_WATER, AsyncioBackend
from scripted_server import Script
from tests.support.pair import cancel_mid_stream, router_for

T = TypeVar("T")


async def serve(handler: object) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)  # type: ignore[arg-type]
    return server, server.sockets[0].getsockname()[1]


async def test_reads_what_arrived_and_sees_the_server_close() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        writer.write(b"echo:" + request[:4])
        await writer.drain()
        writer.close()

    server, port = await serve(handler)
    async with server:
        stream = await AsyncioBackend().connect_tcp("127.0.0.1", port, timeout=2)
        await stream.write(b"GET / HTTP/1.1\r\n\r\n", timeout=2)
        assert await stream.read(5, timeout=2) == b"echo:"
        assert await stream.read(100, timeout=2) == b"GET "
        assert await stream.read(100, timeout=2) == b""  # closed by the server
        assert stream.get_extra_info("is_readable") is True  # an idle connection to drop
        await stream.aclose()
        with pytest.raises(httpcore2.WriteError):
            await stream.write(b"more", timeout=1)


async def test_a_silent_server_is_a_read_timeout_and_cancelling_stays_a_cancel() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)

    server, port = await serve(handler)
    async with server:
        stream = await AsyncioBackend().connect_tcp("127.0.0.1", port, timeout=2)
        assert stream.get_extra_info("is_readable") is False
        with pytest.raises(httpcore2.ReadTimeout):
            await stream.read(10, timeout=0.05)
        task = asyncio.ensure_future(stream.read(10, timeout=5))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await stream.aclose()
        server.close()


async def test_nobody_listening_is_a_connect_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening
        with pytest.raises(httpcore2.ConnectError):
            await AsyncioBackend().connect_tcp("127.0.0.1", port, timeout=2)


async def test_a_reader_that_falls_behind_pauses_the_socket_and_loses_nothing() -> None:
    body = bytes(range(256)) * 16 * 1024  # 4 MiB

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(body)
        await writer.drain()
        writer.close()

    server, port = await serve(handler)
    async with server:
        stream = await AsyncioBackend().connect_tcp("127.0.0.1", port, timeout=2)
        await asyncio.sleep(0.3)  # the server writes all it can; nobody reads
        buffered = len(stream._p.buffer)  # type: ignore[attr-defined]
        assert 0 < buffered <= _HIGH_WATER + 512 * 1024, buffered  # paused, not 4 MiB
        received = bytearray()
        while chunk := await stream.read(65536, timeout=2):
            received += chunk
        assert received == body
        await stream.aclose()


def on_uvloop(work: Callable[[], Awaitable[T]]) -> T:
    """``work()`` run to its end on a uvloop event loop."""
    uvloop = pytest.importorskip("uvloop")
    loop = uvloop.new_event_loop()
    try:
        return loop.run_until_complete(work())
    finally:
        loop.close()


@pytest.mark.parametrize(
    "test",
    [
        test_reads_what_arrived_and_sees_the_server_close,
        test_a_silent_server_is_a_read_timeout_and_cancelling_stays_a_cancel,
        test_a_reader_that_falls_behind_pauses_the_socket_and_loses_nothing,
    ],
    ids=["reads", "timeouts", "back-pressure"],
)
def test_the_same_on_uvloop(test: Callable[[], Awaitable[None]]) -> None:
    on_uvloop(test)


def test_a_routed_call_and_a_cancelled_one_on_uvloop(servers: Any) -> None:
    """uvloop's transports are no ``asyncio.Transport`` instances: the backend must not care."""
    small, large = servers(
        small=Script(steps=["a b c d"] * 3, h_init=[0.1, 5.0, 0.1]), decode_s=0.01
    )
    router = router_for(small, large)
    message = on_uvloop(lambda: router.ainvoke("What is 6 times 7?"))
    record = message.response_metadata["glimprouter"]
    assert (record["n_steps"], record["n_large_steps"]) == (3, 1)
    assert message.content == "The answer is 42."

    slow_small, slow_large = servers(
        small=Script(steps=["a b c d e f g h i j k l m n o p"] * 3, h_init=0.1), decode_s=0.05
    )
    slow = router_for(slow_small, slow_large)
    on_uvloop(lambda: cancel_mid_stream(slow.ainvoke("And 7 times 6?"), slow_small))
