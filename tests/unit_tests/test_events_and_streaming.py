"""The glimprouter_step event in every mode, and the order and content of streamed chunks."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler
from langchain_core.messages import AIMessageChunk
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda

from langchain_glimprouter import STEP_EVENT
from tests.support.pair import router_for

QUESTION = "What is 6 times 7?"


class Steps(BaseCallbackHandler):
    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    def on_custom_event(self, name: str, data: Any, **kwargs: Any) -> None:
        if name == STEP_EVENT:
            self.seen.append(data)


class AsyncSteps(AsyncCallbackHandler):
    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    async def on_custom_event(self, name: str, data: Any, **kwargs: Any) -> None:
        if name == STEP_EVENT:
            self.seen.append(data)


def test_event_per_step_in_sync_modes(servers: Any) -> None:
    small, large = servers()
    model = router_for(small, large)
    lcel = RunnableLambda(lambda q: q) | model | StrOutputParser()
    for run, calls in (
        (lambda cfg: model.invoke(QUESTION, config=cfg), 1),
        (lambda cfg: list(model.stream(QUESTION, config=cfg)), 1),
        (lambda cfg: model.batch([QUESTION, QUESTION], config=cfg), 2),
        (lambda cfg: lcel.invoke(QUESTION, config=cfg), 1),
        (lambda cfg: list(lcel.stream(QUESTION, config=cfg)), 1),
    ):
        handler = Steps()
        run({"callbacks": [handler]})
        assert sorted(s["index"] for s in handler.seen) == sorted([0, 1, 2, 3] * calls)
        decisions = {(s["index"], s["model"]) for s in handler.seen}
        assert decisions == {(0, "small"), (1, "large"), (2, "small"), (3, "large")}


@pytest.mark.parametrize("handler_type", [Steps, AsyncSteps])
async def test_event_per_step_in_async_modes(servers: Any, handler_type: type) -> None:
    small, large = servers()
    model = router_for(small, large)
    handler = handler_type()
    await model.ainvoke(QUESTION, config={"callbacks": [handler]})
    assert [s["index"] for s in handler.seen] == [0, 1, 2, 3]
    handler.seen.clear()
    async for _ in model.astream(QUESTION, config={"callbacks": [handler]}):
        pass
    assert [s["index"] for s in handler.seen] == [0, 1, 2, 3]
    handler.seen.clear()
    await model.abatch([QUESTION, QUESTION], config={"callbacks": [handler]})
    assert sorted(s["index"] for s in handler.seen) == [0, 0, 1, 1, 2, 2, 3, 3]


async def test_astream_events_v2_bare_and_in_a_chain(servers: Any) -> None:
    small, large = servers()
    model = router_for(small, large)
    bare = [e async for e in model.astream_events(QUESTION, version="v2")]
    custom = [e for e in bare if e["event"] == "on_custom_event"]
    assert [e["name"] for e in custom] == [STEP_EVENT] * 4
    assert [e["data"]["index"] for e in custom] == [0, 1, 2, 3]
    model_run = next(e for e in bare if e["event"] == "on_chat_model_start")["run_id"]
    assert all(e["run_id"] == model_run for e in custom)

    chain = ChatPromptTemplate.from_messages([("human", "{q}")]) | model | StrOutputParser()
    events = [e async for e in chain.astream_events({"q": QUESTION}, version="v2")]
    assert len([e for e in events if e["event"] == "on_custom_event"]) == 4
    end = next(
        e for e in events if e["event"] == "on_chain_end" and e["name"] == "RunnableSequence"
    )
    assert end["data"]["output"] == "The answer is 42."


def test_stream_order_and_aggregate(servers: Any) -> None:
    small, large = servers()
    model = router_for(small, large)
    chunks = list(model.stream(QUESTION))
    kinds = []
    for chunk in chunks:
        assert isinstance(chunk, AIMessageChunk)
        if chunk.additional_kwargs.get("reasoning_content"):
            kinds.append("reasoning")
        if chunk.response_metadata.get("glimprouter_steps"):
            kinds.append("step")
        if chunk.content:
            kinds.append("answer")
    # Reasoning and step records interleave, then the answer, then the final record.
    first_answer = kinds.index("answer")
    assert "reasoning" not in kinds[first_answer:]
    assert "step" not in kinds[first_answer:]
    assert kinds.count("step") == 4
    assert kinds[0] == "reasoning"
    # Token-level reasoning deltas: more chunks than steps.
    assert kinds.count("reasoning") > 4

    total = chunks[0]
    for chunk in chunks[1:]:
        total += chunk
    invoked = model.invoke(QUESTION)
    assert total.content == invoked.content
    assert (
        total.additional_kwargs["reasoning_content"]
        == invoked.additional_kwargs["reasoning_content"]
    )
    record = total.response_metadata["glimprouter"]
    assert [s["model"] for s in record["steps"]] == ["small", "large", "small", "large"]
    assert [s["index"] for s in total.response_metadata["glimprouter_steps"]] == [0, 1, 2, 3]
    assert total.response_metadata["model_name"] == "large-m"
    assert total.response_metadata["model_provider"] == "glimprouter"
    assert total.response_metadata["finish_reason"] == "stop"
    assert total.usage_metadata == invoked.usage_metadata
    assert [b["type"] for b in total.content_blocks] == ["reasoning", "text"]
    assert "</think>" not in total.additional_kwargs["reasoning_content"]


async def test_astream_matches_stream(servers: Any) -> None:
    small, large = servers()
    model = router_for(small, large)
    sync_text = "".join(str(c.content) for c in model.stream(QUESTION))
    async_text = "".join([str(c.content) async for c in model.astream(QUESTION)])
    assert sync_text == async_text == "The answer is 42."


async def test_events_when_an_invoke_streams_internally(servers: Any) -> None:
    """Under astream_events an invoke inside a node streams through _astream without a run
    manager; the step events still arrive (through the node's run context)."""
    small, large = servers()
    model = router_for(small, large)

    async def node(question: str) -> str:
        message = await model.ainvoke(question)
        return str(message.content)

    events = [e async for e in RunnableLambda(node).astream_events(QUESTION, version="v2")]
    custom = [e for e in events if e["event"] == "on_custom_event"]
    assert [e["data"]["index"] for e in custom] == [0, 1, 2, 3]
    streamed = [e for e in events if e["event"] == "on_chat_model_stream"]
    assert streamed, "the invoke did stream internally"
