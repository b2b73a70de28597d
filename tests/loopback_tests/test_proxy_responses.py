"""Real clients of the proxy's Responses API on loopback (uvicorn in a thread, scripted servers
behind it): the openai SDK's ``responses.create`` and ``responses.stream``, sync and async,
with a function-tool round trip; the OpenAI Agents SDK running an agent with one function tool
(plain and streamed); and langchain-openai's ``ChatOpenAI(use_responses_api=True)``."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from agents import (
    Agent,
    OpenAIResponsesModel,
    RunConfig,
    Runner,
    function_tool,
    set_tracing_disabled,
)
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_openai import ChatOpenAI

from tests.loopback_tests.test_proxy_clients import KEY, Proxy, proxy
from tests.support.pair import LARGE_STEPS
from tests.support.proxy import (
    CALL,
    FLAT_WEATHER_TOOL,
    REASONING,
    WEATHER_TOOL,
    ServedApp,
)

WEATHER = "Sunny, 24 C"
FINAL = "It is sunny in Paris."
PARIS = ("get_weather", {"city": "Paris"})


__all__ = ["proxy"]  # the fixture: the proxy before a scripted pair, its key KEY


def calls_then_answers(prompt: str) -> str:
    """The large model calls the weather tool, and answers once the prompt has its output."""
    return FINAL if WEATHER in prompt else CALL


def sdk(app: ServedApp) -> openai.OpenAI:
    return openai.OpenAI(base_url=app.base_url, api_key=KEY, max_retries=0)


def async_sdk(app: ServedApp) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=app.base_url, api_key=KEY, max_retries=0)


def test_responses_create_gets_the_chain_the_answer_usage_and_record(proxy: Proxy) -> None:
    app, _, _ = proxy()
    response = sdk(app).responses.create(model="glimprouter", input="What is 6 times 7?")
    assert response.output_text == "The answer is 42."
    reasoning = response.output[0]
    assert reasoning.type == "reasoning"
    assert [(c.type, c.text) for c in reasoning.content or []] == [("reasoning_text", REASONING)]
    assert response.usage is not None
    assert response.usage.output_tokens_details.reasoning_tokens > 0
    assert response.status == "completed"
    assert (response.model_extra or {})["glimprouter"]["n_large_steps"] == 2


def test_responses_stream_sends_each_event_and_the_final_response(proxy: Proxy) -> None:
    app, _, _ = proxy()
    kinds, steps, chain, text = [], [], "", ""
    with sdk(app).responses.stream(model="glimprouter", input="What is 6 times 7?") as stream:
        for event in stream:
            kinds.append(event.type)
            if event.type == "glimprouter.step":
                steps.append((event.model_extra or {})["step"]["model"])
            elif event.type == "response.reasoning_text.delta":
                chain += event.delta
            elif event.type == "response.output_text.delta":
                text += event.delta
        final = stream.get_final_response()
    assert (chain, text) == (REASONING, "The answer is 42.")
    assert steps == ["small", "large", "small", "large"]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert final.output_text == "The answer is 42."
    assert (final.model_extra or {})["glimprouter"]["n_steps"] == 4


def test_a_function_tool_round_trip_with_the_output_items_passed_back(proxy: Proxy) -> None:
    app, _, large = proxy(calls_then_answers)
    client = sdk(app)
    question: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    first = client.responses.create(model="glimprouter", input=question, tools=[FLAT_WEATHER_TOOL])
    calls = [item for item in first.output if item.type == "function_call"]
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris"})
    ]
    passed_back = [item.model_dump(exclude_none=True) for item in first.output]
    outputs = [
        {"type": "function_call_output", "call_id": c.call_id, "output": WEATHER} for c in calls
    ]
    second = client.responses.create(
        model="glimprouter", input=question + passed_back + outputs, tools=[FLAT_WEATHER_TOOL]
    )
    assert second.output_text == FINAL
    prompt = large.requests[-1].prompt
    assert WEATHER in prompt
    assert prompt.count(LARGE_STEPS[1]) == 1  # this call's chain; the passed-back one is not sent


async def test_the_async_sdk_creates_and_streams_a_tool_round_trip(proxy: Proxy) -> None:
    app, _, _ = proxy(calls_then_answers)
    client = async_sdk(app)
    question: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    async with client.responses.stream(
        model="glimprouter", input=question, tools=[FLAT_WEATHER_TOOL]
    ) as stream:
        arguments = [
            e.delta async for e in stream if e.type == "response.function_call_arguments.delta"
        ]
        first = await stream.get_final_response()
    assert json.loads("".join(arguments)) == {"city": "Paris"}
    call = next(item for item in first.output if item.type == "function_call")
    passed_back = [item.model_dump(exclude_none=True) for item in first.output]
    output = {"type": "function_call_output", "call_id": call.call_id, "output": WEATHER}
    second = await client.responses.create(
        model="glimprouter", input=[*question, *passed_back, output], tools=[FLAT_WEATHER_TOOL]
    )
    assert second.output_text == FINAL
    await client.close()


def test_the_sdk_raises_its_error_classes(proxy: Proxy) -> None:
    app, _, _ = proxy()
    with pytest.raises(openai.BadRequestError, match="stateless") as refused:
        sdk(app).responses.create(model="glimprouter", input="Hi", previous_response_id="resp_1")
    assert refused.value.code == "unsupported_parameter"
    with pytest.raises(openai.BadRequestError, match="built-in tool"):
        sdk(app).responses.create(model="glimprouter", input="Hi", tools=[{"type": "web_search"}])
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=app.base_url, api_key="wrong", max_retries=0).responses.create(
            model="glimprouter", input="Hi"
        )


@function_tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return WEATHER if city == "Paris" else "unknown"


def weather_agent(app: ServedApp) -> Agent[Any]:
    set_tracing_disabled(True)
    model = OpenAIResponsesModel(model="glimprouter", openai_client=async_sdk(app))
    return Agent(name="weather", instructions="Answer briefly.", tools=[get_weather], model=model)


async def test_an_agents_sdk_agent_calls_its_function_tool(proxy: Proxy) -> None:
    app, _, large = proxy(calls_then_answers)
    result = await Runner.run(weather_agent(app), "Weather in Paris?")
    assert result.final_output == FINAL
    kinds = [item.type for item in result.new_items]
    assert kinds == [
        "reasoning_item", "tool_call_item", "tool_call_output_item", "reasoning_item",
        "message_output_item",
    ]  # fmt: skip
    assert "Answer briefly." in large.requests[-1].prompt
    assert WEATHER in large.requests[-1].prompt


async def test_an_agents_sdk_agent_streams(proxy: Proxy) -> None:
    app, _, _ = proxy(calls_then_answers)
    run = Runner.run_streamed(weather_agent(app), "Weather in Paris?", run_config=RunConfig())
    raw = []
    async for event in run.stream_events():
        if event.type == "raw_response_event":
            raw.append(event.data.type)
    assert run.final_output == FINAL
    assert raw.count("response.completed") == 2
    assert "glimprouter.step" in raw  # passed through, unknown to the SDK
    assert "response.reasoning_text.delta" in raw


def chat_openai(app: ServedApp, **settings: Any) -> ChatOpenAI:
    return ChatOpenAI(
        base_url=app.base_url, api_key=KEY, model="glimprouter", max_retries=0,  # type: ignore[arg-type]
        use_responses_api=True, **settings,
    )  # fmt: skip


def test_chat_openai_on_the_responses_api_invokes_streams_and_binds_tools(proxy: Proxy) -> None:
    """langchain-openai keeps the reasoning item as a content block (its ``content`` the
    chain) on invoke; its stream handler reads no ``response.reasoning_text.delta``, so a
    stream's reasoning block stays empty (see docs/proxy.md)."""
    app, _, _ = proxy()
    message = chat_openai(app).invoke("What is 6 times 7?")
    assert message.text == "The answer is 42."
    reasoning = [b for b in message.content if isinstance(b, dict) and b["type"] == "reasoning"]
    assert reasoning[0]["content"] == [{"type": "reasoning_text", "text": REASONING}]
    chunks = list(chat_openai(app).stream("What is 6 times 7?"))
    assert "".join(chunk.text for chunk in chunks) == "The answer is 42."
    blocks = [b for c in chunks for b in c.content if isinstance(b, dict)]
    assert any(b["type"] == "reasoning" for b in blocks)
    app, _, _ = proxy(calls_then_answers)
    bound = chat_openai(app).bind_tools([WEATHER_TOOL])
    called = bound.invoke("Weather in Paris?")
    assert [(c["name"], c["args"]) for c in called.tool_calls] == [PARIS]
    result = ToolMessage(WEATHER, tool_call_id=called.tool_calls[0]["id"])
    answered = bound.invoke([HumanMessage("Weather in Paris?"), called, result])
    assert answered.text == FINAL
