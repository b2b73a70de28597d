"""Tool calling and structured output, on the scripted servers and the parser alone."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolMessage
from langchain_core.tools import tool
from pydantic import BaseModel, Field
from typing_extensions import TypedDict

from langchain_glimprouter import Backend, GlimpRouterChatModel, InvalidArgumentError
from langchain_glimprouter.core.tool_calls import (
    CallSplitter,
    HermesToolCallParser,
    InvalidCall,
    ParsedCall,
)
from scripted_server import Script, ScriptedServer
from tests.support.pair import LARGE_STEPS, SMALL_STEPS, router_for

Servers = Callable[..., tuple[ScriptedServer, ScriptedServer]]
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
QWEN_LIKE = (  # a template that renders tools itself, as Qwen's does
    "{% if tools %}<|im_start|>system\nTOOLS:{% for t in tools %} {{ t.function.name }}"
    "{% endfor %}<|im_end|>\n{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}"
    "{% for c in m.tool_calls or [] %}CALL {{ c.function.name }} {{ c.function.arguments.city }}"
    "{% endfor %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% endif %}"
)


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"Sunny in {city}"


@tool
def get_time(zone: str) -> str:
    """The time in a time zone."""
    return "12:00"


def _pair(servers: Servers, answer: str) -> tuple[ScriptedServer, ScriptedServer]:
    return servers(
        large=Script(steps=LARGE_STEPS, answer=answer),
        small=Script(steps=SMALL_STEPS, h_init=[0.2, 1.5, 0.1, 2.0, 0.0]),
    )


# -- the parser -----------------------------------------------------------------------------------


def test_hermes_parses_prose_calls_and_invalid_calls() -> None:
    parser = HermesToolCallParser()
    text = f'Let me check.\n{CALL}\n<tool_call>\n{{"name": "x", oops}}\n</tool_call>'
    answer = parser.parse(text)
    assert answer.content.strip() == "Let me check."
    assert [(c.name, c.args) for c in answer.calls] == [("get_weather", {"city": "Paris"})]
    assert len(answer.invalid) == 1
    assert answer.invalid[0].text == '<tool_call>\n{"name": "x", oops}\n</tool_call>'  # as written
    assert "not JSON" in answer.invalid[0].error
    assert answer.calls[0].id.startswith("call_")
    assert answer.calls[0].id != answer.invalid[0].id


def test_hermes_accepts_string_arguments_and_an_unclosed_last_call() -> None:
    parser = HermesToolCallParser()
    answer = parser.parse('<tool_call>{"name": "f", "arguments": "{\\"a\\": 1}"}')
    assert [(c.name, c.args) for c in answer.calls] == [("f", {"a": 1})]
    not_an_object = parser.parse('<tool_call>{"name": "f", "arguments": [1]}</tool_call>')
    assert not_an_object.invalid[0].name == "f"
    assert parser.parse("no calls at all").content == "no calls at all"


@pytest.mark.parametrize("size", [1, 2, 3, 7])
def test_splitter_streams_prose_and_whole_calls_whatever_the_delta_size(size: int) -> None:
    text = f"Checking <tool weather>.\n{CALL} done"
    splitter = CallSplitter(HermesToolCallParser())
    pieces: list[Any] = []
    for at in range(0, len(text), size):
        pieces += splitter.feed(text[at : at + size])
    pieces += splitter.finish()
    prose = "".join(p for p in pieces if isinstance(p, str))
    calls = [p for p in pieces if isinstance(p, ParsedCall)]
    assert prose == "Checking <tool weather>.\n done"
    assert [(c.name, c.args) for c in calls] == [("get_weather", {"city": "Paris"})]
    # A marker's first characters are held back, never shown as prose.
    assert not any(isinstance(p, str) and "<tool_c" in p for p in pieces)


def test_forced_schema_names_each_tool() -> None:
    parser = HermesToolCallParser()
    tools = [{"type": "function", "function": {"name": n, "parameters": {"type": "object"}}}
             for n in ("a", "b")]  # fmt: skip
    forced = parser.forced(tools)
    assert forced.prefix == "<tool_call>\n"
    assert forced.suffix == "\n</tool_call>"
    names = [o["properties"]["name"]["enum"] for o in forced.schema["anyOf"]]
    assert names == [["a"], ["b"]]
    assert parser.forced(tools[:1]).schema["properties"]["name"]["enum"] == ["a"]


# -- through the router ---------------------------------------------------------------------------


def test_a_call_in_the_answer_becomes_tool_calls(servers: Servers) -> None:
    small, large = _pair(servers, CALL)
    router = router_for(small, large).bind_tools([get_weather])
    message = router.invoke("Weather in Paris?")
    assert isinstance(message, AIMessage)
    assert message.content == ""
    assert [(c["name"], c["args"]) for c in message.tool_calls] == [
        ("get_weather", {"city": "Paris"})
    ]
    assert message.response_metadata["glimprouter"]["n_steps"] == 4
    blocks = [b["type"] for b in message.content_blocks]
    assert blocks == ["reasoning", "tool_call"]


def test_streamed_tool_call_chunks_add_up_to_the_same_calls(servers: Servers) -> None:
    small, large = _pair(servers, f"Let me look.\n{CALL}")
    router = router_for(small, large).bind_tools([get_weather])
    full: AIMessageChunk | None = None
    with_calls = 0
    for chunk in router.stream("Weather in Paris?"):
        assert isinstance(chunk, AIMessageChunk)
        with_calls += bool(chunk.tool_call_chunks)
        full = chunk if full is None else full + chunk
    assert full is not None
    assert with_calls == 1
    assert full.content == "Let me look.\n"
    assert [(c["name"], c["args"]) for c in full.tool_calls] == [("get_weather", {"city": "Paris"})]
    assert full.response_metadata["glimprouter"]["n_steps"] == 4


def test_invalid_call_text_is_kept_not_raised(servers: Servers) -> None:
    small, large = _pair(servers, "Here: <tool_call>\nget_weather(Paris)\n</tool_call>")
    message = router_for(small, large).bind_tools([get_weather]).invoke("Weather?")
    assert isinstance(message, AIMessage)
    assert message.tool_calls == []
    assert message.invalid_tool_calls[0]["args"] == "<tool_call>\nget_weather(Paris)\n</tool_call>"
    assert message.content == "Here:"


def test_tools_reach_both_prompts_even_when_the_template_ignores_them(servers: Servers) -> None:
    small, large = _pair(servers, "It is sunny.")
    message = router_for(small, large).bind_tools([get_weather]).invoke("Weather?")
    assert message.content == "It is sunny."
    for server in (small, large):
        prompt = server.requests[0].prompt
        assert "<tools>" in prompt
        assert '"name": "get_weather"' in prompt
        assert prompt.index("<tools>") < prompt.index("Weather?")


def test_a_template_that_renders_tools_gets_them_as_tools(servers: Servers) -> None:
    small, large = _pair(servers, "It is sunny.")
    router = GlimpRouterChatModel(
        small=Backend(base_url=small.base_url, model="small-m", chat_template=QWEN_LIKE),
        large=Backend(base_url=large.base_url, model="large-m", chat_template=QWEN_LIKE),
        threshold=1.0,
    )
    history = [
        HumanMessage("Weather in Paris?"),
        AIMessage("", tool_calls=[{"name": "get_weather", "args": {"city": "Paris"}, "id": "c1"}]),
        ToolMessage("Sunny in Paris", tool_call_id="c1"),
    ]
    router.bind_tools([get_weather]).invoke(history)
    prompt = large.requests[0].prompt
    assert "TOOLS: get_weather" in prompt
    assert "CALL get_weather Paris" in prompt  # arguments reach Jinja as an object
    assert "<tools>" not in prompt


def test_a_tool_result_round_trip_renders_the_call_and_the_result(servers: Servers) -> None:
    small, large = _pair(servers, "It is sunny in Paris.")
    router = router_for(small, large).bind_tools([get_weather])
    history = [
        HumanMessage("Weather in Paris?"),
        AIMessage("", tool_calls=[{"name": "get_weather", "args": {"city": "Paris"}, "id": "c1"}]),
        ToolMessage("Sunny in Paris", tool_call_id="c1"),
    ]
    message = router.invoke(history)
    assert message.content == "It is sunny in Paris."
    prompt = large.requests[0].prompt
    assert '{"name": "get_weather", "arguments": {"city": "Paris"}}' in prompt
    assert "<tool_response>\nSunny in Paris\n</tool_response>" in prompt


def test_a_forced_call_constrains_only_the_answer(servers: Servers) -> None:
    answer = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}} and more text'
    small, large = _pair(servers, answer)
    router = router_for(small, large).bind_tools([get_weather, get_time], tool_choice="any")
    message = router.invoke("Weather in Oslo?")
    assert isinstance(message, AIMessage)
    assert [(c["name"], c["args"]) for c in message.tool_calls] == [
        ("get_weather", {"city": "Oslo"})
    ]
    constrained = [r for r in large.requests if "structured_outputs" in r.params]
    assert len(constrained) == 1
    assert constrained[0] is large.requests[-1]
    assert constrained[0].prompt.endswith("</think>\n\n<tool_call>\n")
    options = constrained[0].params["structured_outputs"]["json"]["anyOf"]
    assert [o["properties"]["name"]["enum"] for o in options] == [["get_weather"], ["get_time"]]
    assert not any("structured_outputs" in r.params for r in small.requests)


def test_a_named_tool_choice_forces_that_tool(servers: Servers) -> None:
    small, large = _pair(servers, '<tool_call>\n{"name": "get_time", "arguments": {"zone": "UTC"}}')
    router = router_for(small, large).bind_tools(
        [get_weather, get_time], tool_choice={"type": "function", "function": {"name": "get_time"}}
    )
    message = router.invoke("Time?")
    assert isinstance(message, AIMessage)
    assert message.tool_calls[0]["name"] == "get_time"
    schema = large.requests[-1].params["structured_outputs"]["json"]
    assert schema["properties"]["name"]["enum"] == ["get_time"]


def test_tool_choice_none_shows_tools_but_does_not_parse(servers: Servers) -> None:
    small, large = _pair(servers, CALL)
    message = router_for(small, large).bind_tools([get_weather], tool_choice="none").invoke("W?")
    assert message.content == CALL
    assert isinstance(message, AIMessage)
    assert message.tool_calls == []


@pytest.mark.parametrize(
    ("tools", "choice", "says"),
    [([get_weather], "get_time", "names no bound tool"), ([], "any", "needs tools")],
)
def test_bad_tool_choice_is_refused_before_any_request(
    servers: Servers, tools: list[Any], choice: str, says: str
) -> None:
    small, large = _pair(servers, CALL)
    with pytest.raises(InvalidArgumentError, match=says):
        router_for(small, large).bind_tools(tools, tool_choice=choice)
    assert small.requests == []
    assert large.requests == []


# -- structured output ----------------------------------------------------------------------------


class Weather(BaseModel):
    """A weather report."""

    city: str = Field(description="the city")
    degrees: int


class WeatherDict(TypedDict):
    """A weather report."""

    city: str
    degrees: int


REPORT = '{"city": "Oslo", "degrees": 4}'


@pytest.mark.parametrize("schema", [Weather, WeatherDict, Weather.model_json_schema()])
def test_json_schema_output_parses_the_constrained_answer(servers: Servers, schema: Any) -> None:
    small, large = _pair(servers, REPORT + " trailing words")
    out = router_for(small, large).with_structured_output(schema).invoke("Weather in Oslo?")
    expected = {"city": "Oslo", "degrees": 4}
    assert (out.model_dump() if isinstance(out, Weather) else out) == expected
    sent = large.requests[-1].params["structured_outputs"]["json"]
    assert sent["properties"].keys() == {"city", "degrees"}


def test_function_calling_output_and_the_raw_message(servers: Servers) -> None:
    call = json.dumps({"name": "Weather", "arguments": {"city": "Oslo", "degrees": 4}})
    small, large = _pair(servers, f"<tool_call>\n{call}")
    router = router_for(small, large)
    out = router.with_structured_output(Weather, method="function_calling", include_raw=True)
    result = out.invoke("Weather in Oslo?")
    assert result["parsed"] == Weather(city="Oslo", degrees=4)
    assert result["parsing_error"] is None
    assert result["raw"].response_metadata["glimprouter"]["n_steps"] == 4


def test_json_mode_and_a_parsing_error_with_include_raw(servers: Servers) -> None:
    small, large = _pair(servers, '{"town": "Oslo"}')
    router = router_for(small, large)
    result = router.with_structured_output(Weather, method="json_mode", include_raw=True).invoke(
        "Weather in Oslo? Answer in JSON."
    )
    assert result["parsed"] is None
    assert result["parsing_error"] is not None
    assert large.requests[-1].params["structured_outputs"]["json"] == {"type": "object"}


def test_structured_output_arguments_are_checked(servers: Servers) -> None:
    small, large = _pair(servers, REPORT)
    router = router_for(small, large)
    with pytest.raises(InvalidArgumentError, match="method"):
        router.with_structured_output(Weather, method="xml")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="needs a schema"):
        router.with_structured_output(None)
    bad = router.bind(response_format={"type": "text"})
    with pytest.raises(InvalidArgumentError, match="response_format"):
        bad.invoke("x")


def test_invalid_call_ids_are_unique() -> None:
    parser = HermesToolCallParser()
    first, second = parser.parse_call("x"), parser.parse_call("x")
    assert isinstance(first, InvalidCall)
    assert isinstance(second, InvalidCall)
    assert first.id != second.id


def test_v1_content_blocks_keep_prose_reasoning_and_each_call_apart(servers: Servers) -> None:
    second = CALL.replace("Paris", "Rome")
    small, large = _pair(servers, f"Two calls.\n{CALL}\n{second}\nDone.")
    router = router_for(small, large, output_version="v1").bind_tools([get_weather])
    full: AIMessageChunk | None = None
    for chunk in router.stream("Weather in Paris and Rome?"):
        assert isinstance(chunk, AIMessageChunk)
        full = chunk if full is None else full + chunk
    assert full is not None
    blocks = full.content_blocks
    kinds = [b["type"] for b in blocks if b["type"] != "text" or b["text"].strip()]
    assert kinds == ["reasoning", "text", "tool_call", "tool_call", "text"]
    assert "".join(b["text"] for b in blocks if b["type"] == "text") == "Two calls.\n\n\nDone."
    cities = [c["args"]["city"] for c in full.tool_calls]
    assert cities == ["Paris", "Rome"]


def test_tools_are_inlined_even_when_the_question_names_them(servers: Servers) -> None:
    small, large = _pair(servers, "It is sunny.")
    router_for(small, large).bind_tools([get_weather]).invoke("Ask get_weather about Paris.")
    for server in (small, large):
        assert "<tools>" in server.requests[0].prompt
