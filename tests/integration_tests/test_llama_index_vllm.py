"""GlimpRouterLLM against the two real vLLM CPU servers (SmolLM2-135M): the wiring of the
LlamaIndex surface over real tokens and logprobs, not what a 135M model writes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from llama_index.core.base.llms.types import ChatMessage, ChatResponse, MessageRole, ThinkingBlock
from llama_index.core.tools import FunctionTool

from langchain_glimprouter.llama_index import GlimpRouterLLM, GlimpRouterStepEvent
from langchain_glimprouter.router import Router
from tests.support.accounting import glimpse_requests
from tests.support.llama_steps import Steps, listening

from .conftest import Pair, settle, started_requests, tiny_model_missed
from .test_vllm_routing import QUESTION, SYSTEM

TAU = 1.5
"""Inside SmolLM2's H_init range on this prompt (see test_vllm_routing): steps go both ways."""


@pytest.fixture
def steps() -> Iterator[Steps]:
    with listening() as handler:
        yield handler


def llm(pair: Pair, **settings: Any) -> GlimpRouterLLM:
    values: dict[str, Any] = {"threshold": TAU, "max_reasoning_tokens": 160, "max_tokens": 24}
    values.update(settings)
    return GlimpRouterLLM(router=Router(small=pair.small, large=pair.large, **values))


def messages() -> list[ChatMessage]:
    return [
        ChatMessage(role=MessageRole.SYSTEM, content=SYSTEM),
        ChatMessage(role=MessageRole.USER, content=QUESTION),
    ]


def assert_wired(response: ChatResponse, events: list[GlimpRouterStepEvent]) -> dict[str, Any]:
    """The record on raw and additional_kwargs, one event per recorded step, the chain in a
    ThinkingBlock and in additional_kwargs."""
    record: dict[str, Any] = response.raw["glimprouter"]
    assert response.additional_kwargs["glimprouter"] == record
    assert [(e.index, e.model, e.h_init) for e in events] == [
        (s["index"], s["model"], s["h_init"]) for s in record["steps"]
    ]
    reasoning = response.message.additional_kwargs["reasoning_content"]
    thinking = [b for b in response.message.blocks if isinstance(b, ThinkingBlock)]
    assert [b.content for b in thinking] == ([reasoning] if reasoning else [])
    assert record["requests"]["large"] >= 1  # the large model writes the answer
    return record


def test_chat_routes_steps_to_both_models(vllm_pair: Pair, steps: Steps) -> None:
    """Each chat held to the servers' counters; seeds are tried until a chain mixes both kinds
    of step (sampling decides)."""
    for seed in range(1, 9):
        steps.seen.clear()
        settle(vllm_pair)
        before = started_requests(vllm_pair.small), started_requests(vllm_pair.large)
        response = llm(vllm_pair, seed=seed).chat(messages())
        settle(vllm_pair)
        after = started_requests(vllm_pair.small), started_requests(vllm_pair.large)
        record = assert_wired(response, steps.seen)
        assert all(s["h_init"] > TAU for s in record["steps"] if s["model"] == "large")
        assert all(s["h_init"] <= TAU for s in record["steps"] if s["model"] == "small")
        assert after[0] - before[0] == record["requests"]["small"]  # the servers saw these calls
        assert after[1] - before[1] == record["requests"]["large"]
        assert record["requests"] == glimpse_requests(record)
        assert response.raw["model_name"] == vllm_pair.large.model
        if 0 < record["n_large_steps"] < record["n_steps"]:
            return
    tiny_model_missed(f"no chain mixed small and large steps at tau={TAU}")


def assert_cumulative(responses: list[ChatResponse], steps: Steps) -> None:
    """The deltas add up to the last response's text and chain, which alone has the record."""
    last = responses[-1]
    assert "".join(r.delta or "" for r in responses) == (last.message.content or "")
    chain = "".join(r.additional_kwargs.get("thinking_delta", "") for r in responses)
    assert chain == last.message.additional_kwargs["reasoning_content"]
    assert all("glimprouter" not in r.additional_kwargs for r in responses[:-1])
    assert assert_wired(last, steps.seen)["n_steps"] >= 1


def test_stream_chat_is_cumulative_with_the_record_last(vllm_pair: Pair, steps: Steps) -> None:
    assert_cumulative(list(llm(vllm_pair, seed=3).stream_chat(messages())), steps)


CHEAP = {"max_reasoning_tokens": 48, "max_tokens": 12}
"""Budgets of the async tests: the wiring shows in a few steps as in many."""


async def test_achat_is_wired_as_chat(vllm_pair: Pair, steps: Steps) -> None:
    response = await llm(vllm_pair, seed=3, **CHEAP).achat(messages())
    assert assert_wired(response, steps.seen)["n_steps"] >= 1


async def test_astream_chat_is_cumulative_with_the_record_last(
    vllm_pair: Pair, steps: Steps
) -> None:
    stream = await llm(vllm_pair, seed=3, **CHEAP).astream_chat(messages())
    assert_cumulative([r async for r in stream], steps)


def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"Sunny in {city}"


def test_a_required_tool_is_parsed_into_a_tool_selection(vllm_pair: Pair) -> None:
    """The forced call is constrained by vLLM's structured outputs: a call of the tool, or (a
    tiny model's miss, e.g. cut at max_tokens) a reason, never an empty answer."""
    tool = FunctionTool.from_defaults(fn=get_weather)
    misses = []
    for seed in (1, 2, 3, 4, 5):
        model = llm(vllm_pair, max_reasoning_tokens=32, max_tokens=64, seed=seed)
        response = model.chat_with_tools(
            [tool], user_msg="What is the weather in Paris?", tool_required=True
        )
        selections = model.get_tool_calls_from_response(response, error_on_no_tool_call=False)
        if selections:
            assert [s.tool_name for s in selections] == ["get_weather"]
            assert set(selections[0].tool_kwargs) == {"city"}  # the schema's, by the server
            assert response.raw["glimprouter"]["answer_error"] is None
            return
        error = response.raw["glimprouter"]["answer_error"]  # a miss says why
        assert error is not None
        assert error.startswith("tool_choice forced a tool call, but "), error
        misses.append(error)
    tiny_model_missed(f"no forced call completed in 5 seeds, each said why: {misses}")
