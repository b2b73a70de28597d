"""The proxy's Responses API (``POST /v1/responses``) on the fake servers, with no socket: the
output items, usage and record, the stream's events in order, tools, text formats, the mapping
of a request onto the chat request the Router runs, and the refusals of what needs state."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from langchain_glimprouter.proxy import create_app
from scripted_server import Faults
from tests.support.proxy import (
    ANSWER_SCHEMA,
    CALL,
    FLAT_WEATHER_TOOL,
    JSON_ANSWER,
    QUESTION,
    REASONING,
    WEATHER_TOOL,
    answering,
    asgi_client,
    proxy_router,
    responses_tool_loop,
    sse_payloads,
)

EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)


async def post(app: Any, path: str = "/v1/responses", **body: Any) -> Any:
    async with asgi_client(app) as client:
        return await client.post(path, json={"model": "glimprouter", **body})


def make_app(servers: Any, answer: str = "The answer is 42.", **settings: Any) -> Any:
    small, large = servers(**answering(answer))
    return create_app(proxy_router(small, large, **settings))


def kinds(events: list[dict[str, Any]]) -> list[str]:
    """The event types in order, a run of deltas (and steps among them) as one."""
    out: list[str] = []
    for event in events:
        kind = event["type"]
        if kind == "glimprouter.step":
            continue
        if not (kind.endswith(".delta") and out and out[-1] == kind):
            out.append(kind)
    return out


async def test_a_response_has_the_chain_the_answer_usage_and_the_record(servers: Any) -> None:
    response = await post(make_app(servers), input="What is 6 times 7?")
    assert response.status_code == 200, response.text
    body = response.json()
    Response.model_validate(body)  # the openai SDK's own model, strictly
    assert (body["object"], body["status"], body["model"]) == (
        "response",
        "completed",
        "glimprouter",
    )
    reasoning, message = body["output"]
    assert reasoning["type"] == "reasoning"
    assert reasoning["summary"] == []
    assert reasoning["content"] == [{"type": "reasoning_text", "text": REASONING}]
    assert message["type"] == "message"
    assert message["role"] == "assistant"
    assert message["content"][0]["type"] == "output_text"
    assert message["content"][0]["text"] == "The answer is 42."
    usage = body["usage"]
    assert 0 < usage["output_tokens_details"]["reasoning_tokens"] < usage["output_tokens"]
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert [s["model"] for s in body["glimprouter"]["steps"]] == ["small", "large"] * 2
    assert body["id"].startswith("resp_")


async def test_a_stream_sends_the_responses_events_in_order(servers: Any) -> None:
    response = await post(make_app(servers), input="What is 6 times 7?", stream=True)
    assert response.headers["content-type"].startswith("text/event-stream")
    assert "event: response.created\n" in response.text
    events = sse_payloads(response.text)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert kinds(events) == [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.content_part.added",  # the reasoning item
        "response.reasoning_text.delta", "response.reasoning_text.done",
        "response.content_part.done", "response.output_item.done",
        "response.output_item.added", "response.content_part.added",  # the message
        "response.output_text.delta", "response.output_text.done",
        "response.content_part.done", "response.output_item.done",
        "response.completed",
    ]  # fmt: skip
    for event in events:
        if event["type"] != "glimprouter.step":
            EVENTS.validate_python(event)  # each is one of the SDK's event types, strictly
    steps = [e["step"]["model"] for e in events if e["type"] == "glimprouter.step"]
    assert steps == ["small", "large"] * 2
    chain = "".join(e["delta"] for e in events if e["type"] == "response.reasoning_text.delta")
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert (chain, text) == (REASONING, "The answer is 42.")
    whole = events[-1]["response"]
    assert whole["output"][0]["content"][0]["text"] == REASONING
    assert whole["glimprouter"]["n_steps"] == 4
    assert events[0]["response"]["id"] == whole["id"]
    added = [e["item"]["id"] for e in events if e["type"] == "response.output_item.added"]
    assert added == [item["id"] for item in whole["output"]]


async def test_a_call_is_a_function_call_item(servers: Any) -> None:
    app = make_app(servers, f"Let me look.\n{CALL}")
    response = await post(app, input="Weather in Paris?", tools=[FLAT_WEATHER_TOOL])
    body = response.json()
    Response.model_validate(body)
    assert [item["type"] for item in body["output"]] == ["reasoning", "message", "function_call"]
    assert body["output"][1]["content"][0]["text"] == "Let me look.\n"
    call = body["output"][2]
    assert (call["name"], json.loads(call["arguments"])) == ("get_weather", {"city": "Paris"})
    assert call["call_id"].startswith("call_")
    assert call["id"].startswith("fc_")
    streamed = await post(app, input="Weather in Paris?", tools=[FLAT_WEATHER_TOOL], stream=True)
    events = sse_payloads(streamed.text)
    assert kinds(events)[-6:] == [
        "response.output_item.done",  # the message's
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done",
        "response.completed",
    ]  # fmt: skip
    final = events[-1]["response"]["output"][2]
    assert json.loads(final["arguments"]) == {"city": "Paris"}


async def test_a_forced_call_and_call_text_that_does_not_parse(servers: Any) -> None:
    app = make_app(servers, CALL)
    forced = await post(app, input="Weather?", tools=[FLAT_WEATHER_TOOL],
                        tool_choice={"type": "function", "name": "get_weather"})  # fmt: skip
    assert [i["type"] for i in forced.json()["output"]] == ["reasoning", "function_call"]
    broken = "<tool_call>\nnot json\n</tool_call>"
    response = await post(make_app(servers, broken), input="Weather?", tools=[FLAT_WEATHER_TOOL])
    output = response.json()["output"]
    assert [i["type"] for i in output] == ["reasoning", "message"]
    assert output[1]["content"][0]["text"] == broken


async def test_text_format_constrains_the_answer(servers: Any) -> None:
    schema = ANSWER_SCHEMA["json_schema"]
    form = {"type": "json_schema", **schema}  # type: ignore[dict-item]
    response = await post(make_app(servers, JSON_ANSWER), input="Legs?", text={"format": form})
    body = response.json()
    assert json.loads(body["output"][1]["content"][0]["text"]) == {"value": 24, "unit": "legs"}
    assert body["text"]["format"]["type"] == "json_schema"


async def test_the_budget_cuts_the_answer_incomplete(servers: Any) -> None:
    small, large = servers(**answering("The answer is 42."))
    app = create_app(proxy_router(small, large))
    response = await post(app, input="Q?", max_output_tokens=3, temperature=0.2, top_p=0.5)
    body = response.json()
    assert body["status"] == "incomplete"
    assert body["incomplete_details"] == {"reason": "max_output_tokens"}
    answer = large.requests[-1].params
    assert (answer["max_tokens"], answer["temperature"], answer["top_p"]) == (3, 0.2, 0.5)
    streamed = sse_payloads((await post(app, input="Q?", max_output_tokens=3, stream=True)).text)
    assert streamed[-1]["type"] == "response.incomplete"


async def prompts_of(servers: Any, path: str, **body: Any) -> tuple[Any, list[str]]:
    small, large = servers(**answering("The answer is 42."))
    response = await post(create_app(proxy_router(small, large)), path, **body)
    assert response.status_code == 200, response.text
    return response, [r.prompt for r in (*small.requests, *large.requests)]


async def test_input_items_are_the_chat_messages(servers: Any) -> None:
    """instructions, messages with text parts, a passed-back reasoning item (left out),
    function_call and function_call_output items reach the servers as chat's messages do."""
    parts = [
        {"type": "input_text", "text": "Weather in "},
        {"type": "input_text", "text": "Paris?"},
    ]
    loop = responses_tool_loop()
    loop[0] = {"type": "message", "role": "user", "content": parts}
    _, prompts = await prompts_of(
        servers, "/v1/responses", instructions="Be brief.", input=loop, tools=[FLAT_WEATHER_TOOL]
    )
    call = {"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}  # fmt: skip
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 24 C"},
    ]
    _, expected = await prompts_of(
        servers, "/v1/chat/completions", messages=messages, tools=[WEATHER_TOOL]
    )
    assert prompts == expected
    assert "THOUGHT" not in "".join(prompts)
    text = [{"role": "assistant", "content": [{"type": "output_text", "text": "Hi."}]}]
    _, prompts = await prompts_of(servers, "/v1/responses", input=[*text, *QUESTION])
    _, expected = await prompts_of(
        servers,
        "/v1/chat/completions",
        messages=[{"role": "assistant", "content": "Hi."}, *QUESTION],
    )
    assert prompts == expected


async def test_accepted_and_ignored_fields(servers: Any) -> None:
    """What the openai SDK, the Agents SDK and ChatOpenAI send besides."""
    small, large = servers()
    app = create_app(proxy_router(small, large), client_settings="threshold")
    response = await post(
        app, input=QUESTION, store=False, include=["reasoning.encrypted_content"],
        parallel_tool_calls=True, truncation="disabled", metadata={"a": "b"}, user="u",
        reasoning={"effort": "low"}, stream_options={"include_obfuscation": False},
        previous_response_id=None, threshold=0,
    )  # fmt: skip
    assert response.status_code == 200, response.text
    record = response.json()["glimprouter"]
    assert record["n_large_steps"] == record["n_steps"]  # the router setting holds


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"previous_response_id": "resp_1"}, "previous_response_id", "stateless"),
        ({"store": True}, "store", "stateless"),
        ({"background": True}, "background", "stateless"),
        ({"conversation": "conv_1"}, "conversation", "stateless"),
        ({"tools": [{"type": "web_search"}]}, "tools", "built-in tool"),
        ({"tools": [{"type": "file_search", "vector_store_ids": []}]}, "tools", "built-in"),
        ({"tool_choice": {"type": "computer_use_preview"}}, "tool_choice", "built-in"),
        ({"input": [{"type": "item_reference", "id": "x"}]}, "input", "stateless"),
        ({"input": [{"type": "computer_call_output", "call_id": "c"}]}, "input", "built-in"),
        ({"input": [{"role": "user", "content": [{"type": "input_image"}]}]}, "input", "text"),
        ({"max_tool_calls": 2}, "max_tool_calls", "unsupported"),
        ({"text": {"format": {"type": "xml"}}}, "text", "text.format"),
        ({"model": "other"}, "model", "does not exist"),
        ({"max_output_tokens": -1}, "max_output_tokens", "max_tokens"),
        ({"temperature": -5}, "temperature", "greater than or equal to 0"),
        ({"temperature": "NaN"}, "temperature", "finite"),
        ({"top_p": 5}, "top_p", "less than or equal to 1"),
        ({"top_p": 0}, "top_p", "greater than 0"),
        ({"seed": 2**70}, "seed", "less than or equal to 9223372036854775807"),
    ],
)
async def test_what_needs_state_or_is_wrong_is_refused(
    servers: Any, body: dict[str, Any], param: str, words: str
) -> None:
    response = await post(make_app(servers), **{"input": "Q?", **body})
    assert 400 <= response.status_code < 500, response.text
    error = response.json()["error"]
    assert error["param"] == param
    assert words in error["message"]


async def test_the_key_metrics_and_errors_are_chat_completions(servers: Any) -> None:
    small, large = servers(**answering("The answer is 42."))
    app = create_app(proxy_router(small, large), api_key="k")
    assert (await post(app, input="Q?")).status_code == 401
    async with asgi_client(app) as client:
        headers = {"Authorization": "Bearer k"}
        ok = await client.post("/v1/responses", json={"model": "glimprouter", "input": "Q?"},
                               headers=headers)  # fmt: skip
        assert ok.status_code == 200
        metrics = (await client.get("/metrics", headers=headers)).text
    assert 'glimprouter_proxy_requests_total{status="200",stream="false"} 1.0' in metrics
    assert 'glimprouter_proxy_errors_total{type="invalid_api_key"} 1.0' in metrics


async def test_a_failure_after_the_start_is_response_failed(servers: Any) -> None:
    small, large = servers(**answering("The answer is 42."))
    large.faults = Faults(cut_after=2, cut_count=9)  # the first large step breaks
    app = create_app(proxy_router(small, large, max_retries=0))
    events = sse_payloads((await post(app, input="Q?", stream=True)).text)
    assert events[-1]["type"] == "response.failed"
    error = events[-1]["response"]["error"]
    assert (error["code"], error["glimprouter_code"]) == ("server_error", "stream_interrupted")
    assert (error["type"], error["param"]) == ("server_error", None)
    assert "backend at" not in error["message"]  # the URL stays in the proxy's log
    assert "(request req_" in error["message"]
    assert events[-1]["response"]["output"][0]["type"] == "reasoning"
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    EVENTS.validate_python(events[-1])  # the openai SDK's own type: OpenAI's error codes


async def test_reasoning_effort_sets_the_reasoning_budget(servers: Any) -> None:
    """``reasoning.effort`` maps to a reasoning budget through the operator's table, as chat
    completions' ``reasoning_effort`` does."""
    small, large = servers(**answering("The answer is 42."))
    app = create_app(proxy_router(small, large), reasoning_effort_budgets={"low": 3})
    response = await post(app, input="Q?", reasoning={"effort": "low"})
    assert response.status_code == 200, response.text
    record = response.json()["glimprouter"]
    assert record["reasoning_tokens"] <= 3  # the scripted chain runs far longer
    assert record["chain_end"] == "budget"
    unknown = await post(app, input="Q?", reasoning={"effort": "high"})
    assert unknown.status_code == 400
    assert unknown.json()["error"]["param"] == "reasoning.effort"
