"""The proxy's limits on a real socket: a request head that does not arrive in time gets a 408
and its connection closed, and connections or requests beyond the concurrency limit get a 503
in OpenAI's error shape with Retry-After, counted in /metrics."""

from __future__ import annotations

import socket
import time
from typing import Any

import httpx
import openai
import pytest

from langchain_glimprouter.proxy import create_app
from langchain_glimprouter.proxy.limits import HEADER_TIMEOUT_ENV, TimedH11Protocol
from tests.support.proxy import QUESTION, ServedApp, proxy_router


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


def overloaded(response: httpx.Response) -> dict[str, Any]:
    """The error of a 503 beyond the concurrency limit, checked for OpenAI's shape."""
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1"
    error: dict[str, Any] = response.json()["error"]
    assert (error["type"], error["code"], error["param"]) == (
        "server_error",
        "server_overloaded",
        None,
    )
    assert response.headers["x-request-id"] in error["message"]
    assert "--limit-concurrency" in error["message"]
    return error


def test_connections_beyond_the_limit_get_a_503_in_openais_shape(servers: Any) -> None:
    small, large = servers()
    app = create_app(proxy_router(small, large))
    with ServedApp(app, http=TimedH11Protocol, limit_concurrency=3) as served:
        idle = [connect(served) for _ in range(3)]
        try:
            headers = {"x-request-id": "client-7"}
            response = httpx.get(f"{served.root_url}/v1/models", headers=headers, trust_env=False)
            assert "request client-7" in overloaded(response)["message"]
        finally:
            for sock in idle:
                sock.close()
        time.sleep(0.2)
        assert httpx.get(f"{served.root_url}/v1/models", trust_env=False).status_code == 200
        metrics = httpx.get(f"{served.root_url}/metrics", trust_env=False).text
    assert 'glimprouter_proxy_requests_total{status="503",stream="false"} 1.0' in metrics
    assert 'glimprouter_proxy_errors_total{type="server_overloaded"} 1.0' in metrics


def test_requests_beyond_the_limit_while_others_run_get_a_503(servers: Any) -> None:
    """A request while a stream runs on a worker at its limit: the openai SDK raises its
    InternalServerError with the proxy's code."""
    small, large = servers(decode_s=0.05)
    app = create_app(proxy_router(small, large))
    with ServedApp(app, http=TimedH11Protocol, limit_concurrency=2) as served:
        body = {"model": "glimprouter", "messages": QUESTION, "stream": True}
        with httpx.stream("POST", f"{served.base_url}/chat/completions", json=body) as running:
            assert running.status_code == 200
            client = openai.OpenAI(base_url=served.base_url, api_key="x", max_retries=0)
            with pytest.raises(openai.InternalServerError) as refused:
                client.chat.completions.create(model="glimprouter", messages=QUESTION)  # type: ignore[arg-type]
            assert refused.value.status_code == 503
            assert refused.value.code == "server_overloaded"
            overloaded(refused.value.response)
