"""LiteLLM's ``completion`` through the proxy (issue 27: its tool loop failed on every second
turn): a full tool loop, the assistant message appended exactly as LiteLLM returns it, plain
and streamed (the streamed turn rebuilt with ``litellm.stream_chunk_builder``), with the
reasoning visible. LiteLLM is imported by the fixture (it takes seconds), with its model cost
map read from the package (``LITELLM_LOCAL_MODEL_COST_MAP``): it never fetches at import."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.loopback_tests.test_proxy_clients import KEY, Proxy, proxy
from tests.support.proxy import CALL, QUESTION, REASONING, WEATHER_TOOL

__all__ = ["proxy"]  # the fixture: the proxy before a scripted pair, its key KEY

WEATHER = "Sunny, 24 C"
FINAL = "It is sunny in Paris."


def calls_then_answers(prompt: str) -> str:
    """The large model calls the weather tool, and answers once the prompt has its output."""
    return FINAL if WEATHER in prompt else CALL


@pytest.fixture(scope="module")
def litellm() -> Iterator[Any]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        patch.setenv("LITELLM_TELEMETRY", "False")
        import litellm

        yield litellm


def ask(litellm: Any, base_url: str, messages: list[Any], **kwargs: Any) -> Any:
    return litellm.completion(
        model="openai/glimprouter",
        api_base=base_url,
        api_key=KEY,
        messages=messages,
        tools=[WEATHER_TOOL],
        num_retries=0,
        **kwargs,
    )


def test_litellm_gets_the_chain_and_the_answer(litellm: Any, proxy: Proxy) -> None:
    app, _, _ = proxy()
    reply = ask(litellm, app.base_url, QUESTION)
    message = reply.choices[0].message
    assert message.content == "The answer is 42."
    assert message.reasoning_content == REASONING
    assert reply.usage.completion_tokens_details.reasoning_tokens > 0


def test_litellm_runs_a_whole_tool_loop(litellm: Any, proxy: Proxy) -> None:
    app, _, large = proxy(calls_then_answers)
    messages: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    first = ask(litellm, app.base_url, messages)
    assert first.choices[0].finish_reason == "tool_calls"
    called = first.choices[0].message
    calls = called.tool_calls
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris"})
    ]
    messages.append(called)  # exactly as LiteLLM returns it (content None, tool_calls)
    messages += [{"role": "tool", "tool_call_id": c.id, "content": WEATHER} for c in calls]
    second = ask(litellm, app.base_url, messages)
    assert second.choices[0].message.content == FINAL
    assert second.choices[0].finish_reason == "stop"
    assert WEATHER in large.requests[-1].prompt


def test_litellm_streams_a_whole_tool_loop(litellm: Any, proxy: Proxy) -> None:
    app, _, _ = proxy(calls_then_answers)
    messages: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    chunks = list(ask(litellm, app.base_url, messages, stream=True))
    reasoning = "".join(
        getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in chunks if c.choices
    )
    assert reasoning == REASONING
    built = litellm.stream_chunk_builder(chunks, messages=messages)
    assert built.choices[0].finish_reason == "tool_calls"
    called = built.choices[0].message
    assert [c.function.name for c in called.tool_calls] == ["get_weather"]
    messages.append(called)
    messages += [
        {"role": "tool", "tool_call_id": c.id, "content": WEATHER} for c in called.tool_calls
    ]
    answer = "".join(
        c.choices[0].delta.content or ""
        for c in ask(litellm, app.base_url, messages, stream=True)
        if c.choices
    )
    assert answer == FINAL
