"""The proxy's chat completions on the fake servers, with no socket: plain and streamed answers,
tools, structured output, per-request settings and the checks of a request."""

from __future__ import annotations

import json
from typing import Any

import httpx2
import openai
import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from langchain_glimprouter.core.settings import SETTING_NAMES
from langchain_glimprouter.proxy import create_app
from langchain_glimprouter.proxy.chat_request import ChatCompletionRequest
from tests.support.pair import RENDERS_PAST_REASONING, router_for
from tests.support.proxy import (
    ANSWER_SCHEMA,
    CALL,
    JSON_ANSWER,
    QUESTION,
    REASONING,
    WEATHER_TOOL,
    answering,
    asgi_client,
    deltas,
    proxy_router,
    sse_payloads,
)

Q = json.dumps(QUESTION)
IMAGE = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}


async def post(app: Any, **body: Any) -> Any:
    async with asgi_client(app) as client:
        return await client.post("/v1/chat/completions", json={"model": "glimprouter", **body})


@pytest.fixture
def app(servers: Any) -> Any:
    small, large = servers()
    return create_app(proxy_router(small, large))


@pytest.fixture
def open_app(servers: Any) -> Any:
    """An app whose operator lets clients set every router setting (the router's own checks
    of a value then answer)."""
    small, large = servers()
    return create_app(proxy_router(small, large), client_settings="all")


async def test_a_plain_completion_has_the_chain_the_answer_usage_and_the_record(app: Any) -> None:
    response = await post(app, messages=QUESTION)
    assert response.status_code == 200
    body = response.json()
    message = body["choices"][0]["message"]
    assert message["content"] == "The answer is 42."
    assert message["reasoning_content"] == message["reasoning"] == REASONING
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["object"] == "chat.completion"
    assert body["model"] == "glimprouter"
    record = body["glimprouter"]
    assert [s["model"] for s in record["steps"]] == ["small", "large", "small", "large"]
    usage = body["usage"]
    reasoning = usage["completion_tokens_details"]["reasoning_tokens"]
    assert 0 < reasoning < usage["completion_tokens"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert response.headers["x-glimprouter-steps"] == "4"
    assert response.headers["x-glimprouter-large-steps"] == "2"
    assert response.headers["x-glimprouter-intervention-rate"] == "0.5"


@pytest.mark.parametrize("include_usage", [False, True])
async def test_a_stream_sends_the_chain_each_step_and_the_record_last(
    app: Any, include_usage: bool
) -> None:
    options = {"include_usage": include_usage}
    response = await post(app, messages=QUESTION, stream=True, stream_options=options)
    assert response.headers["content-type"].startswith("text/event-stream")
    payloads = sse_payloads(response.text)
    assert payloads[-1] == "[DONE]"
    chunks = payloads[:-1]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert {c["id"] for c in chunks} == {chunks[0]["id"]}
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert deltas(chunks, "reasoning_content") == deltas(chunks, "reasoning") == REASONING
    assert deltas(chunks, "content") == "The answer is 42."
    steps = [c["glimprouter"]["step"] for c in chunks if "step" in c.get("glimprouter", {})]
    assert [(s["index"], s["model"]) for s in steps] == list(
        enumerate(["small", "large", "small", "large"])
    )
    assert all(c["choices"] == [] for c in chunks if "step" in c.get("glimprouter", {}))
    finish = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert [c["choices"][0]["finish_reason"] for c in finish] == ["stop"]
    last = chunks[-1]
    assert last["glimprouter"]["steps"] == steps
    usage = [c["usage"] for c in chunks if c.get("usage")]
    if include_usage:
        assert last["choices"] == []
        assert usage == [last["usage"]]
        assert usage[0]["completion_tokens_details"]["reasoning_tokens"] > 0
    else:
        assert last is finish[0]
        assert usage == []


@pytest.mark.parametrize("stream", [False, True])
async def test_tool_calls_come_back_parsed(servers: Any, stream: bool) -> None:
    small, large = servers(**answering(f"Let me look.\n{CALL}"))
    app = create_app(proxy_router(small, large))
    response = await post(app, messages=QUESTION, tools=[WEATHER_TOOL], stream=stream)
    if stream:
        chunks = sse_payloads(response.text)[:-1]
        calls = [
            d
            for c in chunks
            if c["choices"]
            for d in c["choices"][0]["delta"].get("tool_calls", [])
        ]
        assert [c["index"] for c in calls] == [0]
        finish = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
        assert finish[-1] == "tool_calls"
        content = deltas(chunks, "content")
    else:
        choice = response.json()["choices"][0]
        calls, content = choice["message"]["tool_calls"], choice["message"]["content"]
        assert choice["finish_reason"] == "tool_calls"
    assert content.strip() == "Let me look."
    assert calls[0]["id"].startswith("call_")
    assert calls[0]["type"] == "function"
    assert calls[0]["function"]["name"] == "get_weather"
    assert json.loads(calls[0]["function"]["arguments"]) == {"city": "Paris"}
    assert "structured_outputs" not in large.requests[-1].params  # "auto": no constraint


@pytest.mark.parametrize(
    "choice", ["required", {"type": "function", "function": {"name": "get_weather"}}]
)
async def test_a_forced_tool_choice_constrains_the_answer(servers: Any, choice: Any) -> None:
    small, large = servers(**answering(CALL))
    app = create_app(proxy_router(small, large))
    response = await post(app, messages=QUESTION, tools=[WEATHER_TOOL], tool_choice=choice)
    message = response.json()["choices"][0]["message"]
    assert message["content"] is None
    assert json.loads(message["tool_calls"][0]["function"]["arguments"]) == {"city": "Paris"}
    schema = large.requests[-1].params["structured_outputs"]["json"]
    assert schema["properties"]["name"]["enum"] == ["get_weather"]


@pytest.mark.parametrize(
    ("form", "sent"),
    [(ANSWER_SCHEMA, ANSWER_SCHEMA["json_schema"]["schema"]), ({"type": "json_object"}, None)],
)
async def test_response_format_constrains_the_answer(servers: Any, form: Any, sent: Any) -> None:
    small, large = servers(**answering(JSON_ANSWER + " and some prose"))
    app = create_app(proxy_router(small, large))
    response = await post(app, messages=QUESTION, response_format=form)
    assert json.loads(response.json()["choices"][0]["message"]["content"]) == {
        "value": 24,
        "unit": "legs",
    }
    assert large.requests[-1].params["structured_outputs"]["json"] == (sent or {"type": "object"})


async def test_history_with_tool_calls_reaches_the_servers_as_from_the_chat_model(
    servers: Any,
) -> None:
    small, large = servers()
    router = router_for(small, large)
    history = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 24 C"},
    ]  # fmt: skip
    await post(create_app(router), messages=history, tools=[WEATHER_TOOL])
    proxied = [r.prompt for r in large.requests]
    large.reset()
    called = {"name": "get_weather", "args": {"city": "Paris"}, "id": "call_1"}
    router.bind_tools([WEATHER_TOOL]).invoke(
        [
            HumanMessage("Weather in Paris?"),
            AIMessage("", tool_calls=[called]),
            ToolMessage("Sunny, 24 C", tool_call_id="call_1"),
        ]
    )
    assert proxied == [r.prompt for r in large.requests]
    assert "Sunny, 24 C" in proxied[0]


@pytest.mark.parametrize("key", ["reasoning_content", "reasoning"])
async def test_a_past_turns_reasoning_is_not_resent_under_either_key(
    servers: Any, key: str
) -> None:
    """An assistant message's chain (vLLM's name, or DeepSeek's) stays out of the prompt, as the
    Qwen3 and DeepSeek-R1 templates leave it out; its answer goes in."""
    small, large = servers(chat_template=RENDERS_PAST_REASONING)
    past = {"role": "assistant", "content": "First answer.", key: "THOUGHT OF THE FIRST TURN"}
    history = [{"role": "user", "content": "First question?"}, past, *QUESTION]
    response = await post(create_app(proxy_router(small, large)), messages=history)
    assert response.status_code == 200, response.text
    for server in (small, large):
        prompt = server.requests[0].prompt
        assert "First answer." in prompt
        assert "THOUGHT" not in prompt


async def test_openai_fields_and_router_settings_reach_the_router(servers: Any) -> None:
    small, large = servers()
    app = create_app(proxy_router(small, large), client_settings="threshold")
    response = await post(
        app, messages=QUESTION, threshold=0, max_completion_tokens=3, temperature=0.2,
        top_p=0.5, seed=7, stop=["never"], user="u", n=1, parallel_tool_calls=True,
        frequency_penalty=0, metadata={"a": "b"}, store=False, logprobs=False,
    )  # fmt: skip
    assert response.status_code == 200, response.text
    record = response.json()["glimprouter"]
    assert record["n_large_steps"] == record["n_steps"]  # threshold 0: every step large
    answer = large.requests[-1].params
    assert (answer["max_tokens"], answer["temperature"], answer["top_p"]) == (3, 0.2, 0.5)
    assert (answer["seed"], answer["stop"]) == (7, ["never"])
    assert response.json()["choices"][0]["finish_reason"] == "length"


async def test_a_null_field_is_one_not_given(servers: Any) -> None:
    """As OpenAI's API reads it, a field sent as null is one not sent: the router's own setting
    holds (model and messages stay required, see below)."""
    small, large = servers()
    app = create_app(proxy_router(small, large))
    plain = await post(app, messages=QUESTION)
    sent = [r.params for r in (*small.requests, *large.requests)]
    small.reset(), large.reset()
    fields = {*ChatCompletionRequest.model_fields, *SETTING_NAMES, "logit_bias"}
    optional = fields - {"model", "messages"}
    nulls = await post(app, messages=QUESTION, **dict.fromkeys(optional))
    assert nulls.status_code == 200, nulls.text
    assert [r.params for r in (*small.requests, *large.requests)] == sent
    assert nulls.json()["choices"] == plain.json()["choices"]


@pytest.mark.parametrize(
    ("fields", "status", "words", "param"),
    [
        ({"threshold": -1}, 400, "threshold must be >= 0", "threshold"),
        ({"threshold": "abc"}, 400, "threshold='abc'", "threshold"),
        ({"threshold": "auto"}, 400, "needs a router built with threshold='auto'", "threshold"),
        ({"probe": "fast"}, 400, "probe='fast'", "probe"),
        ({"strategy": "bogus"}, 400, "strategy='bogus'", "strategy"),
        ({"target_rate": 0.3}, 400, "target_rate is used only", "target_rate"),
        ({"max_reasoning_tokens": 0}, 400, "must be positive", "max_reasoning_tokens"),
        ({"max_tokens": -1}, 400, "must be positive", "max_tokens"),
        ({"max_completion_tokens": -1}, 400, "must be positive", "max_completion_tokens"),
        ({"max_completion_tokens": "x"}, 400, "valid integer", "max_completion_tokens"),
        ({"top_logprobs": 5}, 400, "does not offer", "top_logprobs"),
        ({"step_delimiter": ""}, 400, "step_delimiter must not be empty", "step_delimiter"),
        ({"api_key": "x"}, 400, "unsupported fields ['api_key']", "api_key"),
        ({"logit_bias": {"1": 2}}, 400, "unsupported fields ['logit_bias']", "logit_bias"),
        ({"logprobs": True}, 400, "logprobs are not offered", "logprobs"),
        (
            {"presence_penalty": 2.5},
            400,
            "presence_penalty must be a number in [-2, 2]",
            "presence_penalty",
        ),
        ({"n": 2}, 400, "n=2: the glimprouter proxy answers one choice", "n"),
        ({"n": 0}, 400, "n=0", "n"),
        ({"temperature": -5}, 400, "temperature must be a number in [0, 2]", "temperature"),
        ({"temperature": "NaN"}, 400, "temperature must be", "temperature"),
        ({"temperature": "inf"}, 400, "temperature must be", "temperature"),
        ({"top_p": 5}, 400, "top_p must be a number in (0, 1]", "top_p"),
        ({"top_p": 0}, 400, "top_p must be", "top_p"),
        ({"top_p": "-Infinity"}, 400, "top_p must be", "top_p"),
        ({"seed": 2**70}, 400, "seed must be an integer in", "seed"),
        ({"seed": 1.5}, 400, "seed must be", "seed"),
        ({"top_k": -2}, 400, "top_k must be", "top_k"),
        ({"stop": ""}, 400, "stop cannot contain an empty string", "stop"),
        ({"stop": ["end", ""]}, 400, "stop cannot contain an empty string", "stop"),
        ({"tools": []}, 400, "tools must not be an empty array", "tools"),
        ({"top_k": "x"}, 400, "top_k must be", "top_k"),
        ({"min_p": 1.5}, 400, "min_p must be", "min_p"),
        ({"repetition_penalty": 0}, 400, "repetition_penalty must be", "repetition_penalty"),
        ({"frequency_penalty": -3}, 400, "frequency_penalty must be", "frequency_penalty"),
        (
            {"chat_template_kwargs": [1]},
            400,
            "chat_template_kwargs must be",
            "chat_template_kwargs",
        ),
        (
            {"reasoning_effort": "extreme"},
            400,
            "not one of this proxy's levels",
            "reasoning_effort",
        ),
        ({"reasoning_effort": 3}, 400, "reasoning_effort must be", "reasoning_effort"),
        ({"threshold": "NaN"}, 400, "threshold must be >= 0", "threshold"),
        ({"model": "gpt-4o"}, 404, "'gpt-4o' does not exist", "model"),
        ({"model": None}, 400, "model is required", "model"),
        ({"messages": None}, 400, "messages must be a non-empty list", "messages"),
        ({"messages": []}, 400, "messages must be a non-empty list", "messages"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, 400, "role must be", "messages"),
        ({"messages": [IMAGE]}, 400, "takes text only", "messages"),
        ({"stop": [1]}, 400, "stop must be", "stop"),
        ({"stream": 0}, 400, "stream must be a boolean", "stream"),
        ({"stream_options": []}, 400, "stream_options must be an object", "stream_options"),
        ({"tools": [{"name": "f"}]}, 400, "tools must be a list of", "tools"),
        ({"tools": [{"type": "function"}]}, 400, "tools must be a list of", "tools"),
        ({"tool_choice": "required"}, 400, "needs tools", "tool_choice"),
        ({"tools": [WEATHER_TOOL], "tool_choice": "f"}, 400, "names no bound", "tool_choice"),
        ({"response_format": {"type": "xml"}}, 400, "response_format must be", "response_format"),
        ({"messages": [{"role": "user", "content": 5}]}, 400, "messages[0].content:", "messages"),
        ({"messages": [{"content": "x"}]}, 400, "messages[0].role: Field required", "messages"),
        ({"tools": [1]}, 400, "tools must be a list of", "tools"),
        (
            {"tools": [WEATHER_TOOL], "tool_choice": {"type": "function"}},
            400,
            "tool_choice.function: Field required",
            "tool_choice",
        ),
        (
            {"response_format": {"type": "json_schema", "json_schema": "bad"}},
            400,
            "response_format.json_schema:",
            "response_format",
        ),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "A"}}},
            400,
            "response_format.json_schema.schema: Field required",
            "response_format",
        ),
        (
            {"stream_options": {"include_usage": "yes"}},
            400,
            "stream_options.include_usage",
            "stream_options",
        ),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
async def test_a_bad_request_is_refused_in_openai_shape_naming_the_field(
    open_app: Any, fields: dict[str, Any], status: int, words: str, param: str, stream: bool
) -> None:
    response = await post(open_app, **{"messages": QUESTION, "stream": stream, **fields})
    assert response.status_code == status
    error = response.json()["error"]
    assert words in error["message"]
    assert (error["type"], error["param"]) == ("invalid_request_error", param)
    if status == 404:
        assert error["code"] == "model_not_found"


LONE = "\\ud800"
"""A lone surrogate as a JSON escape (Python's json reads it; no UTF-8 encoder writes it)."""


@pytest.mark.parametrize(
    ("raw", "words", "param"),
    [
        (f'"messages": [{{"role": "user", "content": "a{LONE}"}}]', "messages[0].content holds",
         "messages"),
        (f'"messages": [{{"role": "user", "content": [{{"type": "text", "text": "{LONE}"}}]}}]',
         "messages[0].content[0].text holds", "messages"),
        (f'"messages": {Q}, "stop": ["{LONE}"]', "stop[0] holds a lone", "stop"),
        (f'"messages": {Q}, "tools": [{{"type": "function", "function": {{"name": "{LONE}"}}}}]',
         "tools[0].function.name holds a lone", "tools"),
        (f'"messages": {Q}, "{LONE}": 1', "a key of the body holds", None),
        (f'"messages": {Q}, "temperature": NaN', "temperature is NaN", "temperature"),
        (f'"messages": {Q}, "top_p": -Infinity', "top_p is -Infinity", "top_p"),
        (f'"messages": {Q}, "threshold": Infinity', "threshold is Infinity", "threshold"),
        (f'"messages": {Q}, "temperature": 1e400', "temperature is 1e400", "temperature"),
        (f'"messages": {Q}, "metadata": ' + "[" * 100_000, "nested more than 64", None),
        (f'"messages": {Q}, "metadata": ' + "[" * 70 + "]" * 70, "nested more than 64",
         "metadata"),
    ],
)  # fmt: skip
async def test_what_python_reads_but_json_is_not_is_a_400_naming_the_field(
    app: Any, raw: str, words: str, param: str | None
) -> None:
    body = '{"model": "glimprouter", ' + raw + "}"
    async with asgi_client(app) as client:
        response = await client.post(
            "/v1/chat/completions", content=body, headers={"content-type": "application/json"}
        )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert words in error["message"]
    assert (error["type"], error["param"]) == ("invalid_request_error", param)


async def test_the_large_model_name_is_an_alias(app: Any) -> None:
    response = await post(app, messages=QUESTION, model="large-m")
    assert response.status_code == 200
    assert response.json()["model"] == "large-m"


async def test_the_async_openai_sdk_reads_it(app: Any) -> None:
    transport = httpx2.ASGITransport(app=app)
    sdk = openai.AsyncOpenAI(
        base_url="http://proxy/v1",
        api_key="none",
        http_client=httpx2.AsyncClient(transport=transport),
    )
    plain = await sdk.chat.completions.create(model="glimprouter", messages=QUESTION)
    assert plain.choices[0].message.content == "The answer is 42."
    assert plain.choices[0].message.model_extra["reasoning_content"] == REASONING
    details = plain.usage.completion_tokens_details if plain.usage else None
    assert details is not None
    assert details.reasoning_tokens
    assert plain.model_extra["glimprouter"]["n_steps"] == 4
    stream = await sdk.chat.completions.create(model="glimprouter", messages=QUESTION, stream=True)
    text = [c.choices[0].delta.content or "" async for c in stream if c.choices]
    assert "".join(text) == "The answer is 42."


def tool_loop(**assistant: Any) -> list[dict[str, Any]]:
    """A tool loop's second turn: the question, the assistant's call (its other fields from
    ``assistant``) and the tool's result."""
    call = {"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}  # fmt: skip
    return [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "tool_calls": [call], **assistant},
        {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 24 C"},
    ]


async def prompts_of(servers: Any, **body: Any) -> tuple[Any, list[str]]:
    """The response to ``body``, and the prompts both servers were sent for it."""
    small, large = servers()
    response = await post(create_app(proxy_router(small, large)), **body)
    return response, [r.prompt for r in (*small.requests, *large.requests)]


@pytest.mark.parametrize(
    "assistant", [{}, {"content": None}, {"content": ""}, {"content": [], "name": "agent"}]
)
async def test_an_assistant_call_with_absent_or_null_content_is_accepted(
    servers: Any, assistant: dict[str, Any]
) -> None:
    """LiteLLM sends the assistant's tool calls with no ``content`` key on every tool loop."""
    response, prompts = await prompts_of(
        servers, messages=tool_loop(**assistant), tools=[WEATHER_TOOL]
    )
    assert response.status_code == 200, response.text
    _, expected = await prompts_of(servers, messages=tool_loop(content=""), tools=[WEATHER_TOOL])
    assert prompts == expected
    assert "Sunny, 24 C" in prompts[-1]


async def test_content_as_text_parts_is_the_text(servers: Any) -> None:
    parts = [{"type": "text", "text": "What is 6 "}, {"type": "text", "text": "times 7?"}]
    response, prompts = await prompts_of(servers, messages=[{"role": "user", "content": parts}])
    assert response.status_code == 200, response.text
    _, expected = await prompts_of(servers, messages=QUESTION)
    assert prompts == expected


async def test_names_on_messages_are_accepted(servers: Any) -> None:
    named = [
        {"role": "system", "content": "Be brief.", "name": "policy"},
        {"role": "user", "content": "What is 6 times 7?", "name": "alice"},
    ]
    response, _ = await prompts_of(servers, messages=named)
    assert response.status_code == 200, response.text


async def test_a_litellm_tool_loop_body_is_answered(servers: Any) -> None:
    """A whole second turn as LiteLLM's OpenAI client sends it (parts, no assistant content,
    the call's index, the tool's name, null fields, tool_choice "auto")."""
    body = {
        "messages": [
            {"role": "system", "content": [{"type": "text", "text": "You help with weather."}]},
            {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
            {"role": "assistant", "tool_calls": [
                {"index": 0, "id": "call_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
            {"role": "tool", "tool_call_id": "call_1", "name": "get_weather",
             "content": "Sunny, 24 C"},
        ],
        "tools": [WEATHER_TOOL], "tool_choice": "auto", "stream": True,
        "stream_options": {"include_usage": True}, "temperature": None, "max_tokens": 64,
    }  # fmt: skip
    response, prompts = await prompts_of(servers, **body)
    assert response.status_code == 200, response.text
    assert sse_payloads(response.text)[-1] == "[DONE]"
    assert deltas(sse_payloads(response.text)[:-1], "content") == "The answer is 42."
    assert "Sunny, 24 C" in prompts[-1]


BAD_CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": \n</tool_call>'


async def answer_of(app: Any, stream: bool, **body: Any) -> tuple[str, list[Any], str, Any]:
    """The content, tool calls, finish reason and record of a plain or streamed answer."""
    response = await post(app, messages=QUESTION, tools=[WEATHER_TOOL], stream=stream, **body)
    assert response.status_code == 200, response.text
    if not stream:
        data = response.json()
        choice = data["choices"][0]
        message = choice["message"]
        calls = message.get("tool_calls", [])
        return message["content"], calls, choice["finish_reason"], data["glimprouter"]
    chunks = sse_payloads(response.text)[:-1]
    calls = [
        d for c in chunks if c["choices"] for d in c["choices"][0]["delta"].get("tool_calls", [])
    ]
    finish = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1]
    return deltas(chunks, "content"), calls, finish, chunks[-1]["glimprouter"]


@pytest.mark.parametrize("stream", [False, True])
async def test_a_call_that_does_not_parse_is_content_not_a_call(servers: Any, stream: bool) -> None:
    """As vLLM's tool parsers do: the text is the answer's content, finish_reason "stop", and
    no call without a name comes back (issue 27)."""
    small, large = servers(**answering(f"Let me look.\n{BAD_CALL}"))
    content, calls, finish, record = await answer_of(create_app(proxy_router(small, large)), stream)
    assert calls == []
    assert finish == "stop"
    assert content.strip() == f"Let me look.\n{BAD_CALL}"
    assert record["answer_error"] is None


@pytest.mark.parametrize("stream", [False, True])
async def test_with_one_call_parsed_the_one_that_did_not_is_content(
    servers: Any, stream: bool
) -> None:
    small, large = servers(**answering(f"{BAD_CALL}\n{CALL}"))
    content, calls, finish, _ = await answer_of(create_app(proxy_router(small, large)), stream)
    assert finish == "tool_calls"
    assert [(c["index"] if stream else 0, c["function"]["name"]) for c in calls] == [
        (0, "get_weather")
    ]
    assert all(c["id"] and c["function"]["name"] for c in calls)
    assert content.strip() == BAD_CALL


@pytest.mark.parametrize("stream", [False, True])
async def test_a_forced_call_that_does_not_parse_is_content_and_says_why(
    servers: Any, stream: bool
) -> None:
    """tool_choice forced a call and the answer is none: no call (never one with a null name),
    the answer's text as content, the record's answer_error saying why."""
    small, large = servers(**answering("not a call"))
    content, calls, finish, record = await answer_of(
        create_app(proxy_router(small, large)), stream, tool_choice="required"
    )
    assert (calls, finish) == ([], "stop")
    assert "not a call" in content
    assert record["answer_error"].startswith("tool_choice forced a tool call, but ")
