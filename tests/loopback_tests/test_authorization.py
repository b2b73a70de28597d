"""Keys and Authorization headers as the server receives them, with the router's clients and
the caller's own SDK or httpx2 clients; no secret ever shows."""

from __future__ import annotations

from typing import Any

import httpx2
import openai
import pytest

from langchain_glimprouter import Backend, BackendResponseError, GlimpRouterChatModel
from scripted_server import Faults
from tests.support.pair import router_for

QUESTION = "What is 6 times 7?"


def test_secrets_never_leak(servers: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GLIMPROUTER_SMALL_API_KEY", "sk-small-env")
    small, large = servers()
    model = router_for(small, large, api_key="sk-router")
    msg = model.invoke(QUESTION)
    text = repr(model) + str(model.model_dump()) + str(msg) + str(msg.response_metadata)
    for secret in ("sk-small-env", "sk-router"):
        assert secret not in text
    # the router's key wins over the environment's, and reaches the server
    assert {r.authorization for r in small.requests} == {"Bearer sk-router"}


def test_no_key_sends_no_authorization(servers: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK insists on a key; without one the servers get no Authorization header at all."""
    for name in ("OPENAI_API_KEY", "GLIMPROUTER_SMALL_API_KEY", "GLIMPROUTER_LARGE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    small, large = servers()
    router_for(small, large).invoke(QUESTION)
    assert {r.authorization for r in small.requests + large.requests} == {None}


async def test_a_callers_own_clients(servers: Any) -> None:
    """Your own SDK clients (custom auth, gateways) or httpx2 clients (proxies, transports):
    the router uses them, with its own timeout and no SDK retries, and never shows them."""
    small, large = servers()
    seen: list[str] = []
    http = httpx2.Client(event_hooks={"request": [lambda r: seen.append(str(r.url))]})

    async def aseen(request: httpx2.Request) -> None:
        seen.append("async " + str(request.url))

    ahttp = httpx2.AsyncClient(event_hooks={"request": [aseen]})
    own = openai.OpenAI(api_key="sk-own", base_url="http://elsewhere:1/v1", max_retries=5)
    aown = openai.AsyncOpenAI(api_key="sk-own", base_url="http://elsewhere:1/v1")
    model = GlimpRouterChatModel(
        small=Backend(base_url=small.base_url, model="small-m", client=own, async_client=aown),
        large=Backend(
            base_url=large.base_url, model="large-m", http_client=http, http_async_client=ahttp
        ),
        threshold=1.0,
        api_key="sk-router",
    )
    assert (await model.ainvoke(QUESTION)).content == model.invoke(QUESTION).content
    assert {r.authorization for r in small.requests} == {"Bearer sk-own"}
    assert {r.authorization for r in large.requests} == {"Bearer sk-router"}
    assert any(u.startswith(large.base_url) for u in seen)
    assert any(u.startswith("async " + large.base_url) for u in seen)
    text = repr(model) + str(model.model_dump()) + repr(model.small)
    assert "sk-own" not in text
    assert "client" not in model.small.model_dump()
    assert own.max_retries == 5  # the router used a copy: the caller's client is unchanged
    before = len(small.requests)
    small.faults = Faults(status=503)
    with pytest.raises(BackendResponseError, match="HTTP 503"):
        model.model_copy(update={"max_retries": 1}).invoke(QUESTION)
    assert len(small.requests) - before == 2  # one retry, the router's; none of the SDK's 5
    http.close()
    await ahttp.aclose()


async def test_an_own_async_client_keeps_its_key(
    servers: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only an async client given: ainvoke authenticates with it, invoke sends no key at all."""
    for name in ("OPENAI_API_KEY", "GLIMPROUTER_SMALL_API_KEY", "GLIMPROUTER_LARGE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    small, large = servers()
    aown = openai.AsyncOpenAI(api_key="sk-async", base_url=small.base_url)
    model = GlimpRouterChatModel(
        small=Backend(base_url=small.base_url, model="small-m", async_client=aown),
        large=Backend(base_url=large.base_url, model="large-m"),
        threshold=1.0,
    )
    await model.ainvoke(QUESTION)
    assert {r.authorization for r in small.requests} == {"Bearer sk-async"}
    small.reset()
    model.invoke(QUESTION)
    assert {r.authorization for r in small.requests} == {None}
