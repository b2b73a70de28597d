"""What the proxy accepts as OpenAI and vLLM do (issue 27): vLLM's sampling extras and
chat_template_kwargs passed to both servers, reasoning_effort mapped to a reasoning budget,
n and logprobs only as the proxy can honour them, GET /v1/models/{id}, the request id, CORS,
the access log, strict JSON out (threshold=inf), a backend's 400 as the client's 400, and tool
calls that never come back without a name."""

from __future__ import annotations

import json
import logging
import math
from typing import Any

import pytest

from langchain_glimprouter.errors import InvalidArgumentError
from langchain_glimprouter.proxy import create_app
from langchain_glimprouter.proxy.chat_request import (
    REASONING_EFFORTS,
    parse_chat_request,
    parse_efforts,
)
from scripted_server import Faults
from scripted_server.script import CHATML
from tests.support.proxy import (
    QUESTION,
    WEATHER_TOOL,
    answering,
    asgi_client,
    deltas,
    proxy_router,
    sse_payloads,
)

BODY = {"model": "glimprouter", "messages": QUESTION}


async def call(
    app: Any, method: str = "POST", path: str = "/v1/chat/completions", **kw: Any
) -> Any:
    async with asgi_client(app) as client:
        return await client.request(method, path, **kw)


def strict(text: str) -> Any:
    """``text`` read as RFC 8259 JSON (no NaN, Infinity)."""

    def refuse(constant: str) -> Any:
        raise AssertionError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


# -- passed to both servers ------------------------------------------------------------------


async def test_vllm_sampling_extras_reach_both_servers(servers: Any) -> None:
    small, large = servers()
    extras = {"frequency_penalty": 0.5, "presence_penalty": -0.5, "repetition_penalty": 1.1,
              "top_k": 20, "min_p": 0.05}  # fmt: skip
    response = await call(create_app(proxy_router(small, large)), json={**BODY, **extras})
    assert response.status_code == 200, response.text
    sent = [r.params for r in (*small.requests, *large.requests)]
    assert sent
    assert all(params.items() >= extras.items() for params in sent)


async def test_chat_template_kwargs_reach_both_servers_prompts(servers: Any) -> None:
    template = "{% if flavour is defined %}[{{ flavour }}]{% endif %}" + CHATML
    small, large = servers(chat_template=template)
    app = create_app(proxy_router(small, large))
    plain = await call(app, json=BODY)
    assert plain.status_code == 200
    assert not any("[" in r.prompt[:1] for r in (*small.requests, *large.requests))
    small.reset(), large.reset()
    given = await call(app, json={**BODY, "chat_template_kwargs": {"flavour": "salty"}})
    assert given.status_code == 200, given.text
    prompts = [r.prompt for r in (*small.requests, *large.requests)]
    assert prompts
    assert all(p.startswith("[salty]") for p in prompts)


async def test_a_backend_refusing_a_value_is_the_clients_400_not_a_502(servers: Any) -> None:
    small, large = servers()
    small.faults = Faults(status=400)
    app = create_app(proxy_router(small, large, max_retries=0))
    for stream in (False, True):
        response = await call(app, json={**BODY, "stream": stream, "top_k": 10**9})
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert (error["type"], error["code"]) == ("invalid_request_error", "invalid_value")
        assert error["message"].startswith("a backend refused the request")


# -- reasoning_effort ------------------------------------------------------------------------


def budget_of(router: Any, efforts: Any = REASONING_EFFORTS, **body: Any) -> Any:
    parsed = parse_chat_request({**BODY, **body}, router, "glimprouter", efforts)
    return parsed.settings.get("max_reasoning_tokens")


def test_reasoning_effort_is_the_operators_budget_capped_by_the_routers(servers: Any) -> None:
    small, large = servers()
    router = proxy_router(small, large, max_reasoning_tokens=5000)
    assert budget_of(router) is None
    assert budget_of(router, reasoning_effort="low") == 1024
    assert budget_of(router, reasoning_effort="medium") == 4096
    assert budget_of(router, reasoning_effort="high") == 5000  # the router's own is the cap
    assert budget_of(router, reasoning_effort="high", max_reasoning_tokens=300) == 300
    assert budget_of(router, {"fast": 64}, reasoning_effort="fast") == 64


async def test_an_operators_effort_table_is_served(servers: Any) -> None:
    small, large = servers()
    app = create_app(proxy_router(small, large), reasoning_effort_budgets={"quick": 64})
    assert (await call(app, json={**BODY, "reasoning_effort": "quick"})).status_code == 200
    refused = await call(app, json={**BODY, "reasoning_effort": "low"})
    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "reasoning_effort"
    assert "['quick']" in refused.json()["error"]["message"]


def test_the_effort_flags_text_is_parsed_and_checked() -> None:
    assert parse_efforts("low=1,medium=2 , high=3") == {"low": 1, "medium": 2, "high": 3}
    for bad in ("", "low", "low=x", "low=0", "low=-5"):
        with pytest.raises(InvalidArgumentError):
            parse_efforts(bad)
    with pytest.raises(InvalidArgumentError):
        create_app(proxy_router_stub(), reasoning_effort_budgets={"low": 0})


def proxy_router_stub() -> Any:
    from langchain_glimprouter import Backend, Router

    backend = Backend(base_url="http://127.0.0.1:9/v1", model="m")
    return Router(small=backend, large=backend)


# -- what only holds as one choice without logprobs ------------------------------------------


async def test_n_1_and_logprobs_false_are_accepted(servers: Any) -> None:
    small, large = servers()
    app = create_app(proxy_router(small, large))
    response = await call(app, json={**BODY, "n": 1, "logprobs": False})
    assert response.status_code == 200
    assert all("n" not in r.params or r.params["n"] == 1 for r in small.requests)


# -- GET /v1/models/{id} ---------------------------------------------------------------------


async def test_a_model_card_by_its_id(servers: Any) -> None:
    small, large = servers()
    app = create_app(proxy_router(small, large), api_key="k")
    key = {"authorization": "Bearer k"}
    for name in ("glimprouter", "large-m"):
        card = await call(app, "GET", f"/v1/models/{name}", headers=key)
        assert card.status_code == 200
        assert card.json()["id"] == name
        assert card.json()["object"] == "model"
    missing = await call(app, "GET", "/v1/models/org/other-model", headers=key)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "model_not_found"
    assert (await call(app, "GET", "/v1/models/glimprouter")).status_code == 401


# -- the request id, the access log, CORS ----------------------------------------------------


async def test_every_response_has_a_request_id_the_clients_own_if_it_sent_one(
    servers: Any,
) -> None:
    small, large = servers()
    app = create_app(proxy_router(small, large), api_key="k")
    key = {"authorization": "Bearer k"}
    mine = await call(app, json=BODY, headers={**key, "x-request-id": "req-123"})
    assert mine.headers["x-request-id"] == "req-123"
    seen = [
        await call(app, json=BODY, headers=key),
        await call(app, json={**BODY, "stream": True}, headers=key),
        await call(app, json={**BODY, "temperature": -1}, headers=key),
        await call(app, json=BODY),  # 401
        await call(app, "GET", "/nowhere"),  # 404
        await call(app, "GET", "/health"),
        await call(app, json=BODY, headers={**key, "x-request-id": "bad\x7fid"}),
    ]
    ids = [response.headers["x-request-id"] for response in seen]
    assert len(set(ids)) == len(ids)
    assert all(i.startswith("req_") and len(i) == 28 for i in ids)


async def test_one_access_log_line_per_request_without_keys_or_text(
    servers: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="langchain_glimprouter.proxy.access")
    small, large = servers()
    app = create_app(proxy_router(small, large), api_key="secret-key")
    key = {"authorization": "Bearer secret-key"}
    await call(app, json=BODY, headers={**key, "x-request-id": "r1"})
    await call(app, json={**BODY, "stream": True}, headers={**key, "x-request-id": "r2"})
    await call(app, json={**BODY, "top_p": 7}, headers={**key, "x-request-id": "r3"})
    lines = [r.getMessage() for r in caplog.records if r.name.endswith(".access")]
    assert len(lines) == 3
    assert lines[0].startswith("POST /v1/chat/completions 200 ")
    assert "request_id=r1 steps=4 intervention_rate=0.5" in lines[0]
    assert "request_id=r2 steps=4 intervention_rate=0.5" in lines[1]
    assert lines[2].startswith("POST /v1/chat/completions 400 ")
    assert "request_id=r3" in lines[2]
    logged = caplog.text
    assert "secret-key" not in logged
    assert "6 times 7" not in logged
    assert "The answer is" not in logged


async def test_cors_only_for_the_origins_the_operator_allows(servers: Any) -> None:
    small, large = servers()
    preflight = {"origin": "https://app.example", "access-control-request-method": "POST",
                 "access-control-request-headers": "authorization, content-type"}  # fmt: skip
    closed = create_app(proxy_router(small, large))
    refused = await call(closed, "OPTIONS", "/v1/chat/completions", headers=preflight)
    assert refused.status_code == 405
    assert "access-control-allow-origin" not in refused.headers
    opened = create_app(proxy_router(small, large), allowed_origins=["https://app.example"])
    allowed = await call(opened, "OPTIONS", "/v1/chat/completions", headers=preflight)
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    other = await call(
        opened, "OPTIONS", "/v1/chat/completions", headers={**preflight, "origin": "https://x.io"}
    )
    assert "access-control-allow-origin" not in other.headers
    posted = await call(opened, json=BODY, headers={"origin": "https://app.example"})
    assert posted.headers["access-control-allow-origin"] == "https://app.example"
    assert "x-request-id" in posted.headers["access-control-expose-headers"]


# -- strict JSON out -------------------------------------------------------------------------


async def test_a_threshold_of_infinity_is_written_as_the_string_inf(servers: Any) -> None:
    small, large = servers()
    app = create_app(proxy_router(small, large, threshold=math.inf))
    plain = await call(app, json=BODY)
    assert plain.status_code == 200, plain.text
    record = strict(plain.text)["glimprouter"]
    assert record["threshold"] == "inf"
    assert {step["model"] for step in record["steps"]} == {"small"}
    assert all(step["threshold"] in ("inf", None) for step in record["steps"])
    assert plain.headers["x-glimprouter-large-steps"] == "0"
    stream = await call(app, json={**BODY, "stream": True})
    events = [strict(line[6:]) for line in stream.text.split("\n\n") if line[6:7] == "{"]
    assert events[-1]["glimprouter"]["threshold"] == "inf"
    assert deltas(sse_payloads(stream.text)[:-1], "content") == "The answer is 42."
    metrics = (await call(app, "GET", "/metrics")).text
    assert 'requests_total{status="200",stream="false"} 1.0' in metrics
    assert 'status="500"' not in metrics
    # per request too (a documented baseline), the same way
    allowing = create_app(proxy_router(small, large), client_settings="threshold")
    per_call = await call(allowing, json={**BODY, "threshold": "inf"})
    assert strict(per_call.text)["glimprouter"]["threshold"] == "inf"


# -- tool calls ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        '<tool_call>\n{"arguments": {"city": "Paris"}}\n</tool_call>',
        '<tool_call>\n{"name": null, "arguments": {"city": "Paris"}}\n</tool_call>',
        '<tool_call>\n{"name": 5, "arguments": {}}\n</tool_call>',
        '<tool_call>\n["get_weather"]\n</tool_call>',
        "<tool_call>\nget_weather(city='Paris')\n</tool_call>",
    ],
)
@pytest.mark.parametrize("stream", [False, True])
async def test_call_text_without_a_name_is_never_a_call(
    servers: Any, text: str, stream: bool
) -> None:
    small, large = servers(**answering(text))
    app = create_app(proxy_router(small, large))
    body = {**BODY, "tools": [WEATHER_TOOL], "stream": stream}
    response = await call(app, json=body)
    assert response.status_code == 200, response.text
    if stream:
        chunks = sse_payloads(response.text)[:-1]
        choices = [c["choices"][0] for c in chunks if c["choices"]]
        calls = [d for c in choices for d in c["delta"].get("tool_calls", [])]
        finish = choices[-1]["finish_reason"]
    else:
        choice = response.json()["choices"][0]
        calls, finish = choice["message"].get("tool_calls", []), choice["finish_reason"]
    assert (calls, finish) == ([], "stop")


async def test_a_client_leaving_mid_body_is_counted_as_499_not_500(
    servers: Any, caplog: pytest.LogCaptureFixture
) -> None:
    small, large = servers()
    app = create_app(proxy_router(small, large))
    parts = [
        {"type": "http.request", "body": b'{"model": "glimprouter", "mess', "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return parts.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/v1/chat/completions",
             "raw_path": b"/v1/chat/completions", "root_path": "", "query_string": b"",
             "headers": [(b"content-type", b"application/json")],
             "server": ("proxy", 80), "client": ("client", 1)}  # fmt: skip
    await app(scope, receive, send)
    assert sent[0]["status"] == 499
    metrics = app.state.proxy.metrics.exposition().decode()
    assert 'requests_total{status="499",stream="false"} 1.0' in metrics
    assert "internal error" not in caplog.text
    assert small.requests == large.requests == []


# -- the clients people use send these -------------------------------------------------------


async def test_the_openai_sdk_and_chatopenai_send_effort_penalties_and_extras(
    servers: Any,
) -> None:
    import httpx2
    import openai
    from langchain_openai import ChatOpenAI

    small, large = servers()
    app = create_app(proxy_router(small, large))

    def transport() -> Any:
        return httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app))

    sdk = openai.AsyncOpenAI(base_url="http://proxy/v1", api_key="none", http_client=transport())
    reply = await sdk.chat.completions.create(
        model="glimprouter",
        messages=QUESTION,  # type: ignore[arg-type]
        reasoning_effort="low",
        frequency_penalty=0.2,
        presence_penalty=0.1,
        n=1,
        logprobs=False,
        extra_body={"top_k": 5, "min_p": 0.1, "chat_template_kwargs": {"enable_thinking": True}},
    )
    assert reply.choices[0].message.content == "The answer is 42."
    assert all(r.params["top_k"] == 5 for r in (*small.requests, *large.requests))
    for refused in ({"logprobs": True}, {"n": 2}, {"top_logprobs": 3, "logprobs": True}):
        with pytest.raises(openai.BadRequestError) as caught:
            await sdk.chat.completions.create(
                model="glimprouter",
                messages=QUESTION,  # type: ignore[arg-type]
                **refused,
            )
        assert caught.value.status_code == 400
    model = ChatOpenAI(
        base_url="http://proxy/v1",
        api_key="none",  # type: ignore[arg-type]
        model="glimprouter",
        reasoning_effort="high",
        frequency_penalty=0.3,
        http_async_client=transport(),
        http_socket_options=(),  # no probe of the socket options (no socket in unit tests)
    )
    answer = await model.ainvoke("What is 6 times 7?")
    assert answer.content == "The answer is 42."
