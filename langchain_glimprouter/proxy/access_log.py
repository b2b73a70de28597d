"""Every response's request id (``x-request-id``) and one access-log line per request, by an
ASGI middleware (:class:`AccessLog`), and CORS for the origins the operator allows
(:func:`middleware`).

The request id is the client's own ``x-request-id`` when it sent a usable one (printable ASCII,
at most :data:`MAX_ID_LENGTH` characters, as gateways and the openai SDKs send), else a new one;
it goes back on every response, errors and preflights included, and into every log line the
proxy writes while answering the request (:func:`request_id`), so that a client's report and
the proxy's log meet.

The access log is one line per request at INFO on the ``langchain_glimprouter.proxy.access``
logger: method, path, status, latency, request id and, for a routed call, its steps and
intervention rate. It never holds a key, a header's value or any text of the messages.
"""

from __future__ import annotations

import contextvars
import logging
import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from langchain_glimprouter.records import RoutingRecord

log = logging.getLogger("langchain_glimprouter.proxy.access")
HEADER = "x-request-id"
MAX_ID_LENGTH = 128
EXPOSED = (HEADER, "x-glimprouter-steps", "x-glimprouter-large-steps",
           "x-glimprouter-intervention-rate", "x-glimprouter-large-share",
           "x-glimprouter-saved-tokens")  # fmt: skip
"""The response headers a browser's script may read (CORS)."""


@dataclass
class Exchange:
    """What the access log says of one request, filled in as it is answered."""

    request_id: str
    status: int | None = None
    steps: int | None = None
    intervention_rate: float | None = None


_current: contextvars.ContextVar[Exchange | None] = contextvars.ContextVar(
    "glimprouter_exchange", default=None
)


def request_id() -> str | None:
    """The id of the request being answered (None outside one)."""
    exchange = _current.get()
    return exchange.request_id if exchange else None


def routed(record: RoutingRecord) -> None:
    """Note the routed call's record for the request's access-log line."""
    exchange = _current.get()
    if exchange is not None:
        exchange.steps, exchange.intervention_rate = record.n_steps, record.intervention_rate


CLIENT_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
"""A client's ``x-request-id`` that the proxy keeps (a sane token); any other is replaced."""


def new_request_id() -> str:
    """A fresh request id: ``req_`` and 24 hex digits."""
    return f"req_{uuid.uuid4().hex[:24]}"


def _given_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers") or ():
        if name == HEADER.encode():
            text: str = value.decode("latin-1")
            if CLIENT_ID.fullmatch(text):
                return text
    return None


class AccessLog:
    """ASGI middleware: the request id on every response, and the access-log line."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        exchange = Exchange(_given_id(scope) or new_request_id())
        token = _current.set(exchange)
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                exchange.status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", ()) if k != HEADER.encode()]
                headers.append((HEADER.encode(), exchange.request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except BaseException:
            exchange.status = exchange.status or 500
            raise
        finally:
            _current.reset(token)
            _log(scope, exchange, time.perf_counter() - started)


def _log(scope: Scope, exchange: Exchange, seconds: float) -> None:
    fields: list[Any] = [scope.get("method", "-"), scope.get("path", "-")]
    fields += [exchange.status or 499, f"{seconds * 1000:.1f}ms"]
    fields.append(f"request_id={exchange.request_id}")
    if exchange.steps is not None:
        fields.append(f"steps={exchange.steps}")
    if exchange.intervention_rate is not None:
        fields.append(f"intervention_rate={exchange.intervention_rate:.4g}")
    log.info(" ".join(map(str, fields)))


def middleware(allowed_origins: Sequence[str] = ()) -> list[Middleware]:
    """The proxy's middleware, outermost first: the request id and access log, then CORS for
    ``allowed_origins`` (none: no CORS headers at all, and a browser's preflight is refused
    as any OPTIONS request is)."""
    stack = [Middleware(AccessLog)]
    if allowed_origins:
        stack.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(allowed_origins),
                allow_methods=["GET", "POST"],
                allow_headers=["*"],
                expose_headers=list(EXPOSED),
                max_age=600,
            )
        )
    return stack
