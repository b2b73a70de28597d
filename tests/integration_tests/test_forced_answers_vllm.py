"""The forced-answer guarantee on real vLLM (structured outputs by the server's own grammar).

A budget too small for any call (4 tokens cannot hold ``{"name": "get_weather", ...}``) makes
the outcome independent of what the tiny model writes: an invalid call that says why, or an
IncompleteAnswerError. With an ample budget the call is whatever the model writes, and the
test asserts only what holds for every decode: a parsed call of the bound tool, or an invalid
call with its reason, never an empty message.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk

from langchain_glimprouter import GlimpRouterChatModel, IncompleteAnswerError
from tests.support.forced_answers import Report, get_weather

from .conftest import Pair

QUESTION = "What is the weather in Paris for the next 3 days?"


def router(pair: Pair, **settings: Any) -> GlimpRouterChatModel:
    return GlimpRouterChatModel(
        small=pair.small, large=pair.large, threshold=1.5, max_reasoning_tokens=32, seed=3,
        **settings,
    )  # fmt: skip


def streamed(model: Any) -> AIMessage:
    total: AIMessageChunk | None = None
    for chunk in model.stream(QUESTION):
        total = chunk if total is None else total + chunk
    assert total is not None
    return total


def test_a_forced_call_cut_by_the_budget_says_why(vllm_pair: Pair) -> None:
    model = router(vllm_pair, max_tokens=4).bind_tools([get_weather], tool_choice="any")
    for message in (
        model.invoke(QUESTION),
        streamed(model),
        asyncio.run(model.ainvoke(QUESTION)),
    ):
        assert isinstance(message, AIMessage)
        assert message.tool_calls == []  # not a call with cut arguments, in any mode
        assert len(message.invalid_tool_calls) == 1
        assert message.invalid_tool_calls[0]["args"].startswith("<tool_call>\n{")
        record = message.response_metadata["glimprouter"]
        assert record["answer_tokens"] == 4
        assert message.response_metadata["finish_reason"] == "length"
        assert "max_tokens=4" in record["answer_error"]
        assert "raise max_tokens" in record["answer_error"]


def test_structured_output_cut_by_the_budget_raises(vllm_pair: Pair) -> None:
    model = router(vllm_pair, max_tokens=3)
    with pytest.raises(IncompleteAnswerError, match="max_tokens=3") as caught:
        model.with_structured_output(Report).invoke("Weather in Oslo?")
    assert caught.value.answer.startswith("{")
    with pytest.raises(IncompleteAnswerError):
        list(model.with_structured_output(Report, method="function_calling").stream("Oslo?"))
    out = model.with_structured_output(Report, include_raw=True).invoke("Weather in Oslo?")
    assert out["parsed"] is None
    assert isinstance(out["parsing_error"], IncompleteAnswerError)
    assert out["raw"].response_metadata["glimprouter"]["answer_error"]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_forced_call_with_room_is_a_call_or_says_why(vllm_pair: Pair, seed: int) -> None:
    model = router(vllm_pair, max_tokens=64, temperature=0.8).bind_tools(
        [get_weather], tool_choice="get_weather"
    )
    message = model.invoke(QUESTION, seed=seed)
    assert isinstance(message, AIMessage)
    record = message.response_metadata["glimprouter"]
    if message.tool_calls:
        assert [c["name"] for c in message.tool_calls] == ["get_weather"]
        assert set(message.tool_calls[0]["args"]) == {"city", "days"}  # the schema's, enforced
        assert record["answer_error"] is None
    else:
        assert message.invalid_tool_calls
        assert message.invalid_tool_calls[0]["error"] == record["answer_error"]
        assert record["answer_error"].startswith("tool_choice forced a tool call, but ")
