"""Scale-out: a conversation sticks to one replica per tier (a dead replica: loopback_tests)."""

from __future__ import annotations

from langchain_glimprouter.core.ops import replica_order
from tests.support.pair import replica_router


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
    model = replica_router(small, large)
    for _ in range(3):
        model.invoke("What is 6 times 7?")
    assert sorted(len(s.requests) > 0 for s in small) == [False, True]
    assert sorted(len(s.requests) > 0 for s in large) == [False, True]
    for i in range(12):
        model.invoke(f"Question number {i}?")
    assert all(s.requests for s in small + large)


def test_a_conversation_is_known_by_its_messages_up_to_the_first_user_one() -> None:
    from langchain_glimprouter.core.engine import opening

    system = {"role": "system", "content": "Be brief."}
    first = {"role": "user", "content": "What is 6 times 7?"}
    turn = [
        system,
        first,
        {"role": "assistant", "content": "42"},
        {"role": "user", "content": "8?"},
    ]
    assert opening([first]) == opening(turn[1:]) == [first]  # every turn of a chat: one key
    assert opening(turn) == opening(turn[:2]) == [system, first]
    assert opening([system]) == [system]
