"""The HTTP client of one backend, over the official openai SDK.

Completions requests, streamed and not, go through ``openai.OpenAI`` / ``openai.AsyncOpenAI``
(``completions.create`` with vLLM's extras in ``extra_body``); the endpoints outside the OpenAI
API (``/tokenize``, ``/detokenize``, ``/apply-template``) go through the same client's
``post``, so they share its connection pool, headers and timeout. Streams are read as raw
server-sent events (``with_streaming_response``): the router needs a few fields of each event,
and building the SDK's typed object per token cost more CPU than the rest of the client.

The SDK never retries here (``max_retries=0``): retries, replica failover and stream resumption
are the router's (:func:`~langchain_glimprouter.core.ops.retrying`, and
:mod:`~langchain_glimprouter.core.generation` for streams), so there is one retry layer.
Closing a stream closes its HTTP connection, which makes vLLM abort the request. Every SDK or
transport failure becomes a typed :class:`~langchain_glimprouter.errors.GlimpRouterError`
naming the backend's role and URL, never its key.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import httpx2
import jiter
import openai
from pydantic import SecretStr

from langchain_glimprouter.backend import Backend
from langchain_glimprouter.core.servers import server_root
from langchain_glimprouter.core.wire import Chunk, parse_chunk
from langchain_glimprouter.errors import (
    BackendResponseError,
    BackendTimeoutError,
    BackendUnreachableError,
    GlimpRouterError,
    MalformedStreamError,
    StreamInterruptedError,
    StreamTimeoutError,
)
from langchain_glimprouter.http.cookies import SessionCookies, no_jar
from langchain_glimprouter.http.failures import error_from_response, stream_error
from langchain_glimprouter.http.network import async_transport
from langchain_glimprouter.http.pools import MAX_POOLS, LoopPools, Pools, closing
from langchain_glimprouter.telemetry import backend_span

_LIMITS = httpx2.Limits(max_connections=512, max_keepalive_connections=64, keepalive_expiry=4.0)
"""``keepalive_expiry`` stays under uvicorn's (so vLLM's) 5 s keep-alive timeout: with equal
timeouts the server could close an idle connection just as a request went out on it, which
then failed with ``ReadError`` (seen at 64 concurrent calls)."""
_NAMED = ("model", "prompt", "stream")
"""The parameters given to ``completions.create`` by name; the rest of a body (``max_tokens``,
``logprobs``, ``stop``, vLLM's extras such as ``add_special_tokens`` or structured outputs, the
backend's ``extra_body``) goes in ``extra_body``, which the SDK sends as is. Each named
parameter costs the SDK's type-directed transform 20-30 µs per request (about 280 µs for a
whole routing body against 90 µs for these three, measured with ``maybe_transform``)."""

_NO_AUTH = {"Authorization": openai.Omit()}
"""Per-request headers when no key is set: the SDK insists on a key, the server gets none."""


def completions_kwargs(body: dict[str, Any]) -> dict[str, Any]:
    """A completions request body as keyword arguments of the SDK's ``completions.create``."""
    named = {k: body[k] for k in _NAMED if k in body}
    extra = {k: v for k, v in body.items() if k not in _NAMED}
    return {**named, "prompt": body.get("prompt"), "extra_body": extra}


def session_headers(
    backend: Backend, session: str | None, headers: dict[str, Any]
) -> dict[str, Any]:
    """``headers`` with the conversation's id in the backend's ``session_header`` (if both)."""
    if backend.session_header is None or session is None:
        return headers
    return {**headers, backend.session_header: session}


class BackendClient:
    """HTTP access to one backend, sync and async, with typed errors.

    Args:
        role: ``"small"`` or ``"large"``; named in every error.
        backend: The server's settings (and the caller's own SDK or httpx2 clients, if any).
        base_url: Which of the backend's URLs (replicas) this client talks to.
        api_key: The resolved key (the backend's own, or the router's, or from the environment).
            A caller's own SDK client keeps its own authentication.
        timeout: Connect and read timeout in seconds.

    Retries are the router's business (:func:`~langchain_glimprouter.core.ops.retrying`),
    not the client's.
    """

    def __init__(
        self,
        role: str,
        backend: Backend,
        *,
        api_key: SecretStr | None,
        timeout: float,
        base_url: str | None = None,
    ) -> None:
        self.role = role
        self.backend = backend
        self.base_url = (base_url or backend.base_url).rstrip("/")
        self._api_key = api_key
        self._timeout = timeout
        self._headers: dict[str, Any] = {} if api_key or backend.client else dict(_NO_AUTH)
        # per-request headers: no Authorization header unless there is a key, or the caller's
        # own client (sync or async) brings its authentication
        self._aheaders: dict[str, Any] = {} if api_key or backend.async_client else dict(_NO_AUTH)
        # Cookies per conversation on the pools the router builds; a caller's client has its jar.
        cookies = SessionCookies()
        self._cookies = SessionCookies(0) if backend.client or backend.http_client else cookies
        own_async = backend.async_client or backend.http_async_client
        self._acookies = SessionCookies(0) if own_async else cookies
        self._ssl: ssl.SSLContext | None = None
        self._sync: Pools[openai.OpenAI] | None = None
        self._async: dict[asyncio.AbstractEventLoop, LoopPools] = {}
        # per event loop (an async client is bound to the loop it first ran on)

    def __repr__(self) -> str:
        return f"BackendClient(role={self.role!r}, base_url={self.base_url!r})"

    def _url(self, path: str) -> str:
        """``/v1/...`` paths live under base_url; others (/tokenize) under the server root."""
        if path.startswith("/v1/"):
            return self.base_url + path[len("/v1") :]
        return server_root(self.base_url) + path

    def _ssl_context(self) -> ssl.SSLContext:
        """One SSL context for all of this client's pools: building one loads the CA bundle,
        which takes milliseconds."""
        if self._ssl is None:
            self._ssl = httpx2.create_ssl_context()
        return self._ssl

    def _settings(self) -> dict[str, Any]:
        return {
            "base_url": self.base_url,
            "timeout": self._timeout,
            "max_retries": 0,
            "default_headers": self.backend.headers or None,
        }

    def _key(self) -> str:
        return self._api_key.get_secret_value() if self._api_key else "unused"

    def _new_client(self) -> openai.OpenAI:
        own = self.backend.client
        if own is not None:
            return own.with_options(**self._settings())
        http = self.backend.http_client or httpx2.Client(
            transport=httpx2.HTTPTransport(limits=_LIMITS, verify=self._ssl_context()),
            timeout=self._timeout,
            cookies=no_jar(),
        )
        return openai.OpenAI(api_key=self._key(), http_client=http, **self._settings())

    def _new_aclient(self) -> openai.AsyncOpenAI:
        own = self.backend.async_client
        if own is not None:
            return own.with_options(**self._settings())
        http = self.backend.http_async_client or httpx2.AsyncClient(
            transport=async_transport(self.base_url, _LIMITS, self._ssl_context()),
            timeout=self._timeout,
            cookies=no_jar(),
        )
        return openai.AsyncOpenAI(api_key=self._key(), http_client=http, **self._settings())

    def _pools(self) -> Pools[openai.OpenAI]:
        if self._sync is None:
            own = self.backend.client or self.backend.http_client
            self._sync = Pools(self._new_client, 1 if own else MAX_POOLS, owned=not own)
        return self._sync

    async def _apools(self) -> Pools[openai.AsyncOpenAI]:
        loop = asyncio.get_running_loop()
        if (entry := self._async.get(loop)) is not None:
            return entry[0]
        # A loop closed without closing its async generators (loop.close() alone) never closed
        # its pools; their sockets cannot be closed without it, only left to the collector.
        self._async = {other: e for other, e in self._async.items() if not other.is_closed()}
        own = self.backend.async_client or self.backend.http_async_client
        pools = Pools(self._new_aclient, 1 if own else MAX_POOLS, owned=not own)
        closer = closing(pools)
        self._async[loop] = (pools, closer)
        await anext(closer)  # started on this loop: the loop now closes it when it shuts down
        return pools

    def _error(self, exc: Exception, url: str, mid_stream: bool = False) -> GlimpRouterError:
        """The typed error of an SDK or transport failure (``mid_stream``: while reading a
        stream's events, where a timeout is a stalled stream, :class:`StreamTimeoutError`).

        The SDK raises ``APIConnectionError`` before the server answered (no status line yet):
        a dropped connection then left nothing running (vLLM aborts a request whose client is
        gone), so it is :class:`BackendUnreachableError`, which is retried (typically a
        kept-alive connection the server closed just as the request went out). A transport
        error while reading an answer is a cut stream (:class:`StreamInterruptedError`).
        """
        if isinstance(exc, openai.APIStatusError):
            return error_from_response(self.role, url, exc.status_code, exc.response.text)
        if isinstance(exc, (openai.APITimeoutError, httpx2.TimeoutException)):
            return (StreamTimeoutError if mid_stream else BackendTimeoutError)(
                f"no {'chunk' if mid_stream else 'answer'} within {self._timeout} s. Raise the "
                "backend's timeout, or check that the server is not overloaded.",
                role=self.role,
                url=url,
            )
        cause = exc.__cause__ if isinstance(exc, openai.APIConnectionError) else exc
        if isinstance(exc, openai.APIConnectionError) and isinstance(cause, httpx2.ConnectError):
            return BackendUnreachableError(
                f"cannot connect ({cause}). Is the server running and is base_url right?",
                role=self.role,
                url=url,
            )
        if isinstance(exc, openai.APIConnectionError):
            return BackendUnreachableError(
                f"the connection closed before the server answered ({cause or exc}). Is the "
                "server running, or restarting?",
                role=self.role,
                url=url,
            )
        return StreamInterruptedError(
            f"the connection broke mid-response ({type(exc).__name__}: {exc}). The server may "
            "have crashed or restarted; check its log and retry.",
            role=self.role,
            url=url,
        )

    def _send(
        self, client: Any, method: str, path: str, body: dict[str, Any] | None, headers: Any
    ) -> Any:
        """The SDK call of one JSON request (for an async client, the coroutine). A
        completions request goes through ``completions.create``, others through ``get`` /
        ``post`` on the same client."""
        if path == "/v1/completions" and body is not None:
            raw = client.completions.with_raw_response
            return raw.create(**completions_kwargs(body), extra_headers=headers)
        options = {"headers": headers}
        url = self._url(path)
        if method == "GET":
            return client.get(url, cast_to=httpx2.Response, options=options)
        return client.post(url, cast_to=httpx2.Response, body=body, options=options)

    def _decode(self, answer: Any, url: str) -> dict[str, Any]:
        response: httpx2.Response = getattr(answer, "http_response", answer)
        try:
            data = response.json()
        except ValueError as exc:
            raise BackendResponseError(
                f"the answer is not JSON: {response.text[:200]!r}",
                role=self.role,
                url=url,
                status_code=response.status_code,
            ) from exc
        if not isinstance(data, dict):
            raise BackendResponseError("the answer is not a JSON object", role=self.role, url=url)
        return data

    def request_json(
        self, method: str, path: str, body: dict[str, Any] | None, session: str | None = None
    ) -> dict[str, Any]:
        """Send one JSON request and return the decoded answer; ``session`` is the
        conversation's id, sent in the backend's ``session_header``."""
        url = self._url(path)
        with backend_span(self.role, method, url, body) as traced:
            headers = session_headers(self.backend, session, self._headers) | traced
            try:
                with self._pools().lease() as client:
                    answer = self._send(
                        client, method, path, body, self._cookies.headers(session, url, headers)
                    )
            except (openai.APIError, httpx2.HTTPError) as exc:
                raise self._error(exc, url) from exc
        self._cookies.keep(session, getattr(answer, "http_response", answer))
        return self._decode(answer, url)

    async def arequest_json(
        self, method: str, path: str, body: dict[str, Any] | None, session: str | None = None
    ) -> dict[str, Any]:
        """Async twin of :meth:`request_json`."""
        url = self._url(path)
        with backend_span(self.role, method, url, body) as traced:
            headers = session_headers(self.backend, session, self._aheaders) | traced
            try:
                with (await self._apools()).lease() as client:
                    answer = await self._send(
                        client, method, path, body, self._acookies.headers(session, url, headers)
                    )
            except (openai.APIError, httpx2.HTTPError) as exc:
                raise self._error(exc, url) from exc
        self._acookies.keep(session, getattr(answer, "http_response", answer))
        return self._decode(answer, url)

    def _event(self, line: bytes, url: str) -> Chunk | None:
        """One server-sent event line as a :class:`Chunk` (None for anything but data); an
        error event or one that is not a JSON object raises."""
        if not line.startswith(b"data:"):
            return None
        data = line[5:].strip()
        if data == b"[DONE]":
            return None
        try:
            event = jiter.from_json(data)
        except ValueError as exc:
            raise MalformedStreamError(
                f"malformed server-sent event: {data[:200]!r}. The stream is resumed from the "
                "text received before it; if this repeats, check the server and any proxy "
                "between.",
                role=self.role,
                url=url,
            ) from exc
        if not isinstance(event, dict):
            raise MalformedStreamError(
                f"a server-sent event that is not a JSON object: {data[:200]!r}",
                role=self.role,
                url=url,
            )
        if "error" in event:
            raise stream_error(self.role, url, data)
        return parse_chunk(event)

    @contextmanager
    def stream(self, body: dict[str, Any], session: str | None = None) -> Iterator[Iterator[Chunk]]:
        """Open a streamed ``/v1/completions`` request; leaving the block aborts it."""
        url = self._url("/v1/completions")
        create = completions_kwargs({**body, "stream": True})
        headers = session_headers(self.backend, session, self._headers)
        try:
            with (
                backend_span(self.role, "POST", url, body) as traced,
                self._pools().lease() as client,
                client.completions.with_streaming_response.create(
                    **create, extra_headers=self._cookies.headers(session, url, headers | traced)
                ) as response,
            ):
                self._cookies.keep(session, response.http_response)
                yield self._chunks(response.http_response.iter_bytes(), url)
        except (openai.APIError, httpx2.HTTPError) as exc:
            raise self._error(exc, url) from exc

    def _chunks(self, reads: Iterator[bytes], url: str) -> Iterator[Chunk]:
        """The chunks of a stream's bytes, split into lines here: httpx2's ``iter_lines``
        decodes text and splits it again per read, which costs more than the routing does."""
        rest = b""
        try:
            for read in reads:
                *lines, rest = (rest + read).split(b"\n")
                for line in lines:
                    chunk = self._event(line, url)
                    if chunk is not None:
                        yield chunk
        except httpx2.HTTPError as exc:
            raise self._error(exc, url, mid_stream=True) from exc
        if rest and (chunk := self._event(rest, url)) is not None:  # no final newline
            yield chunk

    @asynccontextmanager
    async def astream(
        self, body: dict[str, Any], session: str | None = None
    ) -> AsyncIterator[AsyncIterator[Chunk]]:
        """Async twin of :meth:`stream`."""
        url = self._url("/v1/completions")
        create = completions_kwargs({**body, "stream": True})
        headers = session_headers(self.backend, session, self._aheaders)
        try:
            with (
                backend_span(self.role, "POST", url, body) as traced,
                (await self._apools()).lease() as client,
            ):
                async with client.completions.with_streaming_response.create(
                    **create, extra_headers=self._acookies.headers(session, url, headers | traced)
                ) as response:
                    self._acookies.keep(session, response.http_response)
                    yield self._achunks(response.http_response.aiter_bytes(), url)
        except (openai.APIError, httpx2.HTTPError) as exc:
            raise self._error(exc, url) from exc

    async def _achunks(self, reads: AsyncIterator[bytes], url: str) -> AsyncIterator[Chunk]:
        rest = b""
        try:
            async for read in reads:
                *lines, rest = (rest + read).split(b"\n")
                for line in lines:
                    chunk = self._event(line, url)
                    if chunk is not None:
                        yield chunk
        except httpx2.HTTPError as exc:
            raise self._error(exc, url, mid_stream=True) from exc
        if rest and (chunk := self._event(rest, url)) is not None:
            yield chunk

    def close(self) -> None:
        """Close the sync connection pools this client made (not a caller's own)."""
        if self._sync is not None and self._sync.owned:
            for client in self._sync.clients:
                client.close()
        self._sync = None

    async def aclose(self) -> None:
        """Close the sync connection pools, and the async ones of the running event loop, that
        this client made (not a caller's own)."""
        self.close()
        entry = self._async.pop(asyncio.get_running_loop(), None)
        if entry is not None:
            await entry[1].aclose()

    def __del__(self) -> None:
        # A client no call holds any more (the router replaced it or is gone) closes its sync
        # connections now, rather than leave each socket to the collector; dropping its
        # closing generators closes its async pools on their loops.
        with contextlib.suppress(Exception):
            self.close()
