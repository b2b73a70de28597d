"""LangChain's standard integration tests for chat models (``langchain-tests``'
``ChatModelIntegrationTests``) on langchain-openai's ``ChatOpenAI(base_url=proxy)``: the
proxy (uvicorn on loopback) in front of the scripted pair whose large model writes what a
capable model would (the same pair as ``tests/integration_tests/test_standard.py``'s
``TestGlimpRouterOnScriptedServers``). A client nobody here wrote, through the proxy's
OpenAI surface: what it does not offer is declared with the suite's own properties."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from langchain_openai import ChatOpenAI
from langchain_tests.integration_tests import ChatModelIntegrationTests

from langchain_glimprouter.proxy import create_app
from scripted_server import Script, ScriptedServer
from tests.integration_tests.test_standard import capable_answer
from tests.support.proxy import ServedApp, proxy_router

KEY = "proxy-key"
_TOOLS = re.compile(r"<tools>\n(.*?)\n</tools>", re.S)


def capable(prompt: str) -> str:
    """``capable_answer``, and a call of the bound tool when it is asked for a joke with tools
    bound (``with_structured_output(method="function_calling")``, which ChatOpenAI uses for a
    pydantic v1 schema): the joke as the call's arguments, as vLLM's grammar would force it."""
    answer = capable_answer(prompt)
    tools = _TOOLS.search(prompt)
    if answer.startswith("{") and tools:
        name = json.loads(tools.group(1).splitlines()[0])["function"]["name"]
        call = json.dumps({"name": name, "arguments": json.loads(answer)})
        return f"<tool_call>\n{call}\n</tool_call>"
    return answer


@pytest.fixture(scope="module")
def served() -> Iterator[ServedApp]:
    steps = ["First I read the question.", "Then I decide."]
    small = ScriptedServer(Script(steps=steps, h_init=[0.2, 1.8, 0.0]), model="small-m").start()
    large = ScriptedServer(Script(steps=steps, answer=capable), model="large-m").start()
    app = ServedApp(create_app(proxy_router(small, large), api_key=KEY)).__enter__()
    try:
        yield app
    finally:
        app.__exit__()
        small.stop()
        large.stop()


class TestChatOpenAIThroughTheProxy(ChatModelIntegrationTests):
    app: ServedApp

    @pytest.fixture(autouse=True)
    def _proxy(self, served: ServedApp) -> None:
        type(self).app = served

    @property
    def chat_model_class(self) -> type[ChatOpenAI]:
        return ChatOpenAI

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {
            "base_url": self.app.base_url,
            "api_key": KEY,
            "model": "glimprouter",
            "temperature": 0,
            "max_tokens": 100,
            "max_retries": 0,
            "stream_usage": True,
            # one per test: langchain-openai caches its default async client, whose
            # connections belong to the event loop of the test that made it
            "http_async_client": httpx.AsyncClient(timeout=30),
        }

    @property
    def model_override_value(self) -> str:
        return "large-m"  # the proxy serves its name and the large backend's model's

    @property
    def has_tool_choice(self) -> bool:
        return True

    @property
    def has_structured_output(self) -> bool:
        return True

    @property
    def supports_json_mode(self) -> bool:
        return True

    # What the proxy does not offer (text only; a non-text part is a 400 naming messages):
    @property
    def supports_image_inputs(self) -> bool:
        return False

    @property
    def supports_image_urls(self) -> bool:
        return False

    @property
    def supports_image_tool_message(self) -> bool:
        return False

    @property
    def supports_pdf_inputs(self) -> bool:
        return False

    @property
    def supports_pdf_tool_message(self) -> bool:
        return False

    @property
    def supports_audio_inputs(self) -> bool:
        return False

    @property
    def supports_anthropic_inputs(self) -> bool:
        return False

    @property
    def enable_vcr_tests(self) -> bool:
        return False  # test_stream_time replays recorded HTTP; this runs on live servers
