"""Cookies kept per conversation, for a gateway that pins a session to a pod by cookie.

llm-d's session-affinity scorer answers with ``Set-Cookie: llm-d-session=<the chosen pod>`` and
sends a later request carrying that cookie to the same pod. An HTTP client keeps one cookie
jar for all its requests, so every conversation would carry the pod of the first one that got
a cookie. The connection pools the router builds keep no jar (:func:`no_jar`); the cookies a
server or gateway sets are kept per conversation instead (:class:`SessionCookies`, keyed by
the conversation's id, which the engine computes for every conversation whether or not the
backend has a ``session_header``) and sent only with that conversation's later requests.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from http.cookiejar import Cookie, CookieJar, DefaultCookiePolicy
from typing import Any

import httpx2

CONVERSATIONS = 4096
"""Conversations whose cookies a client keeps at most; past that the least recently used one's
are dropped (its next request is placed afresh by the gateway, and sticks again)."""


class _KeepNone(DefaultCookiePolicy):
    def set_ok(self, cookie: Cookie, request: Any) -> bool:
        return False


def no_jar() -> CookieJar:
    """A cookie jar that keeps nothing, for the connection pools the router builds."""
    return CookieJar(policy=_KeepNone())


class SessionCookies:
    """The cookies each conversation was given by one server, in a bounded LRU map.

    ``limit=0`` keeps none: a caller's own client keeps cookies in its own jar, as configured.
    Thread-safe; the jars are the standard library's (paths, expiry and deletion as RFC 6265).
    """

    def __init__(self, limit: int = CONVERSATIONS) -> None:
        self._limit = limit
        self._jars: OrderedDict[str, httpx2.Cookies] = OrderedDict()
        self._lock = threading.Lock()

    def headers(self, session: str | None, url: str, headers: dict[str, Any]) -> dict[str, Any]:
        """``headers`` with a ``Cookie`` header of what the conversation was given for ``url``
        (unchanged if nothing)."""
        if session is None or not self._jars:
            return headers
        with self._lock:
            jar = self._jars.get(session)
            if jar is None:
                return headers
            self._jars.move_to_end(session)
        request = httpx2.Request("POST", url)
        jar.set_cookie_header(request)
        cookie = request.headers.get("cookie")
        return {**headers, "Cookie": cookie} if cookie else headers

    def keep(self, session: str | None, response: httpx2.Response) -> None:
        """Keep the cookies ``response`` sets, for the conversation's later requests."""
        if session is None or not self._limit or "set-cookie" not in response.headers:
            return
        with self._lock:
            jar = self._jars.get(session)
            if jar is None:
                jar = self._jars[session] = httpx2.Cookies()
                if len(self._jars) > self._limit:
                    self._jars.popitem(last=False)
            else:
                self._jars.move_to_end(session)
        jar.extract_cookies(response)
