"""The proxy (``langchain_glimprouter.proxy``) in front of the two real vLLM servers, served by
uvicorn in a thread, through the clients people use: the openai SDK (sync, async, streamed, a
forced tool call, a parsed json_schema answer), langchain-openai's ``ChatOpenAI``, raw SSE over
httpx; ``/health``, ``/v1/models`` and ``/metrics``; and a client that leaves mid-stream, which
must stop both servers' requests. What is asserted is the wiring (records, counters, shapes),
not what a 135M model writes."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from langchain_core.messages import AIMessageChunk
from langchain_openai import ChatOpenAI

from langchain_glimprouter.proxy import create_app
from langchain_glimprouter.reasoning_fields import reasoning_of
from langchain_glimprouter.router import Router
from tests.support.accounting import glimpse_requests, written
from tests.support.forced_answers import Report
from tests.support.proxy import WEATHER_TOOL, ServedApp, chain_in, sse_payloads

from .conftest import Pair, metric, running, settle, started_requests, tiny_model_missed

SYSTEM = "You are a careful math tutor. Reason step by step and put a blank line between steps."
MESSAGES = [
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": "Tom has 3 boxes with 12 apples in each. He gives away 7. Left?"},
]
SERVED = "glimprouter"
NEVER_LARGE = 100.0
"""A threshold no first-token entropy of top-20 reaches (JSON has no infinity)."""
FORCED = {"type": "function", "function": {"name": "get_weather"}}


@pytest.fixture(scope="module")
def proxy(vllm_pair: Pair) -> Iterator[str]:
    """The root URL of the proxy over the session's pair: short budgets, a threshold inside
    SmolLM2's entropies (steps go both ways), uvicorn in a thread."""
    router = Router(
        small=vllm_pair.small, large=vllm_pair.large, threshold=1.5,
        max_reasoning_tokens=48, max_tokens=16, seed=7,
    )  # fmt: skip
    # clients here set any router setting per request (the policy has its own unit tests)
    with ServedApp(create_app(router, served_name=SERVED, client_settings="all")) as served:
        yield served.root_url


@pytest.fixture
def client(proxy: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{proxy}/v1", api_key="unused", max_retries=0) as sdk:
        yield sdk


def reasoning_tokens(record: dict[str, Any]) -> int:
    """``usage``'s reasoning tokens: every generated token but the answer's (so the wasted
    glimpses too, unlike the record's ``reasoning_tokens``)."""
    return int(sum(record["tokens"].values()) - record["answer_tokens"])


def extra(obj: Any) -> dict[str, Any]:
    """The fields the openai SDK's models keep beyond OpenAI's own."""
    return dict(obj.model_extra or {})


def test_openai_sdk_plain_answer_record_usage_and_headers(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model=SERVED, messages=MESSAGES)
    reply = raw.parse()
    message = reply.choices[0].message
    record = extra(reply)["glimprouter"]
    chain = reasoning_of(message)
    assert chain
    assert extra(message)["reasoning"] == extra(message)["reasoning_content"] == chain
    assert isinstance(message.content, str)
    assert reply.model == SERVED
    assert record["n_steps"] >= 1
    assert raw.headers["x-glimprouter-steps"] == str(record["n_steps"])
    assert raw.headers["x-glimprouter-large-steps"] == str(record["n_large_steps"])
    rate = float(raw.headers["x-glimprouter-intervention-rate"])
    assert rate == pytest.approx(record["intervention_rate"], abs=1e-3)
    assert reply.usage is not None
    assert reply.usage.completion_tokens_details is not None
    assert reply.usage.completion_tokens_details.reasoning_tokens == reasoning_tokens(record) > 0
    assert reply.usage.completion_tokens == sum(record["tokens"].values())
    assert reply.usage.prompt_tokens > 0


def test_responses_create_round_trip(client: openai.OpenAI) -> None:
    """``POST /v1/responses`` on the real pair: a reasoning item holding the routed chain, then
    the answer as a message (or the budget's ``incomplete``), usage and the record; the
    openai SDK's stream of the same ends with the whole response."""
    response = client.responses.create(
        model=SERVED, instructions=SYSTEM, input=MESSAGES[1]["content"], max_output_tokens=16
    )
    record = extra(response)["glimprouter"]
    reasoning = response.output[0]
    assert reasoning.type == "reasoning"
    assert [part.type for part in reasoning.content or []] == ["reasoning_text"]
    assert (reasoning.content or [])[0].text
    assert response.status in ("completed", "incomplete")
    assert [item.type for item in response.output[1:]] in (["message"], [])
    assert response.usage is not None
    assert response.usage.output_tokens_details.reasoning_tokens == reasoning_tokens(record) > 0
    assert response.usage.output_tokens == sum(record["tokens"].values())
    with client.responses.stream(model=SERVED, input=MESSAGES[1]["content"]) as stream:
        kinds = [event.type for event in stream]
    assert kinds[0] == "response.created"
    assert "glimprouter.step" in kinds
    assert kinds[-1] in ("response.completed", "response.incomplete")


@pytest.mark.parametrize(("threshold", "large"), [(0.0, True), (NEVER_LARGE, False)])
def test_router_settings_per_request_reach_the_servers(
    client: openai.OpenAI, vllm_pair: Pair, threshold: float, large: bool
) -> None:
    """``threshold`` as an extra body field: 0 sends every step to the large server (no small
    request at all), a threshold above every entropy none."""
    settle(vllm_pair)
    before = {b.model: started_requests(b) for b in (vllm_pair.small, vllm_pair.large)}
    reply = client.chat.completions.create(
        model=SERVED, messages=MESSAGES, max_tokens=8,
        extra_body={"threshold": threshold, "max_reasoning_tokens": 32},
    )  # fmt: skip
    record = extra(reply)["glimprouter"]
    settle(vllm_pair)
    after = {b.model: started_requests(b) for b in (vllm_pair.small, vllm_pair.large)}
    assert record["threshold"] == threshold
    assert {s["model"] for s in written(record)} == {"large" if large else "small"}
    small = after[vllm_pair.small.model] - before[vllm_pair.small.model]
    assert small == record["requests"]["small"] == glimpse_requests(record)["small"]
    assert small == (0 if large else len(written(record)))
    assert (
        after[vllm_pair.large.model] - before[vllm_pair.large.model] == record["requests"]["large"]
    )


async def test_async_openai_sdk(proxy: str) -> None:
    async with openai.AsyncOpenAI(base_url=f"{proxy}/v1", api_key="unused") as sdk:
        reply = await sdk.chat.completions.create(
            model=SERVED,
            messages=MESSAGES,
            seed=3,
        )
    assert reasoning_of(reply.choices[0].message)
    assert extra(reply)["glimprouter"]["n_steps"] >= 1


def test_openai_sdk_stream_reasoning_deltas_step_chunks_and_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=SERVED, messages=MESSAGES, stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    reasoning: list[str] = []
    answer: list[str] = []
    steps: list[dict[str, Any]] = []
    record: dict[str, Any] | None = None
    usage = None
    finish = []
    for chunk in stream:
        mine = extra(chunk).get("glimprouter")
        if chunk.choices:
            delta = chunk.choices[0].delta
            reasoning.append(reasoning_of(delta))
            answer.append(delta.content or "")
            finish.append(chunk.choices[0].finish_reason)
        elif mine is not None and "step" in mine:
            steps.append(mine["step"])
        if chunk.usage is not None:
            usage = chunk.usage
        if mine is not None and "n_steps" in mine:
            record = mine
    assert record is not None  # on the last chunk, with the usage
    assert usage is not None
    assert "".join(reasoning)
    assert [s["index"] for s in steps] == list(range(record["n_steps"]))
    assert [s["model"] for s in steps] == [s["model"] for s in record["steps"]]
    assert usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == reasoning_tokens(record)
    assert [f for f in finish if f] in (["stop"], ["length"])


def test_a_forced_tool_call_comes_back_in_tool_calls(client: openai.OpenAI) -> None:
    """vLLM's grammar makes the call; one that the budget cut is no call (never one without a
    name): its text is the content, and the record says why."""
    for seed in (1, 2, 3):
        reply = client.chat.completions.create(
            model=SERVED, messages=[{"role": "user", "content": "What is the weather in Paris?"}],
            tools=[WEATHER_TOOL], tool_choice=FORCED, max_tokens=64, seed=seed,
            extra_body={"max_reasoning_tokens": 24},
        )  # fmt: skip
        choice = reply.choices[0]
        error = extra(reply)["glimprouter"]["answer_error"]
        if error is None:
            assert choice.finish_reason == "tool_calls"
            assert choice.message.tool_calls is not None
            (call,) = choice.message.tool_calls
            assert call.function.name == "get_weather"
            assert set(json.loads(call.function.arguments)) == {"city"}
            return
        assert error.startswith("tool_choice forced a tool call, but ")
        assert not choice.message.tool_calls
        assert choice.finish_reason in ("stop", "length")
        assert choice.message.content
    tiny_model_missed("no seed gave a whole forced call (each said why)")


def test_response_format_json_schema_parses(client: openai.OpenAI) -> None:
    """The SDK's ``parse`` sends a strict json_schema and parses the answer; an answer that the
    budget cut (the tiny model may pad JSON with whitespace) is its LengthFinishReasonError."""
    for seed in (1, 2, 3):
        try:
            reply = client.chat.completions.parse(
                model=SERVED, messages=[{"role": "user", "content": "A weather report for Oslo."}],
                response_format=Report, max_tokens=128, seed=seed,
                extra_body={"max_reasoning_tokens": 24},
            )  # fmt: skip
        except openai.LengthFinishReasonError:
            continue
        assert isinstance(reply.choices[0].message.parsed, Report)
        return
    tiny_model_missed("no seed gave a whole JSON answer in 128 tokens (each a typed error)")


def test_chat_openai_invoke_and_stream(proxy: str) -> None:
    chat = ChatOpenAI(
        base_url=f"{proxy}/v1", api_key="unused", model=SERVED, max_retries=0,
        stream_usage=True, extra_body={"max_reasoning_tokens": 32},
    )  # fmt: skip
    message = chat.invoke(MESSAGES[-1]["content"])
    assert isinstance(message.content, str)
    assert message.response_metadata["model_name"] == SERVED
    assert message.usage_metadata is not None
    assert message.usage_metadata["output_tokens"] > 0
    total: AIMessageChunk | None = None
    for chunk in chat.stream(MESSAGES[-1]["content"]):
        total = chunk if total is None else total + chunk
    assert total is not None
    assert isinstance(total.content, str)
    assert total.usage_metadata is not None  # stream_usage: stream_options.include_usage
    assert total.response_metadata["finish_reason"] in ("stop", "length")


def test_raw_sse_over_httpx(proxy: str) -> None:
    body = {"model": SERVED, "messages": MESSAGES, "stream": True, "max_tokens": 8}
    with httpx.stream("POST", f"{proxy}/v1/chat/completions", json=body, timeout=120) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        text = r.read().decode()
    assert all(line.startswith("data: ") for line in text.splitlines() if line)
    *chunks, done = sse_payloads(text)
    assert done == "[DONE]"
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1
    assert "n_steps" in chunks[-1]["glimprouter"]


def test_health_and_models(proxy: str, vllm_pair: Pair) -> None:
    health = httpx.get(f"{proxy}/health", timeout=30)
    assert (health.status_code, health.json()) == (
        200,
        {"status": "ok", "small": "ok", "large": "ok"},
    )
    models = httpx.get(f"{proxy}/v1/models", timeout=30).json()
    assert [m["id"] for m in models["data"]] == [SERVED, vllm_pair.large.model]


def test_metrics_count_requests_steps_and_tokens(client: openai.OpenAI, proxy: str) -> None:
    def scrape() -> dict[str, float]:
        return {
            "ok": metric(proxy, "glimprouter_proxy_requests_total", status="200", stream="false"),
            "small_steps": metric(proxy, "glimprouter_proxy_steps_total", model="small"),
            "large_steps": metric(proxy, "glimprouter_proxy_steps_total", model="large"),
            "small_tokens": metric(proxy, "glimprouter_proxy_tokens_total", model="small"),
            "large_tokens": metric(proxy, "glimprouter_proxy_tokens_total", model="large"),
            "ttft": metric(proxy, "glimprouter_proxy_time_to_first_token_seconds_count"),
        }

    before = scrape()
    reply = client.chat.completions.create(model=SERVED, messages=MESSAGES)
    after = scrape()
    record = extra(reply)["glimprouter"]
    large = record["n_large_steps"]
    assert after["ok"] - before["ok"] == 1
    assert after["small_steps"] - before["small_steps"] == record["n_steps"] - large
    assert after["large_steps"] - before["large_steps"] == large
    assert after["small_tokens"] - before["small_tokens"] == record["tokens"]["small"]
    assert after["large_tokens"] - before["large_tokens"] == record["tokens"]["large"]
    assert after["ttft"] - before["ttft"] == 1


def test_a_client_leaving_mid_stream_stops_both_servers(proxy: str, vllm_pair: Pair) -> None:
    """A long chain (2048 reasoning tokens), left after a few deltas: the requests that were
    running on the servers are aborted within seconds, not run to their budget."""
    settle(vllm_pair)
    gone = metric(proxy, "glimprouter_proxy_requests_total", status="499", stream="true")
    body = {
        "model": SERVED, "messages": MESSAGES, "stream": True,
        "max_reasoning_tokens": 2048, "max_tokens": 512, "threshold": 1.5,
    }  # fmt: skip
    busy = 0.0
    with (
        httpx.Client(timeout=120) as http,
        http.stream("POST", f"{proxy}/v1/chat/completions", json=body) as response,
    ):
        assert response.status_code == 200
        deltas = 0
        for line in response.iter_lines():
            if chain_in(line) or '"content"' in line:
                deltas += 1
            if deltas >= 3 and (busy := running(vllm_pair)) > 0:
                break
            assert deltas < 400, "no request seen running on either server"
    if not busy:  # the scripted-server test of the same (loopback_tests) cannot miss this way
        tiny_model_missed("the chain and the answer ended before a request was seen running")
    assert settle(vllm_pair, seconds=5) < 5
    deadline = time.monotonic() + 5
    while metric(proxy, "glimprouter_proxy_requests_total", status="499", stream="true") == gone:
        assert time.monotonic() < deadline, "the proxy did not count the request as left (499)"
        time.sleep(0.1)
