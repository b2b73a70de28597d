"""Scale-out over real connections: a replica that goes down is skipped, and a conversation
moves off it once."""

from __future__ import annotations

from tests.support.pair import SMALL_STEPS, replica_router


def test_a_dead_replica_is_skipped_and_the_conversation_moves_once(
    replicas: tuple[list, list],
) -> None:
    small, large = replicas
    model = replica_router(small, large)
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
