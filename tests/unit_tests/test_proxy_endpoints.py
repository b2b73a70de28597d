"""The proxy's errors, key, /v1/models, /health, /metrics and environment, on the fake servers
with no socket."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import SecretStr

from langchain_glimprouter import Backend, BackendTimeoutError, BackendUnreachableError
from langchain_glimprouter.proxy import app_from_env, create_app, router_env
from langchain_glimprouter.proxy.env import API_KEY_ENV, ROUTER_ENV
from langchain_glimprouter.router import Router
from scripted_server import Faults
from tests.support.proxy import QUESTION, asgi_client, deltas, proxy_router, sse_payloads

BODY = {"model": "glimprouter", "messages": QUESTION}


class Down:
    """A client of a server that fails every request with ``error``."""

    def __init__(self, error: type[Exception]) -> None:
        self.error = error

    def _fail(self) -> Exception:
        return self.error("the server is gone", role="large", url="http://large.invalid/v1")

    async def arequest_json(self, *args: Any, **kwargs: Any) -> Any:
        raise self._fail()

    def astream(self, *args: Any, **kwargs: Any) -> Any:
        raise self._fail()


@pytest.fixture
def down(monkeypatch: pytest.MonkeyPatch) -> Any:
    """``down(role, error)``: every request to ``role``'s servers fails with ``error``, in the
    routers built from now on (through the Router's client hook)."""
    fake = Router.default_client_factory

    def make(role: str, error: type[Exception]) -> None:
        def client(asked: str, backend: Backend, **kwargs: Any) -> Any:
            return Down(error) if asked == role else fake(asked, backend, **kwargs)

        monkeypatch.setattr(Router, "default_client_factory", client)

    return make


async def call(
    app: Any, method: str = "POST", path: str = "/v1/chat/completions", **kw: Any
) -> Any:
    async with asgi_client(app) as client:
        return await client.request(method, path, **kw)


@pytest.mark.parametrize(
    ("faults", "status", "code"),
    [
        (Faults(status=500), 502, "backend_error"),
        (Faults(drop_logprobs=True), 502, "missing_logprobs"),
        (Faults(cut_after=1, cut_count=9), 502, "stream_interrupted"),
        (Faults(garbage=True), 502, "stream_interrupted"),
    ],
)
async def test_a_backend_failure_is_a_502(
    servers: Any, faults: Any, status: int, code: str
) -> None:
    small, large = servers()
    small.faults = faults
    app = create_app(proxy_router(small, large, max_retries=0))
    response = await call(app, json=BODY)
    assert response.status_code == status
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("server_error", code)
    assert "backend" not in error["message"].partition("(")[2]  # no URL, no exception text
    assert "fake-small" not in error["message"]
    assert f"request {response.headers['x-request-id']}" in error["message"]


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (BackendUnreachableError, 503, "backend_unreachable"),
        (BackendTimeoutError, 504, "backend_timeout"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
async def test_a_backend_down_or_slow_is_a_503_or_504(
    servers: Any, down: Any, error: Any, status: int, code: str, stream: bool
) -> None:
    small, large = servers()
    down("small", error)
    app = create_app(proxy_router(small, large, max_retries=0))
    response = await call(app, json={**BODY, "stream": stream})
    assert response.status_code == status
    assert response.json()["error"]["code"] == code


async def test_a_prompt_too_long_is_a_400(servers: Any) -> None:
    small, large = servers(max_model_len=20)
    response = await call(create_app(proxy_router(small, large)), json=BODY)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "context_length_exceeded"


async def test_a_failure_mid_stream_is_the_last_event(servers: Any) -> None:
    small, large = servers()
    large.faults = Faults(cut_after=2, cut_count=9)  # the first large step breaks
    app = create_app(proxy_router(small, large, max_retries=0))
    response = await call(app, json={**BODY, "stream": True})
    assert response.status_code == 200
    payloads = sse_payloads(response.text)
    assert deltas(payloads, "reasoning_content").startswith("small writes step zero")
    assert payloads[-1]["error"]["code"] == "stream_interrupted"
    assert "fake-large" not in payloads[-1]["error"]["message"]
    assert response.headers["x-request-id"] in payloads[-1]["error"]["message"]
    assert "[DONE]" not in payloads


async def test_a_client_leaving_as_the_stream_starts_is_counted_and_aborts_both_servers(
    servers: Any,
) -> None:
    """The client leaves after the first engine event is in, while the response's headers are
    being sent: the body's events never start, yet the request counts once (499) and both
    servers' requests are closed before the app returns (not when the garbage collector
    finalises the stream)."""
    small, large = servers()
    app = create_app(proxy_router(small, large))
    body = json.dumps({**BODY, "stream": True}).encode()
    headers_sent = asyncio.Event()
    requests = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        if requests:
            return requests.pop()
        await headers_sent.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            headers_sent.set()
            await asyncio.Event().wait()  # still writing when the client leaves

    hooks, dropped = sys.get_asyncgen_hooks(), []
    sys.set_asyncgen_hooks(hooks.firstiter, dropped.append)  # the loop's finaliser closes none
    try:
        await app(asgi_scope("POST", "/v1/chat/completions"), receive, send)
        running = (small.active, large.active)
    finally:
        sys.set_asyncgen_hooks(*hooks)
        for generator in dropped:
            await generator.aclose()
    assert running == (0, 0)
    assert not small.requests[-1].finished  # aborted mid-step
    text = app.state.proxy.metrics.exposition().decode()
    assert metric(text, 'glimprouter_proxy_requests_total{status="499",stream="true"}') == 1
    assert metric(text, "glimprouter_proxy_requests_in_flight") == 0


def asgi_scope(method: str, path: str) -> dict[str, Any]:
    """An ASGI HTTP scope of a JSON request."""
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
        "query_string": b"", "headers": [(b"content-type", b"application/json")],
        "server": ("proxy", 80), "client": ("client", 1),
    }  # fmt: skip


@pytest.mark.parametrize(
    ("kwargs", "status", "words"),
    [
        ({"content": b"{not json"}, 400, "not valid JSON"),
        ({"json": ["a list"]}, 400, "must be a JSON object"),
        ({"content": b"x" * 2000}, 413, "larger than 1000 bytes"),
        ({"method": "GET"}, 405, "Method Not Allowed"),
        ({"path": "/v1/completions"}, 404, "Not Found"),
    ],
)
async def test_bad_bodies_and_routes(servers: Any, kwargs: Any, status: int, words: str) -> None:
    small, large = servers()
    response = await call(create_app(proxy_router(small, large), max_body_bytes=1000), **kwargs)
    assert response.status_code == status
    assert words in response.json()["error"]["message"]


async def test_a_body_without_length_is_capped_as_it_is_read(servers: Any) -> None:
    small, large = servers()

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b" " * 500

    response = await call(
        create_app(proxy_router(small, large), max_body_bytes=1000), content=chunks()
    )
    assert response.status_code == 413


async def test_the_key_guards_all_but_health(servers: Any) -> None:
    small, large = servers()
    app = create_app(proxy_router(small, large), api_key=SecretStr("proxy-key"))
    for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "proxy-key"}):
        for method, path in (
            ("POST", "/v1/chat/completions"),
            ("GET", "/v1/models"),
            ("GET", "/metrics"),
        ):
            response = await call(app, method, path, json=BODY, headers=headers)
            assert response.status_code == 401
            assert response.json()["error"]["code"] == "invalid_api_key"
    assert (await call(app, "GET", "/health")).status_code == 200
    headers = {"authorization": "Bearer proxy-key"}
    metrics = (await call(app, "GET", "/metrics", headers=headers)).text
    assert metric(metrics, 'glimprouter_proxy_errors_total{type="invalid_api_key"}') == 9
    ok = await call(app, json=BODY, headers={"authorization": "Bearer proxy-key"})
    assert ok.json()["choices"][0]["message"]["content"] == "The answer is 42."


async def test_backend_keys_never_leave(servers: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    small, large = servers()
    router = proxy_router(small, large, api_key="router-secret", max_retries=0)
    large_backend = router.config.large.model_copy(update={"api_key": SecretStr("large-secret")})
    app = create_app(Router(router.config.model_copy(update={"large": large_backend})))
    seen = [await call(app, json=BODY), await call(app, json={**BODY, "stream": True})]
    large.faults = Faults(status=500)
    seen += [await call(app, json=BODY), await call(app, json={**BODY, "stream": True})]
    seen += [await call(app, "GET", path) for path in ("/health", "/metrics", "/v1/models")]
    assert seen[2].status_code == 502
    assert sse_payloads(seen[3].text)[-1]["error"]["code"] == "backend_error"  # midway
    for response in seen:
        text = response.text + json.dumps(dict(response.headers))
        assert "secret" not in text
    assert "secret" not in caplog.text


async def test_models_lists_the_served_name_and_the_large_model(servers: Any) -> None:
    small, large = servers()
    response = await call(
        create_app(proxy_router(small, large), served_name="mine"), "GET", "/v1/models"
    )
    cards = response.json()["data"]
    assert [(c["id"], c["owned_by"], c["object"]) for c in cards] == [
        ("mine", "glimprouter", "model"),
        ("large-m", "glimprouter", "model"),
    ]


async def test_health_says_which_tier_is_down(servers: Any, down: Any) -> None:
    small, large = servers()
    ok = await call(create_app(proxy_router(small, large)), "GET", "/health")
    assert (ok.status_code, ok.json()) == (200, {"status": "ok", "small": "ok", "large": "ok"})
    down("large", BackendUnreachableError)
    failing = await call(create_app(proxy_router(small, large)), "GET", "/health")
    assert failing.status_code == 503
    assert failing.json() == {"status": "unavailable", "small": "ok", "large": "unreachable"}


def metric(text: str, name: str) -> float:
    """The value of one sample line (``name`` with its labels) of a Prometheus text page."""
    values = [line.rsplit(" ", 1)[1] for line in text.splitlines() if line.startswith(name + " ")]
    assert len(values) == 1, f"{name} not found once in:\n{text}"
    return float(values[0])


async def test_metrics_count_requests_steps_glimpses_and_errors(servers: Any) -> None:
    small, large = servers()
    app = create_app(proxy_router(small, large))
    await call(app, json=BODY)
    await call(app, json={**BODY, "stream": True})
    await call(app, json={**BODY, "model": "nope"})
    response = await call(app, "GET", "/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    expected = {
        'requests_total{status="200",stream="false"}': 1,
        'requests_total{status="200",stream="true"}': 1,
        'requests_total{status="404",stream="false"}': 1,
        'errors_total{type="model_not_found"}': 1,
        'steps_total{model="small"}': 4,
        'steps_total{model="large"}': 4,
        "h_init_nats_count": 8,
        'h_init_nats_bucket{le="1.0"}': 4,
        "intervention_rate_count": 2,
        "intervention_rate_recent": 0.5,
        'time_to_first_token_seconds_count{stream="true"}': 1,
        'request_duration_seconds_count{stream="false"}': 2,
        "requests_in_flight": 0,
    }
    assert {name: metric(text, "glimprouter_proxy_" + name) for name in expected} == expected
    assert metric(text, 'glimprouter_proxy_tokens_total{model="large"}') > 0


def test_the_environment_rebuilds_the_router(monkeypatch: pytest.MonkeyPatch) -> None:
    router = Router(
        small=Backend(base_url="http://s/v1", model="s", api_key=SecretStr("small-secret")),
        large=Backend(base_url="http://l/v1", model="l", replicas=["http://l2/v1"]),
        api_key=SecretStr("router-secret"),
        threshold=math.inf,
        step_delimiter=["\n\n", "\nWait"],
        stop=["END"],
        timeout=9.0,
    )
    env = router_env(router, "served", api_key="proxy-secret")
    assert "secret" not in env[ROUTER_ENV]
    assert env["GLIMPROUTER_SMALL_API_KEY"] == "small-secret"
    assert env["GLIMPROUTER_LARGE_API_KEY"] == "router-secret"
    assert env[API_KEY_ENV] == "proxy-secret"
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    proxy = app_from_env().state.proxy
    rebuilt, config = proxy.router.config, router.config
    assert rebuilt.settings_dict() == config.settings_dict()
    assert (rebuilt.small, rebuilt.large) == (
        config.small.model_copy(update={"api_key": None}),
        config.large,
    )
    assert rebuilt.timeout == 9.0
    assert (proxy.served_name, proxy.key) == ("served", b"proxy-secret")
    assert proxy.router.clients("small")[0]._key() == "small-secret"
    monkeypatch.delenv(ROUTER_ENV)
    with pytest.raises(Exception, match=f"{ROUTER_ENV} is not set"):
        app_from_env()


def test_the_package_loads_no_server_library() -> None:
    code = (
        "import sys, langchain_glimprouter, langchain_glimprouter.chat_models; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'starlette', 'uvicorn', "
        "'prometheus_client'}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_the_proxy_loads_neither_langchain_nor_llama_index() -> None:
    """The proxy wraps the Router: importing it, building an app and answering a request (here
    a 503: the servers are down) load no LangChain and no LlamaIndex."""
    code = """
import asyncio, json, sys
import httpx
import langchain_glimprouter.backend, langchain_glimprouter.proxy.env
from langchain_glimprouter.backend import Backend
from langchain_glimprouter.errors import BackendUnreachableError
from langchain_glimprouter.proxy import create_app
from langchain_glimprouter.router import Router

class Down:
    def __init__(self, role, *args, **kwargs):
        self.error = BackendUnreachableError("down", role=role, url="http://down/v1")
    def astream(self, *args, **kwargs):
        raise self.error
    async def arequest_json(self, *args, **kwargs):
        raise self.error

router = Router(small=Backend(base_url="http://s/v1", model="s"), client_factory=Down,
                large=Backend(base_url="http://l/v1", model="l"), max_retries=0)

async def ask():
    transport = httpx.ASGITransport(app=create_app(router))
    async with httpx.AsyncClient(transport=transport, base_url="http://proxy") as client:
        body = {"model": "glimprouter", "messages": [{"role": "user", "content": "Hi"}]}
        return (await client.post("/v1/chat/completions", json=body)).status_code

status = asyncio.run(ask())
print(json.dumps([status, sorted({m.split(".")[0] for m in sys.modules})]))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    status, loaded = json.loads(done.stdout)
    assert status == 503
    forbidden = {"langchain_core", "langchain", "llama_index"}
    assert not forbidden & set(loaded), sorted(forbidden & set(loaded))


def test_a_chat_model_is_served_through_its_router() -> None:
    """create_app and router_env take a GlimpRouterChatModel too: the Router it wraps."""
    from langchain_glimprouter import GlimpRouterChatModel

    model = GlimpRouterChatModel(
        small=Backend(base_url="http://s/v1", model="s"),
        large=Backend(base_url="http://l/v1", model="l"),
        threshold=0.5,
    )
    assert create_app(model).state.proxy.router is model.router
    assert router_env(model) == router_env(model.router) == router_env(model.router.config)
    with pytest.raises(Exception, match="serves a Router"):
        create_app(object())  # type: ignore[arg-type]
