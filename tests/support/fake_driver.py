"""Fake clients that answer the routing core's requests from a scripted model, with no socket.

:class:`FakeServer` is a :class:`~scripted_server.ScriptedModel` that stands in for a
:class:`~scripted_server.ScriptedServer`: the same answers (:mod:`scripted_server.answers`), the
same ``requests`` log, ``faults``, ``reset()``, ``active`` and ``wait_idle()``, and a
``base_url`` that only names it. :class:`FakeClient` satisfies
:class:`langchain_glimprouter.http.drivers.Client`: each request body goes through JSON, as over
HTTP; a stream's chunks are the events the server would send, one token at a time, decoded by
the real client's ``_event`` (an error event or one that is not JSON raises its typed error;
closing a stream early leaves its log entry unfinished, with the tokens generated so far, as an
abort does); an error answer becomes the typed error the real client raises
(:func:`~langchain_glimprouter.http.failures.error_from_response`).

There is no time here: ``decode_s``, ``prefill_s`` and stalls are the loopback server's.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from langchain_glimprouter import Backend
from langchain_glimprouter.core.wire import Chunk
from langchain_glimprouter.errors import StreamInterruptedError
from langchain_glimprouter.http.client import BackendClient, session_headers
from langchain_glimprouter.http.failures import error_from_response
from scripted_server import ScriptedModel
from scripted_server.answers import DONE, Answer, Completion, Due, InjectedCut, dumps

_NUMBERS = itertools.count(1)


def _over_the_wire(obj: Any) -> Any:
    """``obj`` as the other side of an HTTP connection decodes it (a fresh copy)."""
    return json.loads(dumps(obj))


class FakeServer(ScriptedModel):
    """A scripted model at a made-up URL, for :class:`FakeClient` (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.root_url = f"http://fake-{self.model}-{next(_NUMBERS)}.invalid"
        self.base_url = f"{self.root_url}/v1"


class FakeClient:
    """One role's client of a :class:`FakeServer` (see the module docstring)."""

    def __init__(self, role: str, server: FakeServer, backend: Backend) -> None:
        self.role, self.server, self.base_url = role, server, server.base_url
        self.backend = backend

    def __repr__(self) -> str:
        return f"FakeClient(role={self.role!r}, base_url={self.base_url!r})"

    _url = BackendClient._url  # the URL an error names, as the real client spells it
    _event = BackendClient._event  # an event's chunk or typed error, as the real client's

    def _answer(self, answer: Answer, path: str) -> dict[str, Any]:
        if answer.status >= 400:
            raise error_from_response(self.role, self._url(path), answer.status, dumps(answer.body))
        body: dict[str, Any] = _over_the_wire(answer.body)
        return body

    def _accept(self, body: dict[str, Any], session: str | None) -> Completion:
        """The server's completion of ``body``, or the typed error of its answer."""
        headers = session_headers(self.backend, session, {})
        accepted = self.server.completion(
            _over_the_wire(body), received_s=time.perf_counter(), headers=headers
        )
        if isinstance(accepted, Answer):
            self._answer(accepted, "/v1/completions")
            raise AssertionError("an accepted answer that is not a completion")
        accepted.log.started_s = time.perf_counter()
        return accepted

    def request_json(
        self, method: str, path: str, body: dict[str, Any] | None, session: str | None = None
    ) -> dict[str, Any]:
        server, body = self.server, body or {}
        if (method, path) == ("POST", "/v1/completions"):
            completion = self._accept({**body, "stream": False}, session)
            choices = list(self._choices(completion))
            return self._answer(completion.response(choices), path)
        answers = {
            ("POST", "/tokenize"): server.tokenize,
            ("POST", "/detokenize"): server.detokenize,
            ("GET", "/v1/models"): lambda _: server.models(),
        }
        if (method, path) not in answers:  # what starlette answers to an unknown route
            raise error_from_response(self.role, self._url(path), 404, "Not Found")
        return self._answer(answers[method, path](_over_the_wire(body)), path)

    async def arequest_json(
        self, method: str, path: str, body: dict[str, Any] | None, session: str | None = None
    ) -> dict[str, Any]:
        return self.request_json(method, path, body, session)

    def _choices(self, completion: Completion) -> Iterator[dict[str, Any]]:
        """The completion's choices as it generates them (an active request until closed)."""
        generation = completion.generate()
        self.server._add_active(1)
        try:
            yield from (item for item in generation if not isinstance(item, Due))
        finally:
            generation.close()
            self.server._add_active(-1)

    def _chunks(self, completion: Completion) -> Iterator[Chunk]:
        url = self._url("/v1/completions")
        choices = self._choices(completion)
        try:
            events = itertools.chain.from_iterable(map(completion.events, choices))
            for payload in itertools.chain(events, completion.closing_events()):
                if payload == DONE:
                    return
                data = payload if isinstance(payload, str) else dumps(payload)
                chunk = self._event(f"data: {data}".encode(), url)
                if chunk is not None:
                    yield chunk
        except InjectedCut as exc:
            raise StreamInterruptedError(
                f"the connection broke mid-response ({exc})", role=self.role, url=url
            ) from exc
        finally:
            choices.close()

    @contextmanager
    def stream(self, body: dict[str, Any], session: str | None = None) -> Iterator[Iterator[Chunk]]:
        chunks = self._chunks(self._accept({**body, "stream": True}, session))
        try:
            yield chunks
        finally:
            chunks.close()

    @asynccontextmanager
    async def astream(
        self, body: dict[str, Any], session: str | None = None
    ) -> AsyncIterator[AsyncIterator[Chunk]]:
        with self.stream(body, session) as chunks:

            async def each() -> AsyncIterator[Chunk]:
                for chunk in chunks:
                    yield chunk
                    await asyncio.sleep(0)  # let other calls on the loop take turns

            yield each()
