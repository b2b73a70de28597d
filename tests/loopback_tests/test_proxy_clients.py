"""Real clients of the proxy on loopback (uvicorn in a thread, scripted servers behind it): the
openai SDK sync and async, langchain-openai's ChatOpenAI, raw SSE over httpx, and a client
leaving mid-answer aborting both servers' requests."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest
from langchain_openai import ChatOpenAI

from langchain_glimprouter.proxy import create_app
from langchain_glimprouter.reasoning_fields import reasoning_of
from scripted_server import Faults, Script, ScriptedServer
from tests.support.proxy import (
    ANSWER_SCHEMA,
    CALL,
    JSON_ANSWER,
    QUESTION,
    REASONING,
    WEATHER_TOOL,
    ServedApp,
    answering,
    chain_in,
    proxy_router,
    sse_payloads,
)

KEY = "proxy-key"
Proxy = Callable[..., tuple[ServedApp, ScriptedServer, ScriptedServer]]


@pytest.fixture
def proxy(servers: Any) -> Iterator[Proxy]:
    """``proxy(answer=None, **servers_kwargs)``: the proxy (key ``KEY``) before a scripted pair
    whose large model answers ``answer``."""
    served: list[ServedApp] = []

    def make(answer: str | None = None, **kwargs: Any) -> Any:
        small, large = servers(**answering(answer or "The answer is 42."), **kwargs)
        app = ServedApp(
            create_app(proxy_router(small, large), api_key=KEY, client_settings="threshold")
        ).__enter__()
        served.append(app)
        return app, small, large

    yield make
    for app in served:
        app.__exit__()


def sdk(app: ServedApp) -> openai.OpenAI:
    return openai.OpenAI(base_url=app.base_url, api_key=KEY, max_retries=0)


def test_the_openai_sdk_gets_the_chain_answer_usage_and_record(proxy: Proxy) -> None:
    app, _, _ = proxy()
    answer = sdk(app).chat.completions.create(model="glimprouter", messages=QUESTION)
    message = answer.choices[0].message
    assert message.content == "The answer is 42."
    assert reasoning_of(message) == REASONING
    assert answer.usage is not None
    assert answer.usage.completion_tokens_details is not None
    assert answer.usage.completion_tokens_details.reasoning_tokens
    assert (answer.model_extra or {})["glimprouter"]["n_large_steps"] == 2


def test_the_openai_sdk_streams(proxy: Proxy) -> None:
    app, _, _ = proxy()
    stream = sdk(app).chat.completions.create(
        model="glimprouter", messages=QUESTION, stream=True, stream_options={"include_usage": True}
    )
    reasoning = content = ""
    steps, last = [], None
    for chunk in stream:
        extra = chunk.model_extra or {}
        if "step" in extra.get("glimprouter", {}):
            steps.append(extra["glimprouter"]["step"]["model"])
        for choice in chunk.choices:
            reasoning += reasoning_of(choice.delta)
            content += choice.delta.content or ""
        last = chunk
    assert (reasoning, content) == (REASONING, "The answer is 42.")
    assert steps == ["small", "large", "small", "large"]
    assert last is not None
    assert last.usage is not None
    assert (last.model_extra or {})["glimprouter"]["n_steps"] == 4


def test_the_openai_sdk_calls_tools_and_gets_json(proxy: Proxy) -> None:
    app, _, _ = proxy(answer=CALL)
    client = sdk(app)
    called = client.chat.completions.create(
        model="glimprouter", messages=QUESTION, tools=[WEATHER_TOOL], tool_choice="required"
    )
    assert called.choices[0].finish_reason == "tool_calls"
    calls = called.choices[0].message.tool_calls or []
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [  # type: ignore[union-attr]
        ("get_weather", {"city": "Paris"})
    ]
    app, _, _ = proxy(answer=JSON_ANSWER)
    shaped = sdk(app).chat.completions.create(
        model="glimprouter",
        messages=QUESTION,
        response_format=ANSWER_SCHEMA,  # type: ignore[arg-type]
    )
    assert json.loads(shaped.choices[0].message.content or "") == {"value": 24, "unit": "legs"}


async def test_the_async_openai_sdk_streams_tool_calls(proxy: Proxy) -> None:
    app, _, _ = proxy(answer=f"Let me look.\n{CALL}")
    client = openai.AsyncOpenAI(base_url=app.base_url, api_key=KEY, max_retries=0)
    stream = await client.chat.completions.create(
        model="glimprouter", messages=QUESTION, tools=[WEATHER_TOOL], stream=True
    )
    calls, finish = [], None
    async for chunk in stream:
        for choice in chunk.choices:
            calls += choice.delta.tool_calls or []
            finish = choice.finish_reason or finish
    assert finish == "tool_calls"
    assert [(c.index, c.function.name) for c in calls] == [(0, "get_weather")]  # type: ignore[union-attr]
    await client.close()


def test_an_sdk_error_keeps_its_status(proxy: Proxy) -> None:
    app, _, _ = proxy()
    with pytest.raises(openai.NotFoundError, match="does not exist") as missing:
        sdk(app).chat.completions.create(model="gpt-4o", messages=QUESTION)
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=app.base_url, api_key="wrong", max_retries=0).models.list()


def test_chat_openai_invokes_streams_and_binds_tools(proxy: Proxy) -> None:
    app, _, _ = proxy()
    chat = ChatOpenAI(base_url=app.base_url, api_key=KEY, model="glimprouter", max_retries=0)  # type: ignore[arg-type]
    message = chat.invoke("What is 6 times 7?")
    assert message.content == "The answer is 42."
    assert message.response_metadata["finish_reason"] == "stop"
    text = "".join(str(chunk.content) for chunk in chat.stream("What is 6 times 7?"))
    assert text == "The answer is 42."
    app, _, _ = proxy(answer=CALL)
    chat = ChatOpenAI(base_url=app.base_url, api_key=KEY, model="glimprouter", max_retries=0)  # type: ignore[arg-type]
    called = chat.bind_tools([WEATHER_TOOL], tool_choice="any").invoke("Weather in Paris?")
    assert [(c["name"], c["args"]) for c in called.tool_calls] == [  # type: ignore[attr-defined]
        ("get_weather", {"city": "Paris"})
    ]


def test_raw_sse_over_httpx(proxy: Proxy) -> None:
    app, _, _ = proxy()
    body = {"model": "glimprouter", "messages": QUESTION, "stream": True}
    headers = {"authorization": f"Bearer {KEY}"}
    with httpx.stream("POST", f"{app.base_url}/chat/completions", json=body, headers=headers) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = list(r.iter_lines())
    payloads = sse_payloads("\n".join(lines))
    assert payloads[-1] == "[DONE]"
    assert payloads[-2]["glimprouter"]["n_steps"] == 4
    assert [line for line in lines if line][-1] == "data: [DONE]"


@pytest.mark.parametrize("leaving", ["mid-stream", "before-first-byte", "plain"])
def test_a_client_leaving_aborts_both_servers_requests(proxy: Proxy, leaving: str) -> None:
    """Mid-stream the client leaves as a step streams; before the first byte and in a plain
    request it times out while a server is busy and nothing is sent to it yet."""
    slow = Script(steps=["a b c d e f g h i j k l m n o p q r s t"] * 3, h_init=0.1)
    app, small, large = proxy(decode_s=0.05)
    small.script = large.script = slow  # every step long, whoever writes it
    if leaving == "before-first-byte":
        small.faults = Faults(stall_s=5)
    stream = leaving != "plain"
    body = {"model": "glimprouter", "messages": QUESTION, "stream": stream, "threshold": 0.05}
    headers = {"authorization": f"Bearer {KEY}"}
    url = f"{app.base_url}/chat/completions"
    if leaving == "mid-stream":
        with httpx.stream("POST", url, json=body, headers=headers, timeout=10) as response:
            for line in response.iter_lines():
                if chain_in(line):
                    break  # a step is streaming: leave mid-answer
    else:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(url, json=body, headers=headers, timeout=0.5)
    left = time.monotonic()
    assert small.wait_idle(timeout=1), "the small server's request runs on"
    assert large.wait_idle(timeout=1), "the large server's request runs on"
    assert time.monotonic() - left < 1
    latest = max([*small.requests, *large.requests], key=lambda log: log.received_s or 0.0)
    assert not latest.finished  # aborted mid-step, not run to its end
