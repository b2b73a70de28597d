"""What the proxy's tests share: the Router it serves (:func:`proxy_router`), the scripted
answers they ask for, a client of the app with no socket (:func:`asgi_client`) or the app served
on loopback (:class:`ServedApp`), and readers of server-sent events."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette

from langchain_glimprouter.backend import Backend
from langchain_glimprouter.reasoning_fields import reasoning_of
from langchain_glimprouter.router import Router
from scripted_server import Script
from tests.support.pair import LARGE_STEPS, SMALL_STEPS

CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
JSON_ANSWER = '{"value": 24, "unit": "legs"}'
ANSWER_SCHEMA = {
    "type": "json_schema",
    "json_schema": {
        "name": "Answer",
        "schema": {
            "type": "object",
            "properties": {"value": {"type": "integer"}, "unit": {"type": "string"}},
            "required": ["value", "unit"],
        },
    },
}
SMALL = Script(steps=SMALL_STEPS, h_init=[0.2, 1.5, 0.1, 2.0, 0.0])
"""With threshold 1.0: small, large, small, large, then the chain ends."""
REASONING = "\n\n".join([SMALL_STEPS[0], LARGE_STEPS[1], SMALL_STEPS[2], LARGE_STEPS[3]])
QUESTION = [{"role": "user", "content": "What is 6 times 7?"}]


def proxy_router(small: Any, large: Any, **settings: Any) -> Router:
    """The Router the proxy serves in front of the scripted pair (as ``router_for``'s chat
    model, with no LangChain): threshold 1.0 unless ``settings`` say otherwise."""
    settings.setdefault("threshold", 1.0)
    return Router(
        small=Backend(base_url=small.base_url, model="small-m"),
        large=Backend(base_url=large.base_url, model="large-m"),
        **settings,
    )


def answering(answer: str | Callable[[str], str]) -> dict[str, Script]:
    """``servers(**answering(text))``: the shared pair, whose large model answers ``text``."""
    return {"small": SMALL, "large": Script(steps=LARGE_STEPS, answer=answer)}


def asgi_client(app: Starlette) -> httpx.AsyncClient:
    """An httpx client of ``app`` with no socket (the app runs in the test's event loop)."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://proxy")


def sse_payloads(text: str) -> list[Any]:
    """The data of each server-sent event in ``text``: JSON objects, and ``"[DONE]"``."""
    events = [line[len("data: ") :] for line in text.splitlines() if line.startswith("data: ")]
    return [event if event == "[DONE]" else json.loads(event) for event in events]


def deltas(payloads: list[Any], field: str) -> str:
    """The text of one delta field over a stream's chunks."""
    return "".join(
        choice["delta"].get(field) or ""
        for payload in payloads
        if isinstance(payload, dict)
        for choice in payload.get("choices", [])
    )


def chain_in(line: str) -> str:
    """The chain of thought a line of a stream carries, under either of its names (none: "")."""
    if not line.startswith("data: {"):
        return ""
    return "".join(reasoning_of(c["delta"]) for c in json.loads(line[6:]).get("choices", []))


class ServedApp:
    """An app served by uvicorn in a daemon thread on a free loopback port."""

    def __init__(self, app: Starlette, **options: Any) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.bind(("127.0.0.1", 0))
        self.root_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.base_url = f"{self.root_url}/v1"
        config = uvicorn.Config(
            app, log_config=None, access_log=False, lifespan="off", ws="none", **options
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, args=([sock],), daemon=True)

    def __enter__(self) -> ServedApp:
        self._thread.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                httpx.get(f"{self.root_url}/v1/models", timeout=1, trust_env=False)
                return self
            except httpx.HTTPError:
                time.sleep(0.01)
        raise RuntimeError("the proxy did not start")

    def __exit__(self, *exc_info: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=5)


FLAT_WEATHER_TOOL = {"type": "function", **WEATHER_TOOL["function"]}  # type: ignore[dict-item]
"""WEATHER_TOOL in the Responses API's flat shape."""


def responses_tool_loop() -> list[dict[str, Any]]:
    """A Responses tool loop's second turn as a client passes it back: the question, the
    previous response's reasoning and function_call items, and the tool's output."""
    return [
        {"role": "user", "content": "Weather in Paris?"},
        {"type": "reasoning", "id": "rs_1", "summary": [],
         "content": [{"type": "reasoning_text", "text": "THOUGHT"}]},
        {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "get_weather",
         "arguments": '{"city": "Paris"}', "status": "completed"},
        {"type": "function_call_output", "call_id": "call_1", "output": "Sunny, 24 C"},
    ]  # fmt: skip
