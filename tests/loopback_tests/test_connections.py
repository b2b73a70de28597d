"""Connections that fail, hang or are left: unreachable servers, timeouts, hang-ups, and every
way a caller stops a call (cancel, break, Ctrl-C) closing its stream so the server aborts it."""

from __future__ import annotations

import asyncio
import gc
import io
import socket
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler

from langchain_glimprouter import (
    Backend,
    BackendTimeoutError,
    BackendUnreachableError,
    GlimpRouterChatModel,
)
from langchain_glimprouter.cli import main as cli
from langchain_glimprouter.cli.servers import free_port
from langchain_glimprouter.core.ops import is_retryable
from langchain_glimprouter.http.client import BackendClient
from scripted_server import Script
from tests.support.pair import cancel_mid_stream, router_for

QUESTION = "What is 6 times 7?"


def test_unreachable_backend() -> None:
    dead = Backend(base_url=f"http://127.0.0.1:{free_port()}/v1", model="m")
    model = GlimpRouterChatModel(small=dead, large=dead, max_retries=0)
    with pytest.raises(BackendUnreachableError, match=r"\[small backend at http://127.0.0.1"):
        model.invoke(QUESTION)


def test_read_timeout_aborts_the_request(servers: Any) -> None:
    small, large = servers(decode_s=0.5)
    model = router_for(small, large, timeout=0.2)
    with pytest.raises(BackendTimeoutError, match="timeout"):
        model.invoke(QUESTION)
    assert small.wait_idle()
    assert large.wait_idle()


async def test_cancelling_closes_every_stream(servers: Any) -> None:
    small, large = servers(
        small=Script(steps=["a b c d e f g h i j k l m n o p"] * 3, h_init=0.1),
        decode_s=0.05,
    )
    await cancel_mid_stream(router_for(small, large).ainvoke(QUESTION), small)  # 0.8 s a step


def test_breaking_out_of_a_stream_closes_it(servers: Any) -> None:
    small, large = servers(
        small=Script(steps=["a b c d e f g h i j k l m n o p"] * 3, h_init=0.1),
        decode_s=0.02,
    )
    for chunk in router_for(small, large).stream(QUESTION):
        if chunk.additional_kwargs.get("reasoning_content"):
            break
    assert small.wait_idle(timeout=2)


class _CtrlC(BaseCallbackHandler):
    """Presses Ctrl-C (raises KeyboardInterrupt in the caller's thread) at the first answer
    token, while the answer's stream is open."""

    def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
        if token:  # reasoning chunks come with an empty token
            raise KeyboardInterrupt


def test_keyboard_interrupt_in_sync_use_closes_the_stream(servers: Any) -> None:
    """A KeyboardInterrupt raised in the caller's thread while a stream is open (here from a
    callback, at a known point; a real Ctrl-C lands wherever the thread is, and one that lands
    in a finaliser is dropped by Python itself) closes the stream: the server aborts it."""
    small, large = servers(
        large=Script(steps=["x"], answer=" ".join("abcdefghijklmnopqrstuvwxyz")), decode_s=0.02
    )
    router = router_for(small, large, streaming=True, callbacks=[_CtrlC()])
    with pytest.raises(KeyboardInterrupt):
        router.invoke(QUESTION)
    assert small.wait_idle(timeout=2)
    assert large.wait_idle(timeout=2)
    answer = large.requests[-1]
    assert not answer.finished
    assert answer.generated_tokens < 26


def _hang_up_server() -> tuple[socket.socket, threading.Thread]:
    """A server that reads each request and closes the connection without a word."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener, thread


async def test_a_connection_closed_before_any_answer_is_retryable() -> None:
    """Nothing was answered, so nothing runs on the server: safe to send again (a kept-alive
    connection the server closed as the request went out looks like this)."""
    listener, _ = _hang_up_server()
    port = listener.getsockname()[1]
    backend = Backend(base_url=f"http://127.0.0.1:{port}/v1", model="m")
    client = BackendClient("small", backend, api_key=None, timeout=5.0, base_url=backend.base_url)
    body = {"model": "m", "prompt": "x", "stream": True}
    try:
        closed = "before the server answered"
        with pytest.raises(BackendUnreachableError, match=closed) as sync, client.stream(body):
            pass
        with pytest.raises(BackendUnreachableError, match=closed) as aio:
            async with client.astream(body):
                pass
    finally:
        listener.close()
    assert is_retryable(sync.value)
    assert is_retryable(aio.value)


def test_cli_unreachable_server_exits_2(servers: Any, capsys: pytest.CaptureFixture[str]) -> None:
    _small, large = servers()
    argv = ["calibrate", "--small-url", "http://127.0.0.1:9/v1", "--small-model", "small-m",
            "--large-url", large.base_url, "--large-model", "large-m", "--target-rate", "0.25",
            "--timeout", "2"]  # fmt: skip
    assert cli.main(argv, out=io.StringIO()) == 2
    assert "error: [small backend at http://127.0.0.1:9/v1" in capsys.readouterr().err


def _settles(condition: Callable[[], bool], timeout: float = 2.0) -> bool:
    """Whether ``condition`` holds within ``timeout`` seconds (a server sees a close late)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_asyncio_run_again_and_again_leaves_no_connection_open(servers: Any) -> None:
    """A script that calls asyncio.run for each question with one router: each loop closes
    its connections as it shuts down, before it is closed (none is left to the collector)."""
    small, large = servers()
    router = router_for(small, large)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        for _ in range(3):
            asyncio.run(router.ainvoke(QUESTION))
            assert _settles(lambda: small.connections + large.connections == 0)
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []


def test_clients_the_router_replaces_close_their_connections(servers: Any) -> None:
    small, large = servers()
    router = router_for(small, large)
    router.invoke(QUESTION)
    kept = large.connections
    assert kept >= 1
    router.timeout = 30.0  # other settings: other clients
    router.invoke(QUESTION)
    assert _settles(lambda: large.connections == kept)


async def test_async_clients_the_router_replaces_close_on_their_loop(servers: Any) -> None:
    small, large = servers()
    router = router_for(small, large)
    await router.ainvoke(QUESTION)
    kept = large.connections
    assert kept >= 1
    router.timeout = 30.0
    await router.ainvoke(QUESTION)
    assert await asyncio.to_thread(_settles, lambda: large.connections == kept)
