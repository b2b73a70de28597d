"""The proxy's Starlette app (:func:`create_app`): its endpoints, authorisation and the run of
one routed call, plain or streamed."""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import replace
from typing import Any, Protocol

from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
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
from langchain_glimprouter.proxy.errors import ApiError
from langchain_glimprouter.proxy.failures import REQUEST_ID_HEADER, public_error, request_id
from langchain_glimprouter.proxy.health import HealthCache
from langchain_glimprouter.proxy.limits import BODY_TIMEOUT_S, OverloadGate, body_timed_out
from langchain_glimprouter.proxy.metrics import CONTENT_TYPE, Metrics
from langchain_glimprouter.proxy.openai_json import Shaper, record_headers
from langchain_glimprouter.proxy.policy import ClientPolicy
from langchain_glimprouter.proxy.responses import ResponsesSurface
from langchain_glimprouter.proxy.streaming import ClientGone, EventStream, unless_disconnected
from langchain_glimprouter.proxy.strict_json import dumps, loads_request
from langchain_glimprouter.router import PreparedCall, Router
from langchain_glimprouter.telemetry import incoming

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


class EventReader(Protocol):
    """What reads a whole answer's events (chat's :class:`Shaper`, Responses' shaper)."""

    def delta(self, event: RouterEvent, /) -> object: ...


class StreamWriter(Protocol):
    """The server-sent events of one API's stream (each the text of one event)."""

    def opening(self) -> list[str]:
        """The events before the first engine event's."""
        ...

    def texts(self, event: RouterEvent, /) -> list[str]:
        """The events of one engine event."""
        ...

    def failed(self, failure: ApiError, /) -> str:
        """The last event of a stream that failed after it started."""
        ...

    def closing(self) -> list[str]:
        """The events after the last engine event's."""
        ...


class Surface(EventReader, Protocol):
    """One API over the Router (chat completions, Responses) for one request, as
    :meth:`Proxy.serve` runs it: its body checked (:meth:`parse`: the chat request the Router
    runs), a whole answer read (``delta``) and written (:meth:`answer`), or the call's events
    written (:meth:`writer`)."""

    def parse(self, body: Any, /) -> ChatRequest: ...

    def answer(self, answer: RoutedAnswer, /) -> Response: ...

    def writer(self) -> StreamWriter: ...


class Proxy:
    """One app's router, settings and metrics, and its endpoints."""

    def __init__(
        self,
        router: Router,
        served_name: str,
        api_key: str | None,
        limit: int,
        policy: ClientPolicy | None = None,
        body_timeout: float = BODY_TIMEOUT_S,
    ) -> None:
        self.router, self.served_name, self.limit = router, served_name, limit
        self.body_timeout = body_timeout
        self.health_checks = HealthCache(self._tier)
        self.policy = policy or ClientPolicy()
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
        try:
            async with asyncio.timeout(self.body_timeout or None):
                async for part in request.stream():
                    body += part
                    if len(body) > self.limit:
                        raise too_large
        except TimeoutError:
            raise body_timed_out(self.body_timeout) from None
        return loads_request(body)

    # -- POST /v1/chat/completions ----------------------------------------------------------------

    async def chat(self, request: Request) -> Response:
        return await self.serve(request, ChatSurface(self.router, self.served_name, self.efforts))

    async def serve(self, request: Request, surface: Surface) -> Response:
        """One routed call of ``surface``'s API (chat completions, Responses): the body read
        within the limit, checked, run plain or streamed while the client is there, counted,
        and any failure in OpenAI's error shape."""
        started = time.perf_counter()
        stream = streaming = False
        rid = request_id(request)
        tagged = {REQUEST_ID_HEADER: rid}
        self.metrics.in_flight.inc()
        try:
            parsed = surface.parse(await self.read_json(request))
            self.policy.check(parsed.settings, self.router.config, parsed.aliases)
            stream = parsed.stream
            call = parsed.prepare(self.router)
            if (parent := incoming(request.headers)) is not None:
                call = replace(call, trace_parent=parent)  # the client's trace goes on
            if stream:
                # The first event is awaited here, so a call that fails at once (a backend
                # down, a prompt too long) gets its HTTP status rather than a failed stream.
                events = self._routed(call, True, started)
                first = await unless_disconnected(request.receive, anext(events))
                streaming = True  # from here the stream counts the request when it ends
                streamed = StreamedCall(self, call, surface.writer(), started, first, events)
                streamed.request_id = rid
                response: Response = EventStream(streamed.events, streamed.close)
                response.headers.update(tagged)
                return response
            answer = await unless_disconnected(
                request.receive, self._collect(call, surface, started)
            )
        except (ClientGone, ClientDisconnect):  # left before the answer, or mid-body
            self._end(stream, started, GONE)
            return Response(status_code=GONE, headers=tagged)
        except Exception as exc:
            failure = public_error(exc, rid)
            self._end(stream, started, failure.status, failure.code or type(exc).__name__)
            refused: Response = failure.response()
            refused.headers.update(tagged)
            return refused
        finally:
            if not streaming:
                self.metrics.in_flight.dec()
        done = surface.answer(answer)  # rendered here
        self._end(False, started, 200)  # counted once it can be sent
        done.headers.update(tagged)
        return done

    def overload(self) -> None:
        """Count a request answered 503 beyond ``--limit-concurrency`` (:mod:`.limits`)."""
        self.metrics.finished(stream=False, status=503, seconds=0.0, error="server_overloaded")

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

    async def _collect(
        self, call: PreparedCall, shaper: EventReader, started: float
    ) -> RoutedAnswer:
        """The call's answer, its events read by ``shaper``."""
        async with aclosing(self._routed(call, False, started)) as events:
            async for event in events:
                if isinstance(event, RoutedAnswer):
                    return event
                shaper.delta(event)
        raise GlimpRouterError("the routing program ended without a result")

    async def responses(self, request: Request) -> Response:
        """``POST /v1/responses``: OpenAI's Responses API, run as a chat completion is."""
        return await self.serve(
            request, ResponsesSurface(self.router, self.served_name, self.efforts)
        )

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

    async def _tier(self, role: str) -> str:
        """``ok`` when a replica of ``role`` answers ``GET /v1/models``, else why not."""
        clients = self.router.clients("small" if role == "small" else "large")

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
        checks = self.health_checks
        small, large = await asyncio.gather(checks.status("small"), checks.status("large"))
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
        writer: StreamWriter,
        started: float,
        first: RouterEvent,
        engine: AsyncGenerator[RouterEvent, None],
    ) -> None:
        self.proxy, self.call, self.writer, self.started = proxy, call, writer, started
        self.first, self.engine = first, engine
        self.request_id = ""
        """The request's id, which a failure's event names."""
        self.status: int = GONE
        """The status counted: 499 (the client left) until the events end otherwise."""
        self.error: str | None = None
        self.events = self._sse()
        """The call's server-sent events (none of its code runs until the first is asked for)."""

    async def _sse(self) -> AsyncGenerator[str, None]:
        try:
            for text in self.writer.opening():
                yield text
            for text in self.writer.texts(self.first):
                yield text
            async for event in self.engine:
                for text in self.writer.texts(event):
                    yield text
        except Exception as exc:
            failure = public_error(exc, self.request_id)
            self.status, self.error = failure.status, failure.code or type(exc).__name__
            yield self.writer.failed(failure)
            return
        for text in self.writer.closing():
            yield text
        self.status = 200

    async def close(self) -> None:
        try:
            await self.events.aclose()
            await self.engine.aclose()
        finally:
            self.proxy.metrics.in_flight.dec()
            self.proxy._end(True, self.started, self.status, self.error)


class ChatSurface:
    """Chat completions (a :class:`Surface`): :mod:`.chat_request`, :mod:`.openai_json`."""

    def __init__(self, router: Router, served_name: str, efforts: Mapping[str, int]) -> None:
        self.router, self.served_name, self.efforts = router, served_name, efforts
        self.parsed: ChatRequest | None = None
        self.shaper: Shaper | None = None

    def parse(self, body: Any) -> ChatRequest:
        self.parsed = parse_chat_request(body, self.router, self.served_name, self.efforts)
        self.shaper = Shaper(self.parsed.model)
        return self.parsed

    def delta(self, event: RouterEvent) -> object:
        assert self.shaper is not None
        return self.shaper.delta(event)

    def answer(self, answer: RoutedAnswer) -> Response:
        assert self.shaper is not None
        headers = record_headers(answer.record)
        return JSONResponse(self.shaper.completion(answer), headers=headers)

    def writer(self) -> StreamWriter:
        assert self.parsed is not None
        return ChatWriter(self.parsed)


class ChatWriter:
    """A chat completion's stream (a :class:`StreamWriter`): ``chat.completion.chunk``
    events, ``data: [DONE]`` last."""

    def __init__(self, parsed: ChatRequest) -> None:
        self.parsed = parsed
        self.shaper = Shaper(parsed.model)

    def opening(self) -> list[str]:
        return [sse(self.shaper.first())]

    def texts(self, event: RouterEvent) -> list[str]:
        return [sse(chunk) for chunk in self.shaper.chunks(event, self.parsed.include_usage)]

    def failed(self, failure: ApiError) -> str:
        return sse(failure.body())

    def closing(self) -> list[str]:
        return ["data: [DONE]\n\n"]


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
    client_settings: ClientPolicy | str | None = None,
    body_timeout: float = BODY_TIMEOUT_S,
    reasoning_effort_budgets: Mapping[str, int] | None = None,
    allowed_origins: Sequence[str] = (),
) -> Starlette:
    """An OpenAI-compatible chat completions and Responses server over ``router`` (see
    :mod:`langchain_glimprouter.proxy`): a :class:`~langchain_glimprouter.router.Router`, or
    what wraps one (a :class:`~langchain_glimprouter.GlimpRouterChatModel`: its ``router``).
    ``client_settings``: the router settings a request may set (:mod:`.policy`; by default it
    may only lower the budgets and retries); ``body_timeout``: seconds to read a request's
    body in, else 408 (0: no limit; :mod:`.limits`); ``reasoning_effort_budgets`` maps
    ``reasoning_effort`` levels to reasoning budgets (default
    :data:`~langchain_glimprouter.proxy.chat_request.REASONING_EFFORTS`); ``allowed_origins``
    are the browser origins CORS allows (none by default)."""
    key = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
    policy = client_settings
    if not isinstance(policy, ClientPolicy):
        policy = ClientPolicy.parse(policy)
    proxy = Proxy(router_of(router), served_name, key, max_body_bytes, policy, body_timeout)
    routes = [
        Route("/v1/chat/completions", proxy.guarded(proxy.chat), methods=["POST"]),
        Route("/v1/responses", proxy.guarded(proxy.responses), methods=["POST"]),
        Route("/v1/models", proxy.guarded(proxy.models), methods=["GET"]),
        Route("/v1/models/{model_id:path}", proxy.guarded(proxy.model), methods=["GET"]),
        Route("/metrics", proxy.guarded(proxy.metrics_text), methods=["GET"]),
        Route("/health", proxy.health, methods=["GET"]),
    ]
    if reasoning_effort_budgets is not None:
        proxy.efforts = check_efforts(reasoning_effort_budgets)
    stack = [*middleware(allowed_origins), Middleware(OverloadGate, on_overload=proxy.overload)]
    app = Starlette(
        routes=routes, middleware=stack, exception_handlers={HTTPException: _http_error}
    )
    app.state.proxy = proxy
    return app
