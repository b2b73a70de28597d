"""Cookies a gateway sets stay with their conversation: llm-d's session affinity names the pod in
a ``llm-d-session`` cookie, so a cookie replayed with another conversation's requests would pin
that conversation to the first one's pod."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from typing import Any

import httpx2
import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from langchain_glimprouter import Backend, GlimpRouterChatModel
from langchain_glimprouter.http.client import BackendClient
from scripted_server import Script, ScriptedServer
from tests.support.pair import scripted_pair

COOKIE = "llm-d-session"


class CookieGateway:
    """An ASGI gateway in front of a scripted server, pinning by cookie as llm-d's
    session-affinity scorer does: a request without the cookie goes to a new "pod", named in the
    ``Set-Cookie`` of its answer; one with the cookie gets no new one. Every request's path and
    cookie are recorded."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.seen: list[tuple[str, str | None]] = []
        self.pods = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] == "/health":
            return await self.app(scope, receive, send)
        cookie = dict(scope["headers"]).get(b"cookie")
        self.seen.append((scope["path"], cookie.decode() if cookie else None))
        if cookie and f"{COOKIE}=".encode() in cookie:
            return await self.app(scope, receive, send)
        self.pods += 1
        pod = base64.b64encode(f"default/pod-{self.pods}".encode()).decode()
        set_cookie = f"{COOKIE}={pod}; Path=/; HttpOnly; SameSite=Lax".encode()

        async def send_cookie(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message["headers"], (b"set-cookie", set_cookie)]}
            await send(message)

        await self.app(scope, receive, send_cookie)

    def pinned(self) -> list[str | None]:
        """The pod each request since the last call carried (None: none), and forget them."""
        pods = [None if c is None else base64.b64decode(c.split("=", 1)[1]).decode()
                for _, c in self.seen]  # fmt: skip
        self.seen.clear()
        return pods


@pytest.fixture
def gateways() -> Iterator[Callable[..., tuple[Any, Any]]]:
    """Factory: a small and a large scripted server, each behind its own :class:`CookieGateway`
    (``server.gateway``)."""
    started: list[ScriptedServer] = []

    def make(script: Script, **settings: Any) -> ScriptedServer:
        server = ScriptedServer(script, **settings)
        server.gateway = CookieGateway(server._app)  # type: ignore[attr-defined]
        server._app = server.gateway  # type: ignore[assignment,attr-defined]
        started.append(server.start())
        return server

    yield lambda: scripted_pair(make)
    for running in started:
        running.stop()


async def call(router: GlimpRouterChatModel, mode: str, messages: list[BaseMessage]) -> str:
    if mode == "invoke":
        return str(router.invoke(messages).content)
    if mode == "ainvoke":
        return str((await router.ainvoke(messages)).content)
    if mode == "stream":
        return "".join(str(c.content) for c in router.stream(messages))
    return "".join([str(c.content) async for c in router.astream(messages)])


@pytest.mark.parametrize("session_header", [None, "x-session-id"])
@pytest.mark.parametrize("mode", ["invoke", "ainvoke", "stream", "astream"])
async def test_a_gateways_cookie_stays_with_its_conversation(
    gateways: Any, mode: str, session_header: str | None
) -> None:
    small, large = gateways()
    router = GlimpRouterChatModel(
        small=Backend(base_url=small.base_url, model="small-m", session_header=session_header),
        large=Backend(base_url=large.base_url, model="large-m", session_header=session_header),
        threshold=1.0,
    )
    tiers = (small.gateway, large.gateway)
    first = [HumanMessage("What is 6 times 7?")]
    reply = await call(router, mode, first)
    for gateway in tiers:
        assert {"/tokenize", "/v1/completions"} <= {path for path, _ in gateway.seen}
        pinned = gateway.pinned()
        assert pinned == [None] + ["default/pod-1"] * (len(pinned) - 1)
        assert len(pinned) > 2
    # Another conversation is placed afresh (not on the first one's pod) and sticks there.
    await call(router, mode, [HumanMessage("What is 2 plus 2?")])
    for gateway in tiers:
        pinned = gateway.pinned()
        assert pinned[0] is None
        assert set(pinned[1:]) == {"default/pod-2"}
    # The first conversation's next turn goes back to its own pod from its first request.
    await call(router, mode, [*first, AIMessage(reply), HumanMessage("And 6 times 8?")])
    for gateway in tiers:
        assert set(gateway.pinned()) == {"default/pod-1"}


def test_a_callers_own_client_keeps_its_own_jar(gateways: Any) -> None:
    small, large = gateways()
    jar = httpx2.Client()
    router = GlimpRouterChatModel(
        small=Backend(base_url=small.base_url, model="small-m", http_client=jar),
        large=Backend(base_url=large.base_url, model="large-m"),
        threshold=1.0,
    )
    router.invoke("What is 6 times 7?")
    assert small.gateway.pinned()[1:]  # the caller's jar replays what it was given ...
    assert jar.cookies[COOKIE]  # ... and holds it, as any client of the caller's would
    router.invoke("What is 2 plus 2?")
    assert set(small.gateway.pinned()) == {"default/pod-1"}  # shared by all conversations


@pytest.mark.parametrize("sync", [True, False])
async def test_a_completion_request_carries_its_own_conversations_cookie(
    gateways: Any, sync: bool
) -> None:
    small, _ = gateways()
    client = BackendClient("small", Backend(base_url=small.base_url, model="small-m"),
                           api_key=None, timeout=10.0)  # fmt: skip
    body = {"model": "small-m", "prompt": "a", "max_tokens": 1}  # a non-streamed completion
    for session in ("A", "B", "A", "B", None):
        if sync:
            client.request_json("POST", "/v1/completions", body, session)
        else:
            await client.arequest_json("POST", "/v1/completions", body, session)
    # None: a request outside any conversation (token counting) carries no one's cookie.
    assert small.gateway.pinned() == [None, None, "default/pod-1", "default/pod-2", None]
    await client.aclose()
