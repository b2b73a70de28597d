"""A forced tool call or a structured answer never comes back empty-handed: either a parsed
call (a parsed object), or an invalid call / IncompleteAnswerError that says why.

On the scripted servers, in every mode (invoke, stream, and their async twins): the answer cut
at max_tokens inside the JSON, an answer of whitespace only (what a constrained small model
loops on), a server that ignores the constraint, and a chain ended by the loop guard or by the
reasoning budget before the answer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.runnables import Runnable

from langchain_glimprouter import BackendResponseError, IncompleteAnswerError
from scripted_server import Faults, Script, ScriptedServer
from tests.support.forced_answers import Report, get_weather
from tests.support.pair import LARGE_STEPS, SMALL_STEPS, router_for

Servers = Callable[..., tuple[ScriptedServer, ScriptedServer]]
MODES = ["invoke", "stream", "ainvoke", "astream"]
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}'


def run(runnable: Runnable[Any, Any], mode: str, question: str = "Weather in Paris?") -> Any:
    """The runnable's output in ``mode``; streamed chunks are added up (messages) or the last
    one is kept (parsed objects)."""

    async def collect() -> list[Any]:
        return [chunk async for chunk in runnable.astream(question)]

    if mode == "invoke":
        return runnable.invoke(question)
    if mode == "ainvoke":
        return asyncio.run(runnable.ainvoke(question))
    chunks = list(runnable.stream(question)) if mode == "stream" else asyncio.run(collect())
    if chunks and isinstance(chunks[0], BaseMessage):
        total = chunks[0]
        for chunk in chunks[1:]:
            total += chunk
        return total
    return chunks[-1] if chunks else None


def pair(servers: Servers, answer: str, steps: list[str] | None = None) -> Any:
    return servers(
        small=Script(steps=steps or SMALL_STEPS, h_init=[0.2, 1.5, 0.1, 2.0, 0.0]),
        large=Script(steps=steps or LARGE_STEPS, answer=answer),
    )


def assert_invalid_call_says_why(message: AIMessage, *needles: str) -> None:
    assert message.tool_calls == []  # never a call with cut arguments
    assert len(message.invalid_tool_calls) == 1
    invalid = message.invalid_tool_calls[0]
    assert invalid["args"] is not None
    assert invalid["args"].startswith("<tool_call>")  # what the model wrote, from the marker
    error = message.response_metadata["glimprouter"]["answer_error"]
    assert error.startswith("tool_choice forced a tool call, but ")
    for needle in needles:
        assert needle in error
    if not isinstance(message, AIMessageChunk):  # a chunk cannot carry the error itself
        assert invalid["error"] == error


CUT_CHAINS = [
    ({"max_reasoning_tokens": 6}, None, "budget"),
    ({}, ["I think.", "I think.", "I think.", "I think."], "loop"),
]
"""Chains cut short before the answer: by the reasoning budget, by the loop guard."""
FORCED = ["any", "required", True, "get_weather",
          {"type": "function", "function": {"name": "get_weather"}}]  # fmt: skip
"""Every way ``bind_tools`` forces a call."""


@pytest.mark.parametrize("tool_choice", FORCED, ids=["any", "required", "true", "name", "dict"])
@pytest.mark.parametrize("mode", MODES)
def test_a_forced_call_cut_at_max_tokens_is_an_invalid_call_that_says_why(
    servers: Servers, mode: str, tool_choice: Any
) -> None:
    small, large = pair(servers, CALL)
    router = router_for(small, large, max_tokens=3)
    message = run(router.bind_tools([get_weather], tool_choice=tool_choice), mode)
    assert isinstance(message, AIMessage)
    assert message.response_metadata["finish_reason"] == "length"
    assert_invalid_call_says_why(message, "max_tokens=3", "raise max_tokens")
    assert large.requests[-1].params["max_tokens"] == 3


@pytest.mark.parametrize("mode", MODES)
def test_an_answer_of_whitespace_only_is_not_an_empty_success(servers: Servers, mode: str) -> None:
    """What SmolLM2 did on real vLLM: newlines until max_tokens inside the constrained JSON."""
    small, large = pair(servers, "<tool_call>\n" + "\n\n" * 40)  # a token per "\n\n"
    router = router_for(small, large, max_tokens=10).bind_tools([get_weather], tool_choice="any")
    message = run(router, mode)
    assert isinstance(message, AIMessage)
    assert_invalid_call_says_why(message, "max_tokens=10")
    assert message.invalid_tool_calls[0]["args"].strip() == "<tool_call>"


@pytest.mark.parametrize("mode", MODES)
def test_a_server_that_ignores_the_constraint_is_named(servers: Servers, mode: str) -> None:
    small, large = pair(servers, "<tool_call>\nI would rather not.")
    router = router_for(small, large).bind_tools([get_weather], tool_choice="get_weather")
    message = run(router, mode)
    assert isinstance(message, AIMessage)
    assert message.response_metadata["finish_reason"] == "stop"
    assert_invalid_call_says_why(message, "structured outputs")


@pytest.mark.parametrize(("settings", "steps", "chain_end"), CUT_CHAINS)
@pytest.mark.parametrize("mode", MODES)
def test_after_a_chain_cut_short_the_forced_call_is_whole_or_says_why(
    servers: Servers,
    mode: str,
    settings: dict[str, Any],
    steps: list[str] | None,
    chain_end: str,
) -> None:
    small, large = pair(servers, CALL, steps)
    router = router_for(small, large, **settings)
    whole = run(router.bind_tools([get_weather], tool_choice="any"), mode)
    assert isinstance(whole, AIMessage)
    assert whole.response_metadata["glimprouter"]["chain_end"] == chain_end
    assert whole.response_metadata["glimprouter"]["answer_error"] is None
    assert [(c["name"], c["args"]) for c in whole.tool_calls] == [
        ("get_weather", {"city": "Paris", "days": 3})
    ]
    cut = run(router.bind_tools([get_weather], tool_choice="any", max_tokens=4), mode)
    assert cut.response_metadata["glimprouter"]["chain_end"] == chain_end
    assert_invalid_call_says_why(cut, "max_tokens=4")


@pytest.mark.parametrize("mode", MODES)
def test_a_schema_the_server_refuses_is_a_typed_error_sent_once(
    servers: Servers, mode: str
) -> None:
    """A server that cannot compile the schema answers 400: a BackendResponseError that
    quotes it, not retried, never an empty message."""
    small, large = pair(servers, CALL)
    large.faults = Faults(refuse_schema=True)
    forced = router_for(small, large).bind_tools([get_weather], tool_choice="any")
    with pytest.raises(BackendResponseError, match="not supported by xgrammar") as caught:
        run(forced, mode)
    assert caught.value.status_code == 400
    structured = router_for(small, large).with_structured_output(Report)
    with pytest.raises(BackendResponseError, match="not supported by xgrammar"):
        run(structured, mode)
    answers = [r for r in large.requests if r.params.get("structured_outputs")]
    assert len(answers) == 2  # one per call: a refused schema is not retried


def test_an_unforced_call_left_open_is_kept_as_an_invalid_call(servers: Servers) -> None:
    small, large = pair(servers, "Let me check.\n<tool_call>\n")
    message = router_for(small, large).bind_tools([get_weather]).invoke("Weather?")
    assert isinstance(message, AIMessage)
    assert message.tool_calls == []
    assert message.invalid_tool_calls[0]["args"] == "<tool_call>\n"
    assert message.response_metadata["glimprouter"]["answer_error"] is None  # nothing forced


# -- with_structured_output --------------------------------------------------------------------


@pytest.mark.parametrize("method", ["json_schema", "function_calling", "json_mode"])
@pytest.mark.parametrize("mode", MODES)
def test_structured_output_cut_at_max_tokens_raises_incomplete_answer(
    servers: Servers, mode: str, method: str
) -> None:
    report = '{"city": "Oslo", "degrees": 4}'
    answer = f'<tool_call>\n{{"name": "Report", "arguments": {report}}}' if method == (
        "function_calling"
    ) else report  # fmt: skip
    small, large = pair(servers, answer)
    router = router_for(small, large, max_tokens=2)
    with pytest.raises(IncompleteAnswerError, match="max_tokens=2") as caught:
        run(router.with_structured_output(Report, method=method), mode)
    assert caught.value.answer  # what the model did write
    assert isinstance(caught.value, ValueError)

    full = run(router_for(small, large).with_structured_output(Report, method=method), mode)
    assert full == Report(city="Oslo", degrees=4)


@pytest.mark.parametrize("mode", MODES)
def test_structured_output_with_raw_keeps_the_message_and_the_error(
    servers: Servers, mode: str
) -> None:
    small, large = pair(servers, '{"city": "Oslo", "degrees": 4}')
    router = router_for(small, large, max_tokens=2)
    out = run(router.with_structured_output(Report, include_raw=True), mode)  # one dict
    assert out["parsed"] is None
    assert isinstance(out["parsing_error"], IncompleteAnswerError)
    raw = out["raw"]
    assert "max_tokens=2" in raw.response_metadata["glimprouter"]["answer_error"]


@pytest.mark.parametrize(("settings", "steps", "chain_end"), CUT_CHAINS)
@pytest.mark.parametrize("method", ["json_schema", "function_calling", "json_mode"])
@pytest.mark.parametrize("mode", MODES)
def test_after_a_chain_cut_short_the_structured_answer_is_whole_or_raises(
    servers: Servers,
    mode: str,
    method: str,
    settings: dict[str, Any],
    steps: list[str] | None,
    chain_end: str,
) -> None:
    report = '{"city": "Oslo", "degrees": 4}'
    answer = f'<tool_call>\n{{"name": "Report", "arguments": {report}}}' if method == (
        "function_calling"
    ) else report  # fmt: skip
    small, large = pair(servers, answer, steps)
    router = router_for(small, large, **settings)
    whole = run(router.with_structured_output(Report, method=method, include_raw=True), mode)
    assert whole["raw"].response_metadata["glimprouter"]["chain_end"] == chain_end
    assert whole["parsed"] == Report(city="Oslo", degrees=4)
    cut = router_for(small, large, max_tokens=3, **settings)
    with pytest.raises(IncompleteAnswerError, match="max_tokens=3"):
        run(cut.with_structured_output(Report, method=method), mode)


def test_typeddict_output_is_never_a_silently_cut_dict(servers: Servers) -> None:
    """JsonOutputParser alone would return {"city": "Os"} from the cut text."""
    small, large = pair(servers, '{"city": "Oslo", "degrees": 4}')
    properties = {"city": {"type": "string"}, "degrees": {"type": "integer"}}
    schema = {"title": "Report", "type": "object", "properties": properties}
    router = router_for(small, large, max_tokens=2).with_structured_output(schema)
    with pytest.raises(IncompleteAnswerError):
        router.invoke("Weather in Oslo?")
    streamed: list[Any] = []
    with pytest.raises(IncompleteAnswerError):
        streamed.extend(router.stream("Weather in Oslo?"))
    assert all(isinstance(part, dict) for part in streamed)  # partial dicts, then the error
