"""GlimpRouterLLM, the LlamaIndex LLM over the routing engine, on the scripted servers: chat and
completion in every mode, tools, the step events on the dispatcher, history, errors."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ImageBlock,
    MessageRole,
    TextBlock,
    ThinkingBlock,
    ToolCallBlock,
)
from llama_index.core.prompts import PromptTemplate
from llama_index.core.tools import FunctionTool
from pydantic import BaseModel, ValidationError

from langchain_glimprouter import (
    Backend,
    ContextLengthExceededError,
    InvalidArgumentError,
)
from langchain_glimprouter.llama_index import GlimpRouterLLM
from langchain_glimprouter.llama_index._messages import to_openai_messages
from langchain_glimprouter.router import Router, RouterConfig
from scripted_server import Script, ScriptedServer
from tests.support.llama_steps import Steps, listening
from tests.support.pair import LARGE_STEPS, SMALL_STEPS, router_for

Servers = Callable[..., tuple[ScriptedServer, ScriptedServer]]
QUESTION = "What is 6 times 7?"
DECISIONS = [(0, "small"), (1, "large"), (2, "small"), (3, "large")]
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}'


def user(text: str = QUESTION) -> list[ChatMessage]:
    return [ChatMessage(role=MessageRole.USER, content=text)]


def router(small: ScriptedServer, large: ScriptedServer, **settings: Any) -> Router:
    """A Router over the two servers, built without LangChain (``threshold=1.0`` unless given)."""
    settings.setdefault("threshold", 1.0)
    return Router(
        small=Backend(base_url=small.base_url, model="small-m"),
        large=Backend(base_url=large.base_url, model="large-m"),
        **settings,
    )


def llm_for(servers: Servers, answer: str = "The answer is 42.", **settings: Any) -> Any:
    small, large = servers(
        small=Script(steps=SMALL_STEPS, h_init=[0.2, 1.5, 0.1, 2.0, 0.0]),
        large=Script(steps=LARGE_STEPS, answer=answer),
    )
    return GlimpRouterLLM(router=router(small, large, **settings)), small, large


def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"Sunny in {city}"


@pytest.fixture
def steps() -> Iterator[Steps]:
    with listening() as handler:
        yield handler


def assert_routed(response: ChatResponse) -> None:
    """The answer, the chain and the record of one call on the shared scripts."""
    reasoning = "\n\n".join(
        (SMALL_STEPS if role == "small" else LARGE_STEPS)[i] for i, role in DECISIONS
    )
    message = response.message
    assert message.role == MessageRole.ASSISTANT
    assert message.content == "The answer is 42."
    assert message.additional_kwargs["reasoning_content"] == reasoning
    thinking = [b for b in message.blocks if isinstance(b, ThinkingBlock)]
    assert [b.content for b in thinking] == [reasoning]
    record = response.raw["glimprouter"]
    assert [(s["index"], s["model"]) for s in record["steps"]] == DECISIONS
    assert response.additional_kwargs["glimprouter"] == record
    assert response.raw["model_name"] == "large-m"
    usage = response.additional_kwargs
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
    # Generated before the answer, both models and wasted glimpses too (usage's "reasoning").
    assert thinking[0].num_tokens == usage["completion_tokens"] - record["answer_tokens"]


# -- construction and metadata --------------------------------------------------------------------


def test_built_from_a_router_or_from_its_fields(servers: Servers) -> None:
    small, large = servers()
    routed = router(small, large)
    assert GlimpRouterLLM(router=routed).router is routed  # the same clients and controller
    llm = GlimpRouterLLM(
        small=Backend(base_url=small.base_url, model="small-m"),
        large=Backend(base_url=large.base_url, model="large-m"),
        threshold=1.0,
        max_tokens=64,
        context_window=8192,
    )
    assert type(llm.router) is Router
    assert type(llm.router.config) is RouterConfig
    assert llm.router.config.settings_dict() == {**routed.config.settings_dict(), "max_tokens": 64}
    meta = llm.metadata
    assert (meta.is_chat_model, meta.is_function_calling_model) == (True, True)
    assert (meta.model_name, meta.context_window) == ("large-m", 8192)
    assert meta.num_output == llm.router.config.max_reasoning_tokens + 64
    assert_routed(llm.chat(user()))
    with pytest.raises(InvalidArgumentError, match="not both"):
        GlimpRouterLLM(router=routed, threshold=0.5)
    with pytest.raises(ValidationError, match="Router"):
        GlimpRouterLLM(router="a router")


def test_a_chat_model_is_taken_for_its_router(servers: Servers) -> None:
    """For compatibility: the LLM routes with the chat model's Router (and its settings)."""
    small, large = servers()
    chat_model = router_for(small, large, max_tokens=64)
    llm = GlimpRouterLLM(router=chat_model)
    assert llm.router is chat_model.router
    assert llm.metadata.num_output == chat_model.max_reasoning_tokens + 64
    assert_routed(llm.chat(user()))


def loaded_by(statement: str) -> list[str]:
    """The top-level packages a fresh interpreter has loaded after ``statement``."""
    packages = "sorted({m.split('.')[0] for m in sys.modules})"
    code = f"import json, sys\n{statement}\nprint(json.dumps({packages}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded: list[str] = json.loads(out.stdout)
    return loaded


def test_importing_the_package_does_not_import_llama_index() -> None:
    assert "llama_index" not in loaded_by(
        "import langchain_glimprouter as g; g.GlimpRouterChatModel"
    )


def test_the_llama_index_llm_loads_no_langchain() -> None:
    """GlimpRouterLLM wraps the Router: LangChain need not be installed for it."""
    loaded = loaded_by("from langchain_glimprouter.llama_index import GlimpRouterLLM")
    assert "llama_index" in loaded
    assert not {"langchain_core", "langchain"} & set(loaded)


def test_without_llama_index_the_import_error_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delitem(sys.modules, "langchain_glimprouter.llama_index")
    monkeypatch.setitem(sys.modules, "llama_index.core.base.llms.generic_utils", None)
    with pytest.raises(ImportError, match=r'pip install "langchain-glimprouter\[llama-index\]"'):
        importlib.import_module("langchain_glimprouter.llama_index")


# -- chat and completion --------------------------------------------------------------------------


def test_chat_routes_steps_and_carries_the_record(servers: Servers, steps: Steps) -> None:
    llm, _, _ = llm_for(servers)
    assert_routed(llm.chat(user()))
    assert [(e.index, e.model) for e in steps.seen] == DECISIONS
    assert all(e.class_name() == "GlimpRouterStepEvent" for e in steps.seen)
    assert steps.seen[1].h_init == pytest.approx(1.5, abs=0.05)
    assert steps.seen[1].model_dump()["class_name"] == "GlimpRouterStepEvent"


async def test_achat(servers: Servers, steps: Steps) -> None:
    llm, _, _ = llm_for(servers)
    assert_routed(await llm.achat(user()))
    assert [(e.index, e.model) for e in steps.seen] == DECISIONS


def check_stream(responses: list[ChatResponse], whole: ChatResponse) -> None:
    """Cumulative text with deltas, the chain in thinking deltas, the record on the last one."""
    assert "".join(r.delta or "" for r in responses) == whole.message.content
    for r in responses:
        assert whole.message.content.startswith(r.message.content or "")
    chain = "".join(r.additional_kwargs.get("thinking_delta", "") for r in responses)
    assert chain == whole.message.additional_kwargs["reasoning_content"]
    assert all("glimprouter" not in r.additional_kwargs for r in responses[:-1])
    assert_routed(responses[-1])


def test_stream_chat(servers: Servers, steps: Steps) -> None:
    llm, _, _ = llm_for(servers)
    whole = llm.chat(user())
    steps.seen.clear()
    check_stream(list(llm.stream_chat(user())), whole)
    assert [(e.index, e.model) for e in steps.seen] == DECISIONS


async def test_astream_chat(servers: Servers, steps: Steps) -> None:
    llm, _, _ = llm_for(servers)
    whole = await llm.achat(user())
    steps.seen.clear()
    check_stream([r async for r in await llm.astream_chat(user())], whole)
    assert [(e.index, e.model) for e in steps.seen] == DECISIONS


async def test_completions_in_every_mode(servers: Servers, steps: Steps) -> None:
    llm, _, large = llm_for(servers)
    done = [
        llm.complete(QUESTION),
        list(llm.stream_complete(QUESTION))[-1],
        await llm.acomplete(QUESTION),
        [r async for r in await llm.astream_complete(QUESTION)][-1],
    ]
    for response in done:
        assert response.text == "The answer is 42."
        assert response.additional_kwargs["reasoning_content"]
        routed = [(s["index"], s["model"]) for s in response.raw["glimprouter"]["steps"]]
        assert routed == DECISIONS
        assert response.additional_kwargs["glimprouter"] == response.raw["glimprouter"]
    assert len(steps.seen) == 4 * len(DECISIONS)
    assert QUESTION in large.requests[-1].prompt


def test_per_call_settings_are_the_chat_model_s(servers: Servers) -> None:
    llm, small, _ = llm_for(servers)
    response = llm.chat(user(), threshold=0)
    assert {s["model"] for s in response.raw["glimprouter"]["steps"]} == {"large"}
    assert small.requests == []  # threshold 0: no glimpse


# -- tools ----------------------------------------------------------------------------------------


def test_a_required_tool_is_a_forced_call_parsed_into_a_tool_selection(servers: Servers) -> None:
    llm, small, large = llm_for(servers, CALL + " and more text")
    tool = FunctionTool.from_defaults(fn=get_weather)
    response = llm.chat_with_tools([tool], user_msg="Weather in Oslo?", tool_required=True)
    [selection] = llm.get_tool_calls_from_response(response)
    assert (selection.tool_name, selection.tool_kwargs) == ("get_weather", {"city": "Oslo"})
    assert selection.tool_id.startswith("call_")
    call = response.message.additional_kwargs["tool_calls"][0]
    assert (call["id"], call["function"]["name"]) == (selection.tool_id, "get_weather")
    constrained = [r for r in large.requests if "structured_outputs" in r.params]
    assert constrained == [large.requests[-1]]
    assert '"name": "get_weather"' in small.requests[0].prompt  # both models reason with it
    assert response.raw["glimprouter"]["answer_error"] is None


async def test_a_streamed_tool_call_ends_in_the_last_response(servers: Servers) -> None:
    llm, _, _ = llm_for(servers, CALL)
    tool = FunctionTool.from_defaults(fn=get_weather)
    gen = await llm.astream_chat_with_tools([tool], user_msg="Weather?", tool_required=True)
    last = [r async for r in gen][-1]
    [selection] = llm.get_tool_calls_from_response(last)
    assert (selection.tool_name, selection.tool_kwargs) == ("get_weather", {"city": "Oslo"})
    whole = list(llm.stream_chat_with_tools([tool], user_msg="Weather?", tool_required=True))
    assert llm.get_tool_calls_from_response(whole[-1])[0].tool_kwargs == {"city": "Oslo"}


@pytest.mark.parametrize("stream", [False, True])
def test_a_forced_call_cut_short_says_why(servers: Servers, stream: bool) -> None:
    llm, _, _ = llm_for(servers, CALL, max_tokens=3)
    tool = FunctionTool.from_defaults(fn=get_weather)
    kwargs: dict[str, Any] = {"user_msg": "Weather?", "tool_required": True}
    if stream:
        response = list(llm.stream_chat_with_tools([tool], **kwargs))[-1]
    else:
        response = llm.chat_with_tools([tool], **kwargs)
    assert llm.get_tool_calls_from_response(response, error_on_no_tool_call=False) == []
    with pytest.raises(ValueError, match="max_tokens=3"):
        llm.get_tool_calls_from_response(response)
    [invalid] = response.message.additional_kwargs["invalid_tool_calls"]
    assert invalid["error"] == response.raw["glimprouter"]["answer_error"]
    assert invalid["args"].startswith("<tool_call>")


def cities(llm: GlimpRouterLLM, response: ChatResponse) -> tuple[list[str], list[str]]:
    """The cities of the response's tool calls: in its blocks, in additional_kwargs."""
    listed = response.message.additional_kwargs.get("tool_calls", [])
    return (
        [s.tool_kwargs["city"] for s in llm.get_tool_calls_from_response(response)],
        [json.loads(c["function"]["arguments"])["city"] for c in listed],
    )


@pytest.mark.parametrize("sync", [True, False])
async def test_only_the_first_call_is_kept_unless_parallel_calls_are_allowed(
    servers: Servers, sync: bool
) -> None:
    two = f"{CALL}\n</tool_call>\n{CALL.replace('Oslo', 'Rome')}\n</tool_call>"
    llm, _, _ = llm_for(servers, two)
    tool = FunctionTool.from_defaults(fn=get_weather)
    chat = llm.chat_with_tools if sync else llm.achat_with_tools

    async def answer(**kwargs: Any) -> ChatResponse:
        response = chat([tool], user_msg="Weather?", **kwargs)
        return response if isinstance(response, ChatResponse) else await response

    assert cities(llm, await answer()) == (["Oslo"], ["Oslo"])
    both = await answer(allow_parallel_tool_calls=True)
    assert cities(llm, both) == (["Oslo", "Rome"], ["Oslo", "Rome"])


class Weather(BaseModel):
    """A weather report."""

    city: str


async def test_structured_predict_is_a_forced_call(servers: Servers) -> None:
    answer = '<tool_call>\n{"name": "Weather", "arguments": {"city": "Oslo"}}'
    llm, _, large = llm_for(servers, answer)
    prompt = PromptTemplate("Weather in {city}?")
    assert llm.structured_predict(Weather, prompt, city="Oslo") == Weather(city="Oslo")
    assert await llm.astructured_predict(Weather, prompt, city="Oslo") == Weather(city="Oslo")
    constrained = [r.params["structured_outputs"]["json"] for r in large.requests
                   if "structured_outputs" in r.params]  # fmt: skip
    assert [s["properties"]["name"]["enum"] for s in constrained] == [["Weather"]] * 2


# -- history --------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["reasoning_content", "reasoning"])
def test_past_reasoning_is_not_resent_under_either_key(servers: Servers, key: str) -> None:
    llm, small, large = llm_for(servers)
    history = [
        *user("First question?"),
        ChatMessage(
            role=MessageRole.ASSISTANT,
            blocks=[ThinkingBlock(content="THOUGHT IN A BLOCK"), TextBlock(text="First answer.")],
            additional_kwargs={key: "THOUGHT IN KWARGS"},
        ),
        *user(),
    ]
    llm.chat(history)
    for server in (small, large):
        prompt = server.requests[0].prompt
        assert "First answer." in prompt
        assert "THOUGHT" not in prompt


@pytest.mark.parametrize("form", ["blocks", "openai"])
def test_a_tool_round_trip_renders_the_call_and_the_result(servers: Servers, form: str) -> None:
    llm, _, large = llm_for(servers, "It is sunny in Paris.")
    if form == "blocks":
        args = {"city": "Paris"}
        block = ToolCallBlock(tool_call_id="c1", tool_name="get_weather", tool_kwargs=args)
        called = ChatMessage(role=MessageRole.ASSISTANT, blocks=[block])
    else:
        function = {"name": "get_weather", "arguments": '{"city": "Paris"}'}
        kwargs = {"tool_calls": [{"id": "c1", "type": "function", "function": function}]}
        called = ChatMessage(role=MessageRole.ASSISTANT, content="", additional_kwargs=kwargs)
    result = ChatMessage(
        role=MessageRole.TOOL, content="Sunny in Paris", additional_kwargs={"tool_call_id": "c1"}
    )
    tool = FunctionTool.from_defaults(fn=get_weather)
    history = [*user("Weather in Paris?"), called, result]
    response = llm.chat_with_tools([tool], chat_history=history)
    assert response.message.content == "It is sunny in Paris."
    prompt = large.requests[0].prompt
    assert '{"name": "get_weather", "arguments": {"city": "Paris"}}' in prompt
    assert "<tool_response>\nSunny in Paris\n</tool_response>" in prompt


def test_llama_index_roles_and_calls_become_openai_messages() -> None:
    """FUNCTION is a tool result, CHATBOT and MODEL (Cohere's, Gemini's) the assistant; a call's
    arguments as a JSON string are parsed; past reasoning is left out."""
    call = ToolCallBlock(tool_call_id="c1", tool_name="get_weather", tool_kwargs='{"city": "Oslo"}')
    history = [
        ChatMessage(role=MessageRole.DEVELOPER, content="Be brief."),
        ChatMessage(
            role=MessageRole.MODEL,
            blocks=[ThinkingBlock(content="THOUGHT"), TextBlock(text="Let me look."), call],
        ),
        ChatMessage(
            role=MessageRole.FUNCTION, content="Sunny", additional_kwargs={"tool_call_id": "c1"}
        ),
        ChatMessage(role=MessageRole.CHATBOT, content="Sunny in Oslo."),
    ]
    function = {"name": "get_weather", "arguments": {"city": "Oslo"}}
    assert to_openai_messages(history) == [
        {"role": "developer", "content": "Be brief."},
        {"role": "assistant", "content": "Let me look.",
         "tool_calls": [{"id": "c1", "type": "function", "function": function}]},
        {"role": "tool", "content": "Sunny", "tool_call_id": "c1"},
        {"role": "assistant", "content": "Sunny in Oslo."},
    ]  # fmt: skip


# -- errors ---------------------------------------------------------------------------------------


def test_errors_are_the_package_s_typed_errors(servers: Servers) -> None:
    llm, small, large = llm_for(servers)
    with pytest.raises(InvalidArgumentError, match="unsupported call arguments"):
        llm.chat(user(), frobnicate=1)
    with pytest.raises(InvalidArgumentError, match="unsupported call arguments"):
        llm.stream_chat(user(), frobnicate=1)  # at the call, before any request
    with pytest.raises(InvalidArgumentError, match="empty"):
        llm.chat([])
    image = ChatMessage(role=MessageRole.USER, blocks=[ImageBlock(url="http://x.invalid/a.png")])
    with pytest.raises(InvalidArgumentError, match="text only"):
        llm.chat([image])
    assert small.requests == large.requests == []


async def test_server_errors_propagate_in_every_mode(servers: Servers) -> None:
    small, large = servers(max_model_len=20)
    llm = GlimpRouterLLM(router=router_for(small, large))
    long = QUESTION * 20
    with pytest.raises(ContextLengthExceededError):
        llm.chat(user(long))
    with pytest.raises(ContextLengthExceededError):
        list(llm.stream_chat(user(long)))
    with pytest.raises(ContextLengthExceededError):
        await llm.acomplete(long)
    with pytest.raises(ContextLengthExceededError):
        [r async for r in await llm.astream_chat(user(long))]
