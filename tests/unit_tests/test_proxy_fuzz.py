"""Every client mistake is a 4xx, never a 5xx (issue 27): thousands of request bodies drawn from
the request schema (each field with plausible values, out-of-range ones and any JSON at all)
and from the hostile cases (NaN and Infinity, 1e400, lone surrogates, deep nesting, bodies that
are not JSON), sent to the proxy in front of the scripted pair. No answer is a 5xx, no stream
ends in a server error, nothing is logged with a traceback or at ERROR, and no request the
proxy sends a server holds a value vLLM would refuse (:func:`vllm_refusal`: the proxy checks
them all first).

Derandomized (the same examples on every run) and bounded to a few tens of seconds."""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from langchain_glimprouter.core.settings import SETTING_NAMES
from langchain_glimprouter.core.strategies import STRATEGIES
from langchain_glimprouter.proxy import create_app
from langchain_glimprouter.proxy.chat_request import ChatCompletionRequest
from tests.support.proxy import ANSWER_SCHEMA, WEATHER_TOOL, asgi_client, proxy_router

ODD_TEXT = ["", "NaN", "inf", "-inf", "Infinity", "\ud800", "a\udfffb", "auto", "\x00", "😀"]
leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(ODD_TEXT),
)
anything = st.recursive(
    leaf,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
text = st.text(max_size=20) | st.sampled_from(ODD_TEXT)
number = st.floats(min_value=-3, max_value=3) | st.sampled_from([0, 1, 2, -2, 1e400, 1e-9])


def field(plausible: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a value of the field's kind (in range or not), sometimes any JSON at all."""
    return st.one_of(plausible, plausible, plausible, anything)


content = st.one_of(
    text,
    st.none(),
    st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": text}), max_size=2),
)
call = st.fixed_dictionaries(
    {"id": text, "type": st.just("function"),
     "function": st.fixed_dictionaries({"name": text, "arguments": text})}
)  # fmt: skip
message = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "developer", "user", "assistant", "tool", "wizard"])},
    optional={"content": field(content), "name": text, "tool_call_id": text,
              "tool_calls": field(st.lists(call, max_size=2))},
)  # fmt: skip
PARAMETERS = st.just(WEATHER_TOOL["function"]["parameters"])
function = st.fixed_dictionaries(
    {"name": text}, optional={"description": text, "parameters": field(PARAMETERS)}
)
tool = st.fixed_dictionaries({"type": st.just("function"), "function": function})
FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "stream": st.booleans(),
    "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
    "stop": text | st.lists(text, max_size=3),
    "max_tokens": st.integers(-3, 40),
    "max_completion_tokens": st.integers(-3, 40),
    "temperature": number,
    "top_p": number,
    "seed": st.integers(-(2**70), 2**70),
    "frequency_penalty": number,
    "presence_penalty": number,
    "repetition_penalty": number,
    "top_k": st.integers(-3, 50),
    "min_p": number,
    "chat_template_kwargs": st.dictionaries(text, leaf, max_size=2),
    "reasoning_effort": st.sampled_from(["minimal", "low", "medium", "high", "max", ""]),
    "n": st.integers(-1, 3),
    "logprobs": st.booleans(),
    "top_logprobs": st.integers(-1, 30),
    "tools": st.lists(tool, max_size=2) | st.just([WEATHER_TOOL]),
    "tool_choice": st.sampled_from(
        ["none", "auto", "required", {"type": "function", "function": {"name": "get_weather"}}]
    ),
    "response_format": st.sampled_from(
        [
            {"type": "text"},
            {"type": "json_object"},
            ANSWER_SCHEMA,
            {"type": "json_schema", "json_schema": "bad"},
            {"type": "xml"},
        ]
    ),
    "user": text,
    "metadata": st.dictionaries(text, text, max_size=2),
    "parallel_tool_calls": st.booleans(),
    "store": st.booleans(),
    "threshold": number | st.sampled_from(["auto", "inf", "NaN"]),
    "strategy": st.sampled_from([*STRATEGIES, "bogus"]),
    "target_rate": number,
    "max_reasoning_tokens": st.integers(-3, 60),
    "max_step_tokens": st.integers(-1, 20),
    "entropy_estimator": st.sampled_from(["topk_renormalized", "topk_tail", "topk_bounds", "x"]),
    "probe": st.sampled_from(["stream", "separate", "fast"]),
    "step_delimiter": text | st.lists(text, max_size=2),
    "escalation_logprobs": st.integers(-1, 30),
    "max_retries": st.integers(-1, 3),
    "on_small_failure": st.sampled_from(["raise", "large", "x"]),
    "logit_bias": anything,
}
assert set(SETTING_NAMES) - {"stop", "top_logprobs", "top_p", "temperature", "seed",
                             "max_tokens"} <= set(FIELDS)  # fmt: skip
assert set(ChatCompletionRequest.model_fields) - {"model", "messages"} <= set(FIELDS)

VALID: dict[str, st.SearchStrategy[Any]] = {
    "stream": st.booleans(),
    "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
    "stop": st.lists(st.text(min_size=1, max_size=5), max_size=2)
    | st.sampled_from(["", ["end", ""]]),
    "max_tokens": st.integers(1, 40),
    "temperature": st.floats(0, 2),
    "top_p": st.floats(0.01, 1),
    "seed": st.integers(-(2**63), 2**63 - 1),
    "frequency_penalty": st.floats(-2, 2),
    "presence_penalty": st.floats(-2, 2),
    "repetition_penalty": st.floats(0.5, 2),
    "top_k": st.integers(-1, 50),
    "min_p": st.floats(0, 1),
    "chat_template_kwargs": st.dictionaries(st.sampled_from(["enable_thinking", "x"]), leaf),
    "reasoning_effort": st.sampled_from(["minimal", "low", "medium", "high"]),
    "n": st.just(1),
    "logprobs": st.just(False),
    "tools": st.just([WEATHER_TOOL]),
    "response_format": st.sampled_from([{"type": "text"}, {"type": "json_object"}]),
    "threshold": st.floats(0, 3) | st.just("inf"),
    "strategy": st.sampled_from(["glimpse", "large_only", "small_only"]),
    "max_reasoning_tokens": st.integers(1, 60),
    "max_step_tokens": st.integers(1, 20),
    "probe": st.sampled_from(["stream", "separate"]),
    "user": st.text(max_size=5),
}
"""Values a request may hold (answered with a 200, or a 400 of the router's own checks), and
one that vLLM alone would refuse (an empty stop string) among otherwise valid values."""
valid_bodies = st.fixed_dictionaries(
    {"model": st.just("glimprouter"),
     "messages": st.lists(st.fixed_dictionaries(
         {"role": st.just("user"), "content": st.text(min_size=1, max_size=20)}),
         min_size=1, max_size=2)},
    optional=VALID,
)  # fmt: skip
bodies = st.fixed_dictionaries(
    {"model": field(st.sampled_from(["glimprouter", "glimprouter", "large-m", "gpt-4o"])),
     "messages": field(st.lists(message, min_size=1, max_size=3))},
    optional={name: field(values) for name, values in FIELDS.items()},
)  # fmt: skip
RAW = [b"", b"{", b"[]", b"null", b'"x"', b"{}", b"\xff\xfe", b"[" * 100_000, b"{" * 5000,
       b'{"model": NaN}', b'{"messages": Infinity}', b'{"model": "\\ud800"}']  # fmt: skip


def vllm_refusal(body: dict[str, Any]) -> str | None:
    """Why vLLM 0.32 would refuse this ``/v1/completions`` body's sampling values
    (``SamplingParams._verify_args`` and the request model's seed bounds), else None."""

    def number(name: str, default: float) -> float:
        value = body.get(name)
        return default if value is None else float(value)

    stops = body.get("stop") or []
    stops = [stops] if isinstance(stops, str) else stops
    seed = body.get("seed")
    refusals = {
        "presence_penalty": not -2 <= number("presence_penalty", 0) <= 2,
        "frequency_penalty": not -2 <= number("frequency_penalty", 0) <= 2,
        "repetition_penalty": not 0 < number("repetition_penalty", 1) < math.inf,
        "temperature": not 0 <= number("temperature", 1) <= 2,
        "top_p": not 0 < number("top_p", 1) <= 1,
        "top_k": not (isinstance(body.get("top_k", 0), int) and body.get("top_k", 0) >= -1),
        "min_p": not 0 <= number("min_p", 0) <= 1,
        "max_tokens": number("max_tokens", 1) < 1,
        "logprobs": number("logprobs", 0) < -1,
        "stop": "" in stops,
        "seed": seed is not None and not -(2**63) <= seed < 2**63,
        "n": body.get("n", 1) != 1,
    }
    return next((name for name, refused in refusals.items() if refused), None)


def test_vllm_refusal_knows_what_vllm_refuses() -> None:
    assert vllm_refusal({"temperature": 0.5, "stop": ["x"], "seed": 3, "top_k": -1}) is None
    assert vllm_refusal({"stop": ["x", ""]}) == "stop"
    assert vllm_refusal({"top_p": 0}) == "top_p"
    assert vllm_refusal({"temperature": math.nan}) == "temperature"
    assert vllm_refusal({"seed": 2**63}) == "seed"


def encoded(body: Any) -> bytes:
    """``body`` as a client could send it: Python's JSON, NaN/Infinity and lone surrogates
    (as \\ud800 escapes) included."""
    return json.dumps(body, ensure_ascii=True, allow_nan=True).encode()


@pytest.fixture
def ask(servers: Any) -> Iterator[Any]:
    small, large = servers()
    app = create_app(proxy_router(small, large, max_reasoning_tokens=60, max_tokens=40))
    loop = asyncio.new_event_loop()

    async def post(content: bytes) -> Any:
        async with asgi_client(app) as client:
            return await client.post(
                "/v1/chat/completions",
                content=content,
                headers={"content-type": "application/json"},
            )

    def run(content: bytes) -> Any:
        small.reset(), large.reset()
        response = loop.run_until_complete(post(content))
        for sent in [*small.requests, *large.requests]:
            assert vllm_refusal(sent.params) is None, (vllm_refusal(sent.params), sent.params)
        return response

    yield run
    loop.close()


def check(response: Any) -> None:
    assert response.status_code < 500, response.text
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        for line in response.text.split("\n\n"):
            if line.startswith("data: {"):
                event = json.loads(line[6:])
                assert event.get("error", {}).get("type") != "server_error", line


def test_raw_bodies_that_are_not_requests_are_4xx(ask: Any) -> None:
    for raw in RAW:
        check(ask(raw))


@settings(
    max_examples=1500,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large],
)  # fmt: skip
@given(body=st.one_of(valid_bodies, valid_bodies, bodies, bodies, anything))
def test_no_body_is_a_5xx_or_a_traceback(
    ask: Any, body: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    caplog.clear()
    check(ask(encoded(body)))
    for record in caplog.records:
        assert record.exc_info is None, record.getMessage()
        assert record.levelno < logging.ERROR, record.getMessage()
