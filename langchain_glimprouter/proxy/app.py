"""The proxy's Starlette app (:func:`create_app`): its endpoints, authorisation and the run of
one routed call, plain or streamed."""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from contextlib import aclosing
from typing import Any, Protocol

from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from langchain_glimprouter.core.answers import RoutedAnswer, RouterEvent
from langchain_glimprouter.core.events import AnswerDelta, ReasoningDelta
from langchain_glimprouter.errors import (
    BackendTimeoutError,
    BackendUnreachableError,
    GlimpRouterError,
    InvalidArgumentError,
)
from langchain_glimprouter.proxy.access_log import middleware, routed
from langchain_glimprouter.proxy.chat_request import (
    REASONING_EFFORTS,
    ChatRequest,
    check_efforts,
    parse_chat_request,
)
from langchain_glimprouter.proxy.errors import ApiError, api_error
from langchain_glimprouter.proxy.metrics import CONTENT_TYPE, Metrics
from langchain_glimprouter.proxy.openai_json import Shaper
from langchain_glimprouter.proxy.streaming import ClientGone, EventStream, unless_disconnected
from langchain_glimprouter.proxy.strict_json import dumps, loads_request
from langchain_glimprouter.router import PreparedCall, Role, Router

HEALTH_TIMEOUT_S = 5.0
"""How long ``/health`` waits for each backend's ``/v1/models``."""
GONE = 499
"""The status counted for a request whose client left (nginx's "client closed request")."""

Endpoint = Callable[[Request], Awaitable[Response]]


class HasRouter(Protocol):
    """What wraps a Router (a :class:`~langchain_glimprouter.GlimpRouterChatModel`)."""

    @property
    def router(self) -> Router: ...


def router_of(source: Router | HasRouter) -> Router:
    """``source`` if it is a Router, else the Router it wraps (its ``router``)."""
    router = source if isinstance(source, Router) else getattr(source, "router", None)
    if not isinstance(router, Router):
        raise InvalidArgumentError(
            f"the proxy serves a Router (or what wraps one, as GlimpRouterChatModel.router), "
            f"not {type(source).__name__}."
        )
    return router


def sse(payload: dict[str, Any]) -> str:
    return f"data: {dumps(payload)}\n\n"


class Proxy:
    """One app's router, settings and metrics, and its endpoints."""

    def __init__(self, router: Router, served_name: str, api_key: str | None, limit: int) -> None:
        self.router, self.served_name, self.limit = router, served_name, limit
        self.key = api_key.encode() if api_key else None
        self.metrics = Metrics()
        self.created = int(time.time())
        self.efforts: Mapping[str, int] = REASONING_EFFORTS
        """``reasoning_effort`` levels to reasoning budgets."""

    def guarded(self, endpoint: Endpoint) -> Endpoint:
        """``endpoint`` behind the proxy's bearer key, when one is set."""

        async def checked(request: Request) -> Response:
            if self.key is not None:
                given = request.headers.get("authorization", "")
                scheme, _, token = given.partition(" ")
                if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), self.key):
                    self.metrics.errors.labels("invalid_api_key").inc()
                    return ApiError(
                        401,
                        "Incorrect or missing API key: send the proxy's key as "
                        "'Authorization: Bearer <key>'.",
                        code="invalid_api_key",
                    ).response()
            return await endpoint(request)

        return checked

    async def read_json(self, request: Request) -> Any:
        """The body as JSON, at most ``limit`` bytes (413 beyond, by Content-Length or as read)."""
        too_large = ApiError(
            413,
            f"the request body is larger than {self.limit} bytes; send less, or raise the "
            "proxy's max_body_bytes.",
            code="request_too_large",
        )
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.limit:
            raise too_large
        body = bytearray()
        async for part in request.stream():
            body += part
            if len(body) > self.limit:
                raise too_large
        return loads_request(body)

    # -- POST /v1/chat/completions ----------------------------------------------------------------

    async def chat(self, request: Request) -> Response:
        started = time.perf_counter()
        stream = streaming = False
        self.metrics.in_flight.inc()
        try:
            parsed = parse_chat_request(
                await self.read_json(request), self.router, self.served_name, self.efforts
            )
            stream = parsed.stream
            call = parsed.prepare(self.router)
            if stream:
                # The first event is awaited here, so a call that fails at once (a backend
                # down, a prompt too long) gets its HTTP status rather than a failed stream.
                events = self._routed(call, True, started)
                first = await unless_disconnected(request.receive, anext(events))
                streaming = True  # from here the stream counts the request when it ends
                streamed = StreamedCall(self, call, parsed, started, first, events)
                return EventStream(streamed.events, streamed.close)
            shaper = Shaper(parsed.model)
            answer = await unless_disconnected(
                request.receive, self._collect(call, shaper, started)
            )
        except (ClientGone, ClientDisconnect):  # left before the answer, or mid-body
            self._end(stream, started, GONE)
            return Response(status_code=GONE)
        except Exception as exc:
            failure = api_error(exc)
            self._end(stream, started, failure.status, failure.code or type(exc).__name__)
            return failure.response()
        finally:
            if not streaming:
                self.metrics.in_flight.dec()
        record = answer.record
        headers = {
            "x-glimprouter-steps": str(record.n_steps),
            "x-glimprouter-large-steps": str(record.n_large_steps),
            "x-glimprouter-intervention-rate": f"{record.intervention_rate:.4g}",
        }
        sent = JSONResponse(shaper.completion(answer), headers=headers)  # rendered here
        self._end(False, started, 200)  # counted once it can be sent
        return sent

    def _end(self, stream: bool, started: float, status: int, error: str | None = None) -> None:
        seconds = time.perf_counter() - started
        self.metrics.finished(stream=stream, status=status, seconds=seconds, error=error)

    async def _routed(
        self, call: PreparedCall, stream: bool, started: float
    ) -> AsyncGenerator[RouterEvent, None]:
        """The call's router events; times the first token, counts the record at the end."""
        first = True
        # aevents is an async generator: closing it closes the open stream (the server aborts)
        driven = call.aevents()
        async with aclosing(driven) as events:
            async for event in events:
                if first and isinstance(event, (ReasoningDelta, AnswerDelta)):
                    first = False
                    seconds = time.perf_counter() - started
                    self.metrics.first_token.labels(str(stream).lower()).observe(seconds)
                elif isinstance(event, RoutedAnswer):
                    self.metrics.routed(event.record)
                    routed(event.record)
                yield event

    async def _collect(self, call: PreparedCall, shaper: Shaper, started: float) -> RoutedAnswer:
        """The call's answer, its events read by ``shaper``."""
        async with aclosing(self._routed(call, False, started)) as events:
            async for event in events:
                if isinstance(event, RoutedAnswer):
                    return event
                shaper.delta(event)
        raise GlimpRouterError("the routing program ended without a result")

    # -- the other endpoints ----------------------------------------------------------------------

    def cards(self) -> list[dict[str, Any]]:
        names = dict.fromkeys((self.served_name, self.router.config.large.model))
        return [
            {"id": name, "object": "model", "created": self.created, "owned_by": "glimprouter"}
            for name in names
        ]

    async def models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": self.cards()})

    async def model(self, request: Request) -> Response:
        """``GET /v1/models/{id}``: the card of the served name or the large model, else 404."""
        name = request.path_params["model_id"]
        for card in self.cards():
            if card["id"] == name:
                return JSONResponse(card)
        return ApiError(
            404,
            f"The model {name!r} does not exist; this proxy serves {self.served_name!r}.",
            param="model",
            code="model_not_found",
        ).response()

    async def _tier(self, role: Role) -> str:
        """``ok`` when a replica of ``role`` answers ``GET /v1/models``, else why not."""
        clients = self.router.clients(role)

        async def check(client: Any) -> None:
            await asyncio.wait_for(
                client.arequest_json("GET", "/v1/models", None), HEALTH_TIMEOUT_S
            )

        outcomes = await asyncio.gather(*map(check, clients), return_exceptions=True)
        if any(outcome is None for outcome in outcomes):
            return "ok"
        failure = outcomes[0]
        if isinstance(failure, BackendUnreachableError):
            return "unreachable"
        if isinstance(failure, (BackendTimeoutError, TimeoutError)):
            return "timeout"
        return "error"

    async def health(self, request: Request) -> Response:
        small, large = await asyncio.gather(self._tier("small"), self._tier("large"))
        ok = small == large == "ok"
        body = {"status": "ok" if ok else "unavailable", "small": small, "large": large}
        return JSONResponse(body, status_code=200 if ok else 503)

    async def metrics_text(self, request: Request) -> Response:
        return Response(self.metrics.exposition(), media_type=CONTENT_TYPE)


class StreamedCall:
    """A streamed call from its first engine event on: its server-sent events (a failure is
    the last one), and its end (:meth:`close`), which closes the engine's events, aborting
    both servers' requests, and counts the request once, whether or not the events were ever
    read."""

    def __init__(
        self,
        proxy: Proxy,
        call: PreparedCall,
        parsed: ChatRequest,
        started: float,
        first: RouterEvent,
        engine: AsyncGenerator[RouterEvent, None],
    ) -> None:
        self.proxy, self.call, self.parsed, self.started = proxy, call, parsed, started
        self.first, self.engine = first, engine
        self.status: int = GONE
        """The status counted: 499 (the client left) until the events end otherwise."""
        self.error: str | None = None
        self.events = self._sse()
        """The call's server-sent events (none of its code runs until the first is asked for)."""

    async def _sse(self) -> AsyncGenerator[str, None]:
        shaper, include_usage = Shaper(self.parsed.model), self.parsed.include_usage

        def texts(event: RouterEvent) -> list[str]:
            return [sse(chunk) for chunk in shaper.chunks(event, include_usage)]

        try:
            yield sse(shaper.first())
            for text in texts(self.first):
                yield text
            async for event in self.engine:
                for text in texts(event):
                    yield text
        except Exception as exc:
            failure = api_error(exc)
            self.status, self.error = failure.status, failure.code or type(exc).__name__
            yield sse(failure.body())
            return
        yield "data: [DONE]\n\n"
        self.status = 200

    async def close(self) -> None:
        try:
            await self.events.aclose()
            await self.engine.aclose()
        finally:
            self.proxy.metrics.in_flight.dec()
            self.proxy._end(True, self.started, self.status, self.error)


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    code = "not_found" if status == 404 else None
    message = f"{request.method} {request.url.path}: {getattr(exc, 'detail', exc)}"
    return ApiError(status, message, code=code).response()


def create_app(
    router: Router | HasRouter,
    *,
    served_name: str = "glimprouter",
    api_key: str | SecretStr | None = None,
    max_body_bytes: int = 4 * 1024 * 1024,
    reasoning_effort_budgets: Mapping[str, int] | None = None,
    allowed_origins: Sequence[str] = (),
) -> Starlette:
    """An OpenAI-compatible chat completions server over ``router`` (see
    :mod:`langchain_glimprouter.proxy`): a :class:`~langchain_glimprouter.router.Router`, or
    what wraps one (a :class:`~langchain_glimprouter.GlimpRouterChatModel`: its ``router``).
    ``reasoning_effort_budgets`` maps ``reasoning_effort`` levels to reasoning budgets
    (default :data:`~langchain_glimprouter.proxy.chat_request.REASONING_EFFORTS`);
    ``allowed_origins`` are the browser origins CORS allows (none by default)."""
    key = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
    proxy = Proxy(router_of(router), served_name, key, max_body_bytes)
    routes = [
        Route("/v1/chat/completions", proxy.guarded(proxy.chat), methods=["POST"]),
        Route("/v1/models", proxy.guarded(proxy.models), methods=["GET"]),
        Route("/v1/models/{model_id:path}", proxy.guarded(proxy.model), methods=["GET"]),
        Route("/metrics", proxy.guarded(proxy.metrics_text), methods=["GET"]),
        Route("/health", proxy.health, methods=["GET"]),
    ]
    if reasoning_effort_budgets is not None:
        proxy.efforts = check_efforts(reasoning_effort_budgets)
    stack = middleware(allowed_origins)
    app = Starlette(
        routes=routes, middleware=stack, exception_handlers={HTTPException: _http_error}
    )
    app.state.proxy = proxy
    return app
