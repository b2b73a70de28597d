"""Node clients of the proxy, installed from npm (tests/node_clients, ``make node-env``):
openai-node (plain, streamed, a tool round trip, a backend down) and the Vercel AI SDK through
``@ai-sdk/openai-compatible`` (``streamText`` with its own multi-step tool loop, ``streamText``
on an answer whose tool call does not parse, ``generateObject`` with a zod schema, a backend
down). Each runs ``node <script> <base_url> <key> <case>`` against the proxy on scripted servers
and asserts on the JSON the script prints."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.loopback_tests.test_proxy_clients import KEY, Proxy, proxy
from tests.support.proxy import CALL, JSON_ANSWER, REASONING, ServedApp

__all__ = ["proxy"]  # the fixture: the proxy before a scripted pair, its key KEY

CLIENTS = Path(__file__).parents[1] / "node_clients"
NODE = shutil.which("node")
WEATHER = "Sunny, 24 C"
FINAL = "It is sunny in Paris."
MALFORMED = '<tool_call>\n{"name": "get_weather", "arguments": {"city": \n</tool_call>'

pytestmark = pytest.mark.skipif(NODE is None, reason="node is not on PATH")


def calls_then_answers(prompt: str) -> str:
    """The large model calls the weather tool, and answers once the prompt has its output."""
    return FINAL if WEATHER in prompt else CALL


def node(script: str, app: ServedApp, case: str) -> dict[str, Any]:
    """What ``script`` prints for ``case`` against ``app`` (it must exit 0 within 60 s)."""
    if not (CLIENTS / "node_modules").is_dir():
        pytest.fail("the Node clients are not installed: run `make node-env` (npm ci)")
    assert NODE is not None
    done = subprocess.run(
        [NODE, script, app.base_url, KEY, case],
        cwd=CLIENTS,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"{script} {case} exited {done.returncode}: {done.stderr}"
    printed: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return printed


def test_openai_node_gets_the_chain_and_the_answer(proxy: Proxy) -> None:
    app, _, _ = proxy()
    out = node("openai_node.mjs", app, "plain")
    assert out == {
        "content": "The answer is 42.",
        "reasoning": REASONING,
        "finish_reason": "stop",
        "reasoning_tokens": out["reasoning_tokens"],
        "n_steps": 4,
    }
    assert out["reasoning_tokens"] > 0


def test_openai_node_streams_the_chain_steps_and_answer(proxy: Proxy) -> None:
    app, _, _ = proxy()
    out = node("openai_node.mjs", app, "stream")
    assert (out["reasoning"], out["content"]) == (REASONING, "The answer is 42.")
    assert (out["finish_reason"], out["steps"]) == ("stop", 4)
    assert out["total_tokens"] > 0


def test_openai_node_tool_round_trip(proxy: Proxy) -> None:
    app, _, large = proxy(calls_then_answers)
    out = node("openai_node.mjs", app, "tools")
    assert out == {
        "first_finish": "tool_calls",
        "calls": [["get_weather", {"city": "Paris"}]],
        "ids": [True],
        "answer": FINAL,
        "second_finish": "stop",
    }
    assert WEATHER in large.requests[-1].prompt


def test_openai_node_gets_the_proxys_error_when_a_backend_is_down(proxy: Proxy) -> None:
    app, small, _ = proxy()
    small.stop()
    out = node("openai_node.mjs", app, "down")
    assert out["thrown"] == "InternalServerError"
    assert (out["status"], out["code"]) == (503, "backend_unreachable")
    assert out["request_id"] in out["message"]
    assert "127.0.0.1" not in out["message"]  # the backend's address stays in the proxy's log


def test_ai_sdk_stream_text_runs_its_multi_step_tool_loop(proxy: Proxy) -> None:
    app, _, large = proxy(calls_then_answers)
    out = node("ai_sdk.mjs", app, "loop")
    assert out["errors"] == []
    assert out["tool_calls"] == ["Paris"]  # the SDK ran the tool once, then asked again
    assert out["steps"] == 2
    assert out["step_finish_reasons"] == ["tool-calls", "stop"]
    assert (out["text"], out["finish_reason"]) == (FINAL, "stop")
    assert out["step_reasoning"] == [REASONING, REASONING]  # each step's routed chain
    assert out["reasoning"] == REASONING * 2
    assert out["parts"]["tool-result"] == 1
    assert WEATHER in large.requests[-1].prompt


def test_ai_sdk_stream_text_on_a_malformed_tool_call_gets_text(proxy: Proxy) -> None:
    app, _, _ = proxy(MALFORMED)
    out = node("ai_sdk.mjs", app, "malformed")
    assert out["errors"] == []
    assert out["tool_calls"] == []
    assert (out["text"], out["finish_reason"], out["steps"]) == (MALFORMED, "stop", 1)
    assert out["reasoning"] == REASONING


def test_ai_sdk_generate_object_with_a_zod_schema(proxy: Proxy) -> None:
    app, _, large = proxy(JSON_ANSWER)
    out = node("ai_sdk.mjs", app, "object")
    assert out["object"] == {"value": 24, "unit": "legs"}
    assert out["finish_reason"] == "stop"
    assert out["reasoning"] == REASONING
    constrained = large.requests[-1].params["structured_outputs"]  # the zod schema, as JSON
    assert constrained["json"]["required"] == ["value", "unit"]


def test_ai_sdk_throws_the_proxys_error_when_a_backend_is_down(proxy: Proxy) -> None:
    app, small, _ = proxy()
    small.stop()
    out = node("ai_sdk.mjs", app, "down")
    assert out["thrown"] == "AI_APICallError"
    assert out["status"] == 503
    assert "unreachable" in out["message"]
    assert out["request_id"] in out["message"]
    assert out["retryable"] is True
