"""The proxy's limits on a real socket: a request head that does not arrive in time gets a 408
and its connection closed, and connections beyond the concurrency limit get a 503."""

from __future__ import annotations

import socket
import time
from typing import Any

import httpx
import pytest

from langchain_glimprouter.proxy import create_app
from langchain_glimprouter.proxy.limits import HEADER_TIMEOUT_ENV, TimedH11Protocol
from tests.support.proxy import ServedApp, proxy_router


def connect(served: ServedApp) -> socket.socket:
    host, port = served.root_url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=5)


def read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


@pytest.fixture
def served(servers: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv(HEADER_TIMEOUT_ENV, "0.5")
    small, large = servers()
    with ServedApp(create_app(proxy_router(small, large)), http=TimedH11Protocol) as app:
        yield app


@pytest.mark.parametrize("sent", [b"", b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"])
def test_a_request_head_that_stalls_gets_a_408_and_is_closed(served: Any, sent: bytes) -> None:
    with connect(served) as sock:
        started = time.monotonic()
        sock.sendall(sent)
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 408")
    assert 0.4 < time.monotonic() - started < 3


def test_a_head_dripped_a_byte_at_a_time_is_cut_too(served: Any) -> None:
    """uvicorn's own keep-alive timeout restarts with every byte; the head's deadline does not."""
    answer = b""
    with connect(served) as sock:
        sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        sock.settimeout(0.05)
        started = time.monotonic()
        while not answer and time.monotonic() - started < 3:
            try:
                sock.sendall(b"a")
                answer = sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                break
    assert answer.startswith(b"HTTP/1.1 408")
    assert time.monotonic() - started < 2


def test_a_kept_alive_connection_is_not_cut_between_requests(served: Any) -> None:
    with httpx.Client(base_url=served.root_url, trust_env=False) as client:
        for _ in range(3):
            assert client.get("/v1/models").status_code == 200
            time.sleep(0.2)


def test_connections_beyond_the_limit_get_a_503(servers: Any) -> None:
    small, large = servers()
    app = create_app(proxy_router(small, large))
    with ServedApp(app, limit_concurrency=3) as served:
        idle = [connect(served) for _ in range(3)]
        try:
            response = httpx.get(f"{served.root_url}/v1/models", trust_env=False)
            assert response.status_code == 503
        finally:
            for sock in idle:
                sock.close()
        time.sleep(0.2)
        assert httpx.get(f"{served.root_url}/v1/models", trust_env=False).status_code == 200
