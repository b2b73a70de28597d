"""The router's async transport: plain-HTTP servers on its asyncio network backend."""

from __future__ import annotations

import httpx2

from langchain_glimprouter.http.network import AsyncioBackend, async_transport

LIMITS = httpx2.Limits(max_connections=7, max_keepalive_connections=5, keepalive_expiry=3.0)


def test_plain_http_servers_get_the_asyncio_backend_with_the_same_limits() -> None:
    pool = async_transport("http://127.0.0.1:8000/v1", LIMITS, True)._pool
    assert isinstance(pool._network_backend, AsyncioBackend)  # httpx2/httpcore2 internals
    assert (pool._max_connections, pool._max_keepalive_connections) == (7, 5)
    assert pool._keepalive_expiry == 3.0


def test_https_servers_keep_httpcore_s_own_backend() -> None:
    pool = async_transport("https://example.com/v1", LIMITS, True)._pool
    assert not isinstance(pool._network_backend, AsyncioBackend)
