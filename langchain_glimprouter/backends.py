"""Backend settings and the HTTP client for one OpenAI-compatible completions server.

The client knows nothing of routing: it posts JSON, opens ``/v1/completions`` streams and turns
their server-sent events into :class:`Chunk` objects. Closing a stream closes the HTTP connection,
which makes vLLM abort the request. Every transport or HTTP failure becomes a typed
:class:`~langchain_glimprouter.errors.GlimpRouterError` naming the backend's role and URL.
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from langchain_glimprouter.errors import (
    BackendResponseError,
    BackendTimeoutError,
    BackendUnreachableError,
    ContextLengthExceededError,
    GlimpRouterError,
    LogprobsCapError,
    StreamInterruptedError,
)
from langchain_glimprouter.tool_calls import HermesToolCallParser, ToolCallParser

_LIMITS = httpx.Limits(max_connections=512, max_keepalive_connections=64, keepalive_expiry=4.0)
"""``keepalive_expiry`` stays under uvicorn's (so vLLM's) 5 s keep-alive timeout: with equal
timeouts the server could close an idle connection just as a request went out on it, which
then failed with ``ReadError`` (seen at 64 concurrent calls)."""
_POOL_REQUESTS = 8
"""Requests in flight on one connection pool before a request opens another pool (see
:class:`_Pools`)."""
_MAX_POOLS = 32
"""Pools per server at most; past that the least busy one takes more requests."""

DEFAULT_TIMEOUT = 60.0
"""Seconds to wait for a connection or for the next streamed chunk, when nothing else is set."""


class Backend(BaseModel):
    """One OpenAI-compatible completions server (vLLM, llama.cpp, ...) and the model it serves."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    base_url: str = Field(description="API root, e.g. 'http://localhost:8001/v1'.")
    model: str = Field(description="Served model name, as the server's /v1/models lists it.")
    api_key: SecretStr | None = Field(
        default=None,
        description="Bearer token; falls back to the router's api_key, then to the "
        "GLIMPROUTER_SMALL_API_KEY / GLIMPROUTER_LARGE_API_KEY / OPENAI_API_KEY variables.",
    )
    timeout: float | None = Field(
        default=None,
        description="Seconds to wait for a connection or the next chunk (router's if None).",
    )
    max_retries: int | None = Field(
        default=None,
        description="Retries of a failed request (connection refused, 429, 5xx) or a cut "
        "stream (router's max_retries if None).",
    )
    chat_template: str | None = Field(
        default=None,
        description="Jinja chat template rendered client-side; if None the server renders "
        "(vLLM /tokenize + /detokenize, llama.cpp /apply-template).",
    )
    chat_template_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra variables for the chat template (e.g. bos_token, enable_thinking).",
    )
    headers: dict[str, str] = Field(default_factory=dict, description="Extra HTTP headers.")
    extra_body: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra JSON fields merged into every completions request (e.g. top_k).",
    )

    tool_parser: ToolCallParser = Field(
        default_factory=HermesToolCallParser,
        description="How this model writes tool calls in its answer (the large backend's "
        "parses the answer; either's formats past calls for a template that ignores tools).",
    )
    replicas: list[str] = Field(
        default_factory=list,
        description="More API roots serving the same model. A conversation sticks to one of "
        "them (so its prefix cache keeps hitting); a replica that is down is skipped.",
    )

    @property
    def urls(self) -> list[str]:
        """``base_url`` and the replicas."""
        return [self.base_url, *self.replicas]

    @property
    def root_url(self) -> str:
        """The server root, where vLLM serves /tokenize and /detokenize."""
        return server_root(self.base_url)


def server_root(base_url: str) -> str:
    """``http://host:8000/v1`` -> ``http://host:8000``."""
    url = base_url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


@dataclass(frozen=True)
class Chunk:
    """One server-sent event of a streamed completion, reduced to what routing needs."""

    text: str
    n_tokens: int
    """Tokens in this chunk (from its logprobs; 1 per non-empty chunk without them)."""
    first_token: str | None
    """The chunk's first token as the server spelled it in its logprobs."""
    top_logprobs: dict[str, float] | None
    """Top-k logprobs of the chunk's first token, if logprobs were asked for."""
    finish_reason: str | None
    stop_reason: str | int | None
    reports_stop_reason: bool
    """Whether the server sends ``stop_reason`` (vLLM does; it tells EOS from a stop string)."""
    prompt_tokens: int | None
    completion_tokens: int | None
    token_logprobs: tuple[float | None, ...] = ()
    """Logprob of each token of the chunk (when logprobs were asked for)."""
    token_top_logprobs: tuple[dict[str, float], ...] = ()
    """Top-k logprobs after each token position of the chunk (when logprobs were asked for)."""
    token_texts: tuple[str, ...] = ()
    """Each token of the chunk as the server spelled it (when logprobs were asked for)."""


def parse_chunk(event: dict[str, Any]) -> Chunk:
    """Turn one decoded SSE ``data:`` object of ``/v1/completions`` into a :class:`Chunk`."""
    usage = event.get("usage") or {}
    choices = event.get("choices") or []
    choice = choices[0] if choices else {}
    logprobs = choice.get("logprobs") or {}
    tokens = logprobs.get("tokens") or []
    tops = logprobs.get("top_logprobs") or []
    text = choice.get("text") or ""
    return Chunk(
        text=text,
        n_tokens=len(tokens) if logprobs else int(bool(text)),
        first_token=tokens[0] if tokens else None,
        top_logprobs=tops[0] if tops and tops[0] else None,
        finish_reason=choice.get("finish_reason"),
        stop_reason=choice.get("stop_reason"),
        reports_stop_reason="stop_reason" in choice,
        prompt_tokens=usage.get("prompt_tokens"),
        completion_tokens=usage.get("completion_tokens"),
        token_logprobs=tuple(logprobs.get("token_logprobs") or ()),
        token_top_logprobs=tuple(top or {} for top in tops),
        token_texts=tuple(str(t) for t in tokens),
    )


_CAP_RE = re.compile(r"greater than max allowed: (\d+)")


def error_from_response(role: str, url: str, status: int, body: str) -> GlimpRouterError:
    """Map an HTTP error answer to the most specific typed error, with what to do about it."""
    try:
        message = str(json.loads(body)["error"]["message"])
    except (ValueError, KeyError, TypeError):
        message = body.strip()[:500] or "(empty body)"
    lowered = message.lower()
    if "maximum context length" in lowered or "context length" in lowered:
        return ContextLengthExceededError(
            f"{message} Shorten the conversation, lower max_reasoning_tokens / max_tokens, or "
            "serve the model with a larger --max-model-len.",
            role=role,
            url=url,
            status_code=status,
        )
    if "logprobs" in lowered and (cap := _CAP_RE.search(message)):
        return LogprobsCapError(
            f"[{role} backend at {url}] {message} Set top_logprobs <= {cap.group(1)}, or restart "
            "vLLM with a larger --max-logprobs.",
            cap=int(cap.group(1)),
        )
    hint = {
        401: "Check the backend's api_key.",
        403: "Check the backend's api_key.",
        404: "Check base_url (it should end in /v1) and the served model name.",
        429: "The server is overloaded; retry later or raise max_retries.",
    }.get(status, "Check the server's log.")
    return BackendResponseError(
        f"HTTP {status}: {message} {hint}", role=role, url=url, status_code=status
    )


C = TypeVar("C", httpx.Client, httpx.AsyncClient)


class _Pools(Generic[C]):
    """httpx clients (connection pools) to one server; each request takes the least busy one,
    and when every pool has ``_POOL_REQUESTS`` requests in flight a new pool is added.

    httpcore 1.0 walks every connection of a pool on each request and each release (a socket
    poll per idle connection, and a keep-alive count that is quadratic in the pool's size:
    encode/httpcore#1035). With one pool for 64 concurrent calls that bookkeeping took about 45 %
    of the client's CPU time (docs/benchmarks.md); small pools keep it cheap. One call at a time
    only ever uses the first pool.
    """

    def __init__(self, make: Callable[[], C]) -> None:
        self._make: Callable[[], C] = make
        self.clients: list[C] = []
        self._busy: list[int] = []
        self._lock = threading.Lock()

    def acquire(self) -> int:
        """Reserve a pool for one request; give its index back to :meth:`release`."""
        with self._lock:
            busy = self._busy
            index = min(range(len(busy)), key=busy.__getitem__) if busy else -1
            if index < 0 or (busy[index] >= _POOL_REQUESTS and len(busy) < _MAX_POOLS):
                self.clients.append(self._make())
                busy.append(0)
                index = len(busy) - 1
            busy[index] += 1
            return index

    def release(self, index: int) -> None:
        with self._lock:
            self._busy[index] -= 1

    @contextmanager
    def lease(self) -> Iterator[C]:
        """A pool for the duration of one request."""
        index = self.acquire()
        try:
            yield self.clients[index]
        finally:
            self.release(index)


class BackendClient:
    """HTTP access to one backend, sync and async, with typed errors.

    Args:
        role: ``"small"`` or ``"large"``; named in every error.
        backend: The server's settings.
        base_url: Which of the backend's URLs (replicas) this client talks to.
        api_key: The resolved key (the backend's own, or the router's, or from the environment).
        timeout: Connect and read timeout in seconds.

    Retries are the routing program's business (see ``program.retrying``), not the client's.
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
        headers = {"Content-Type": "application/json", **backend.headers}
        if api_key is not None:
            headers["Authorization"] = f"Bearer {api_key.get_secret_value()}"
        self._headers = headers
        self._timeout = httpx.Timeout(timeout)
        self._ssl: ssl.SSLContext | None = None
        self._sync: _Pools[httpx.Client] | None = None
        self._async: tuple[asyncio.AbstractEventLoop, _Pools[httpx.AsyncClient]] | None = None

    def __repr__(self) -> str:
        return f"BackendClient(role={self.role!r}, base_url={self.base_url!r})"

    def _url(self, path: str) -> str:
        """``/v1/...`` paths live under base_url; others (/tokenize) under the server root."""
        if path.startswith("/v1/"):
            return self.base_url + path[len("/v1") :]
        return server_root(self.base_url) + path

    def _ssl_context(self) -> ssl.SSLContext:
        """One SSL context (httpx's default) for all of this client's pools: building one
        loads the CA bundle, which takes milliseconds."""
        if self._ssl is None:
            self._ssl = httpx.create_ssl_context()
        return self._ssl

    def _new_client(self) -> httpx.Client:
        transport = httpx.HTTPTransport(limits=_LIMITS, verify=self._ssl_context())
        return httpx.Client(headers=self._headers, timeout=self._timeout, transport=transport)

    def _new_aclient(self) -> httpx.AsyncClient:
        transport = httpx.AsyncHTTPTransport(limits=_LIMITS, verify=self._ssl_context())
        return httpx.AsyncClient(headers=self._headers, timeout=self._timeout, transport=transport)

    def _pools(self) -> _Pools[httpx.Client]:
        if self._sync is None:
            self._sync = _Pools(self._new_client)
        return self._sync

    def _apools(self) -> _Pools[httpx.AsyncClient]:
        # An AsyncClient is bound to the loop it first ran on: keep its pools per running loop.
        loop = asyncio.get_running_loop()
        if self._async is None or self._async[0] is not loop:
            self._async = (loop, _Pools(self._new_aclient))
        return self._async[1]

    def _map_transport_error(
        self, exc: httpx.HTTPError, url: str, answered: bool = True
    ) -> GlimpRouterError:
        """The typed error of a transport failure. Before the server ``answered`` (no status
        line yet), a dropped connection left nothing running (vLLM aborts a request whose client
        is gone), so it is :class:`BackendUnreachableError`, which is retried: typically a
        kept-alive connection the server closed just as the request went out."""
        if isinstance(exc, httpx.TimeoutException):
            return BackendTimeoutError(
                f"no answer within {self._timeout.read} s ({type(exc).__name__}). Raise the "
                "backend's timeout, or check that the server is not overloaded.",
                role=self.role,
                url=url,
            )
        if isinstance(exc, httpx.ConnectError):
            return BackendUnreachableError(
                f"cannot connect ({exc}). Is the server running and is base_url right?",
                role=self.role,
                url=url,
            )
        if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError)) and not answered:
            return BackendUnreachableError(
                f"the connection closed before the server answered ({exc}). Is the server "
                "running, or restarting?",
                role=self.role,
                url=url,
            )
        if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError)):
            return StreamInterruptedError(
                f"the connection broke mid-response ({exc}). The server may have crashed or "
                "restarted; check its log and retry.",
                role=self.role,
                url=url,
            )
        return BackendUnreachableError(f"{type(exc).__name__}: {exc}", role=self.role, url=url)

    def _decode(self, response: httpx.Response, url: str) -> dict[str, Any]:
        if response.status_code >= 400:
            raise error_from_response(self.role, url, response.status_code, response.text)
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

    def request_json(self, method: str, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        """Send one JSON request and return the decoded answer."""
        url = self._url(path)
        try:
            with self._pools().lease() as client:
                response = client.request(method, url, json=body)
        except httpx.HTTPError as exc:
            raise self._map_transport_error(exc, url) from exc
        return self._decode(response, url)

    async def arequest_json(
        self, method: str, path: str, body: dict[str, Any] | None
    ) -> dict[str, Any]:
        """Async twin of :meth:`request_json`."""
        url = self._url(path)
        pools = self._apools()
        index = pools.acquire()
        try:
            response = await pools.clients[index].request(method, url, json=body)
        except httpx.HTTPError as exc:
            raise self._map_transport_error(exc, url) from exc
        finally:
            pools.release(index)
        return self._decode(response, url)

    def _parse_sse_line(self, line: str, url: str) -> Chunk | None:
        if not line.startswith("data:"):
            return None
        data = line[len("data:") :].strip()
        if data == "[DONE]":
            return None
        try:
            event = json.loads(data)
        except ValueError as exc:
            raise BackendResponseError(
                f"malformed server-sent event: {data[:200]!r}", role=self.role, url=url
            ) from exc
        if "error" in event:
            raise error_from_response(self.role, url, 500, data)
        return parse_chunk(event)

    @contextmanager
    def stream(self, body: dict[str, Any]) -> Iterator[Iterator[Chunk]]:
        """Open a streamed ``/v1/completions`` request; leaving the block aborts it."""
        url = self._url("/v1/completions")
        answered = False
        try:
            with self._pools().lease() as client, client.stream("POST", url, json=body) as response:
                answered = True
                if response.status_code >= 400:
                    response.read()
                    raise error_from_response(self.role, url, response.status_code, response.text)
                yield self._iter_chunks(response.iter_lines(), url)
        except httpx.HTTPError as exc:
            raise self._map_transport_error(exc, url, answered) from exc

    def _iter_chunks(self, lines: Iterator[str], url: str) -> Iterator[Chunk]:
        try:
            for line in lines:
                chunk = self._parse_sse_line(line, url)
                if chunk is not None:
                    yield chunk
        except httpx.HTTPError as exc:
            raise self._map_transport_error(exc, url) from exc

    @asynccontextmanager
    async def astream(self, body: dict[str, Any]) -> AsyncIterator[AsyncIterator[Chunk]]:
        """Async twin of :meth:`stream`."""
        url = self._url("/v1/completions")
        pools = self._apools()
        index = pools.acquire()
        answered = False
        try:
            async with pools.clients[index].stream("POST", url, json=body) as response:
                answered = True
                if response.status_code >= 400:
                    await response.aread()
                    raise error_from_response(self.role, url, response.status_code, response.text)
                yield self._aiter_chunks(response.aiter_lines(), url)
        except httpx.HTTPError as exc:
            raise self._map_transport_error(exc, url, answered) from exc
        finally:
            pools.release(index)

    async def _aiter_chunks(self, lines: AsyncIterator[str], url: str) -> AsyncIterator[Chunk]:
        try:
            async for line in lines:
                chunk = self._parse_sse_line(line, url)
                if chunk is not None:
                    yield chunk
        except httpx.HTTPError as exc:
            raise self._map_transport_error(exc, url) from exc

    def close(self) -> None:
        """Close the sync connection pools."""
        if self._sync is not None:
            for client in self._sync.clients:
                client.close()
            self._sync = None

    async def aclose(self) -> None:
        """Close the sync and async connection pools."""
        self.close()
        if self._async is not None:
            for aclient in self._async[1].clients:
                await aclient.aclose()
            self._async = None
