"""The proxy's limits on slow clients and the cheap /health (issue 27, "Resources")."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from langchain_glimprouter.proxy import create_app
from langchain_glimprouter.proxy.health import HealthCache
from tests.support.proxy import asgi_client, proxy_router


async def test_concurrent_health_checks_share_one_probe_per_interval() -> None:
    probes: list[str] = []

    async def probe(role: str) -> str:
        probes.append(role)
        await asyncio.sleep(0.01)
        return "ok"

    checks = HealthCache(probe, interval=60)
    outcomes = await asyncio.gather(*(checks.status(r) for r in ["small", "large"] * 50))
    assert set(outcomes) == {"ok"}
    assert sorted(probes) == ["large", "small"]
    await checks.status("small")
    assert len(probes) == 2  # still fresh
    checks.interval = 0
    await checks.status("small")
    assert len(probes) == 3


async def test_health_asks_each_backend_once_per_interval(servers: Any) -> None:
    small, large = servers()
    app = create_app(proxy_router(small, large))
    probes: list[str] = []
    checks = app.state.proxy.health_checks
    real = checks.probe

    async def counted(role: str) -> str:
        probes.append(role)
        return str(await real(role))

    checks.probe = counted
    async with asgi_client(app) as client:
        answers = await asyncio.gather(*(client.get("/health") for _ in range(20)))
    assert {a.status_code for a in answers} == {200}
    assert sorted(probes) == ["large", "small"]


async def test_a_body_that_stalls_is_a_408(servers: Any) -> None:
    small, large = servers()
    app = create_app(proxy_router(small, large), body_timeout=0.2)

    async def stalled() -> AsyncIterator[bytes]:
        yield b'{"model": "glimprouter", '
        await asyncio.sleep(1)
        yield b'"messages": []}'

    async with asgi_client(app) as client:
        response = await client.post("/v1/chat/completions", content=stalled())
    assert response.status_code == 408
    assert response.json()["error"]["code"] == "request_timeout"
    assert "--body-timeout" in response.json()["error"]["message"]
    assert not small.requests
