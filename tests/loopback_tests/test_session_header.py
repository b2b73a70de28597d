"""Backend.session_header: every request of a conversation carries one id, for a gateway that
routes by session (production-stack's --session-key, semantic-router's x-session-id)."""

from __future__ import annotations

from typing import Any

from langchain_core.messages import AIMessage, HumanMessage

from langchain_glimprouter import Backend, GlimpRouterChatModel
from tests.support.pair import router_for

HEADER = "x-session-id"


def gateway_router(small: Any, large: Any) -> GlimpRouterChatModel:
    return GlimpRouterChatModel(
        small=Backend(base_url=small.base_url, model="small-m", session_header=HEADER),
        large=Backend(base_url=large.base_url, model="large-m", session_header="x-user-id"),
        threshold=1.0,
    )


def sessions(*servers: Any) -> list[str | None]:
    found = []
    for server in servers:
        for log in server.requests:
            found.append(log.headers.get(HEADER) or log.headers.get("x-user-id"))
    return found


async def test_one_id_per_conversation_on_every_request_of_both_tiers(servers: Any) -> None:
    small, large = servers()
    router = gateway_router(small, large)
    first = [HumanMessage("What is 6 times 7?")]
    reply = router.invoke(first)
    ids = sessions(small, large)
    assert len(ids) >= 4
    assert len(set(ids)) == 1
    assert ids[0] is not None
    assert len(ids[0]) == 32  # a hash: no text of the messages
    assert "6 times" not in ids[0]
    assert all(HEADER in log.headers for log in small.requests)
    assert all("x-user-id" in log.headers for log in large.requests)
    # The next turn of the same conversation (async this time) keeps its id.
    small.reset(), large.reset()
    await router.ainvoke([*first, AIMessage(str(reply.content)), HumanMessage("And 6 times 8?")])
    assert set(sessions(small, large)) == {ids[0]}
    # Another conversation gets another id.
    small.reset(), large.reset()
    router.invoke("What is 2 plus 2?")
    other = set(sessions(small, large))
    assert len(other) == 1
    assert other != {ids[0]}


def test_no_header_unless_asked(servers: Any) -> None:
    small, large = servers()
    router_for(small, large).invoke("What is 6 times 7?")
    assert not any(
        key.startswith("x-session") for s in (small, large) for log in s.requests
        for key in log.headers
    )  # fmt: skip
