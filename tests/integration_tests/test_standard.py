"""LangChain's standard integration tests for chat models (package ``langchain-tests``).

They run against the real vLLM servers on SmolLM2-135M. A few need a model that follows
instructions, which a 135M model does not (always): those are marked xfail on vLLM, not strict,
with the reason, and run again, unchanged, against the scripted test double, whose large model
writes what a capable model would. Every such test is listed in docs/compatibility.md.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from langchain_tests.integration_tests import ChatModelIntegrationTests

from langchain_glimprouter import Backend, GlimpRouterChatModel
from tests.scripted_server import Script, ScriptedServer
from tests.standard_capabilities import StandardCapabilities

from .conftest import Pair

TOOL_UNPROMPTED = (
    "SmolLM2-135M never calls a tool unless tool_choice forces it; passes on the scripted double"
)
ENDLESS_STRING = (
    "SmolLM2-135M starts a JSON string and does not close it within max_tokens=100 (the server "
    "constrains the structure, not the length); passes on the scripted double"
)
MAY_RAMBLE = (
    "SmolLM2-135M may leave a JSON string open at max_tokens=100 (it did at temperature 0.6; "
    "at 0 it passes here); passes on the scripted double"
)
NO_KEYS = (
    "SmolLM2-135M may answer json_mode with {} or other keys (it did at temperature 0.6; at 0 "
    "it passes here); passes on the scripted double"
)


class TestGlimpRouterOnVLLM(StandardCapabilities, ChatModelIntegrationTests):
    pair: Pair

    @pytest.fixture(autouse=True)
    def _servers(self, vllm_pair: Pair) -> None:
        type(self).pair = vllm_pair

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {
            "small": self.pair.small,
            "large": self.pair.large,
            "threshold": 1.5,  # SmolLM2's step starts are mostly 1-2.5 nats: both models work
            "max_reasoning_tokens": 48,
            "max_tokens": 100,  # the integration suite sets no budget; 2048 tokens take a minute
            "temperature": 0,
        }

    @property
    def model_override_value(self) -> str:
        return self.pair.large.model

    @pytest.mark.xfail(reason=TOOL_UNPROMPTED, strict=False)
    @pytest.mark.parametrize("model", [{}, {"output_version": "v1"}], indirect=True)
    def test_agent_loop(self, model: GlimpRouterChatModel) -> None:
        super().test_agent_loop(model)

    @pytest.mark.xfail(reason=ENDLESS_STRING, strict=False)
    def test_bind_runnables_as_tools(self, model: GlimpRouterChatModel) -> None:
        super().test_bind_runnables_as_tools(model)

    # Only "pydantic" needs both keys; the suite validates the other two loosely ({} passes).
    @pytest.mark.xfail(reason=MAY_RAMBLE, strict=False)
    @pytest.mark.parametrize("schema_type", ["pydantic", "typeddict", "json_schema"])
    def test_structured_output(self, model: GlimpRouterChatModel, schema_type: Any) -> None:
        super().test_structured_output(model, schema_type)

    @pytest.mark.xfail(reason=MAY_RAMBLE, strict=False)
    @pytest.mark.parametrize("schema_type", ["pydantic", "typeddict", "json_schema"])
    async def test_structured_output_async(
        self, model: GlimpRouterChatModel, schema_type: Any
    ) -> None:
        await super().test_structured_output_async(model, schema_type)

    @pytest.mark.xfail(reason=NO_KEYS, strict=False)
    def test_json_mode(self, model: GlimpRouterChatModel) -> None:
        super().test_json_mode(model)


# -- the same standard tests against the scripted double ------------------------------------------

JOKE = '{"setup": "Why did the cat sit on the computer?", "punchline": "To watch the mouse."}'
WEATHER_CALL = (
    '<tool_call>\n{"name": "get_weather", "arguments": {"location": "San Francisco, CA"}}\n'
    "</tool_call>"
)


def _agent_answer(prompt: str) -> str:
    """A capable model: call the tool, then answer from its result."""
    return "It's sunny in San Francisco." if "<tool_response>" in prompt else WEATHER_CALL


class _ScriptedSuite(StandardCapabilities, ChatModelIntegrationTests):
    """The standard suite's methods, called by the tests below (not collected itself)."""


Answer = str | Callable[[str], str]


@pytest.fixture
def scripted() -> Iterator[Callable[..., GlimpRouterChatModel]]:
    started: list[ScriptedServer] = []

    def make(answer: Answer, **settings: Any) -> GlimpRouterChatModel:
        steps = ["First I read the question.", "Then I decide."]
        small = ScriptedServer(Script(steps=steps, h_init=[0.2, 1.8, 0.0]), model="small-m")
        large = ScriptedServer(Script(steps=steps, answer=answer), model="large-m")
        started.extend((small.start(), large.start()))
        return GlimpRouterChatModel(
            small=Backend(base_url=small.base_url, model="small-m"),
            large=Backend(base_url=large.base_url, model="large-m"),
            threshold=1.0,
            temperature=0,
            max_tokens=100,
            **settings,
        )

    yield make
    for server in started:
        server.stop()


@pytest.mark.parametrize("output_version", [None, "v1"])
def test_agent_loop_on_the_scripted_double(
    scripted: Callable[..., GlimpRouterChatModel], output_version: str | None
) -> None:
    _ScriptedSuite().test_agent_loop(scripted(_agent_answer, output_version=output_version))


def test_bind_runnables_as_tools_on_the_scripted_double(
    scripted: Callable[..., GlimpRouterChatModel],
) -> None:
    call = '<tool_call>\n{"name": "greeting_generator", "arguments": {"answer_style": "pirate"}}'
    _ScriptedSuite().test_bind_runnables_as_tools(scripted(call))


@pytest.mark.parametrize("schema_type", ["pydantic", "typeddict", "json_schema"])
def test_structured_output_on_the_scripted_double(
    scripted: Callable[..., GlimpRouterChatModel], schema_type: Any
) -> None:
    suite, model = _ScriptedSuite(), scripted(JOKE)
    suite.test_structured_output(model, schema_type)
    asyncio.run(suite.test_structured_output_async(model, schema_type))


def test_json_mode_on_the_scripted_double(scripted: Callable[..., GlimpRouterChatModel]) -> None:
    _ScriptedSuite().test_json_mode(scripted(JOKE))
