"""SessionCookies: what a server sets, kept per conversation in a bounded map."""

from __future__ import annotations

import httpx2

from langchain_glimprouter.http.cookies import SessionCookies, no_jar

URL = "http://gateway.example/v1/completions"


def answer(set_cookie: str) -> httpx2.Response:
    return httpx2.Response(
        200, headers={"set-cookie": set_cookie}, request=httpx2.Request("POST", URL)
    )


def test_each_conversation_gets_back_only_its_own_cookies() -> None:
    cookies = SessionCookies()
    cookies.keep("a", answer("llm-d-session=cG9kLTE=; Path=/; HttpOnly"))
    cookies.keep("b", answer("llm-d-session=cG9kLTI=; Path=/"))
    assert cookies.headers("a", URL, {"x": "1"}) == {"x": "1", "Cookie": "llm-d-session=cG9kLTE="}
    assert cookies.headers("b", URL, {})["Cookie"] == "llm-d-session=cG9kLTI="
    assert cookies.headers("c", URL, {}) == {}
    assert cookies.headers(None, URL, {}) == {}
    cookies.keep("a", answer("llm-d-session=; Max-Age=0; Path=/"))  # the server deletes it
    assert cookies.headers("a", URL, {}) == {}


def test_the_least_recently_used_conversation_is_forgotten_past_the_limit() -> None:
    cookies = SessionCookies(limit=2)
    for session in ("a", "b"):
        cookies.keep(session, answer(f"pod={session}; Path=/"))
    cookies.headers("a", URL, {})  # a is used again: b is now the oldest
    cookies.keep("c", answer("pod=c; Path=/"))
    assert [cookies.headers(s, URL, {}).get("Cookie") for s in "abc"] == ["pod=a", None, "pod=c"]


def test_a_limit_of_zero_keeps_nothing_and_the_routers_pools_keep_no_jar() -> None:
    cookies = SessionCookies(limit=0)
    cookies.keep("a", answer("pod=a; Path=/"))
    assert cookies.headers("a", URL, {}) == {}
    client = httpx2.Client(cookies=no_jar())
    client.cookies.extract_cookies(answer("pod=a; Path=/"))
    assert not client.cookies
