"""Scale-out: a conversation sticks to one replica per tier; a dead replica is skipped once."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from langchain_glimprouter import Backend, GlimpRouterChatModel
from langchain_glimprouter.routing.ops import replica_order
from scripted_server import Script, ScriptedServer

from .conftest import H_INIT, LARGE_STEPS, SMALL_STEPS


@pytest.fixture
def replicas() -> Iterator[tuple[list[ScriptedServer], list[ScriptedServer]]]:
    small = [ScriptedServer(Script(SMALL_STEPS, h_init=H_INIT), model="s").start() for _ in "ab"]
    large = [ScriptedServer(Script(LARGE_STEPS), model="l").start() for _ in "ab"]
    yield small, large
    for server in small + large:
        server.stop()


def router(small: list[ScriptedServer], large: list[ScriptedServer]) -> GlimpRouterChatModel:
    def backend(servers: list[ScriptedServer], model: str) -> Backend:
        urls = [s.base_url for s in servers]
        return Backend(base_url=urls[0], replicas=urls[1:], model=model)

    return GlimpRouterChatModel(
        small=backend(small, "s"), large=backend(large, "l"), threshold=1.0, max_retries=0
    )


def test_replica_order_is_sticky_and_spreads() -> None:
    urls = ["http://a/v1", "http://b/v1", "http://c/v1"]
    assert replica_order(urls, "conv-1") == replica_order(urls, "conv-1")
    firsts = {replica_order(urls, f"conv-{i}")[0] for i in range(50)}
    assert firsts == {0, 1, 2}
    # Removing a replica moves only the conversations that preferred it.
    for i in range(50):
        order = replica_order(urls, f"conv-{i}")
        if order[0] != 2:
            assert replica_order(urls[:2], f"conv-{i}")[0] == order[0]
    preferred = replica_order(urls, "conv-1")[0]
    assert replica_order(urls, "conv-1", avoid={urls[preferred]})[-1] == preferred


def test_a_conversation_sticks_to_one_replica(replicas: tuple[list, list]) -> None:
    small, large = replicas
    model = router(small, large)
    for _ in range(3):
        model.invoke("What is 6 times 7?")
    assert sorted(len(s.requests) > 0 for s in small) == [False, True]
    assert sorted(len(s.requests) > 0 for s in large) == [False, True]
    for i in range(12):
        model.invoke(f"Question number {i}?")
    assert all(s.requests for s in small + large)


def test_a_dead_replica_is_skipped_and_the_conversation_moves_once(
    replicas: tuple[list, list],
) -> None:
    small, large = replicas
    model = router(small, large)
    question = "What is 6 times 7?"
    model.invoke(question)
    preferred = next(i for i, s in enumerate(small) if s.requests)
    small[preferred].stop()
    msg = model.invoke(question)
    rec = msg.response_metadata["glimprouter"]
    assert rec["failovers"] == 1
    assert rec["steps"][0]["text"] == SMALL_STEPS[0]
    other = small[1 - preferred]
    assert other.requests
    # The next call knows the replica is down and goes straight to the other one.
    again = model.invoke(question).response_metadata["glimprouter"]
    assert again["failovers"] == 0
    assert other.wait_idle()
