"""The sans-I/O protocol between the routing logic and the network: the operations.

Routing decisions are written once, as generators ("programs") that *yield* the I/O they need —
:class:`Request` a JSON answer, :class:`Open` a completions stream, :class:`Read` its next chunk,
:class:`Close` it — and :class:`Emit` what the caller should see. The drivers that perform them
(:mod:`langchain_glimprouter.http.drivers`, sync and async) throw a failure back into the program
at the ``yield`` that asked for the operation, so the program decides what to do about it.
:func:`retrying` wraps a program with retries and replica failover, as a program itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import (
    Callable,
    Collection,
    Generator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, replace
from typing import Any, Generic, TypeVar

from langchain_glimprouter.errors import (
    BackendResponseError,
    BackendUnreachableError,
    GlimpRouterError,
)

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})

E = TypeVar("E")
R = TypeVar("R")


@dataclass(frozen=True)
class Request:
    """Send one JSON request to a backend; the program receives the decoded answer (a dict)."""

    role: str
    method: str
    path: str
    body: dict[str, Any] | None = None
    replica: int = 0
    """Index into the backend's URLs; set by :func:`retrying`, which picks the replica."""
    session: str | None = None
    """The conversation's id, for a backend's ``session_header``; set by :func:`retrying`."""


@dataclass(frozen=True)
class Open:
    """Open a streamed ``/v1/completions`` request on a backend."""

    role: str
    body: dict[str, Any]
    replica: int = 0
    """Index into the backend's URLs; set by :func:`retrying`, which picks the replica."""
    session: str | None = None
    """The conversation's id, for a backend's ``session_header``; set by :func:`retrying`."""


@dataclass(frozen=True)
class Read:
    """Read the next :class:`~langchain_glimprouter.backend.Chunk` of the open stream (or None)."""


@dataclass(frozen=True)
class Close:
    """Close the open stream; the server aborts the request."""


@dataclass(frozen=True)
class Sleep:
    """Wait before the next operation (a retry's backoff)."""

    seconds: float


@dataclass(frozen=True)
class Emit(Generic[E]):
    """Hand an event to the caller."""

    event: E


Op = Request | Open | Read | Close | Sleep | Emit[Any]
Program = Generator[Op, Any, R]
"""A routing program: yields operations, receives their results, returns ``R``."""


def is_retryable(error: GlimpRouterError) -> bool:
    """Failures that leave nothing behind on the server, so sending the request again is safe:
    the connection failed, or the server refused with 429 or a 5xx status."""
    if isinstance(error, BackendResponseError):
        return error.status_code in RETRYABLE_STATUS
    return isinstance(error, BackendUnreachableError)


def backoff(attempt: int) -> float:
    """Seconds to wait before retry number ``attempt`` (1, 2, ...): 0.25, 0.5, 1, 2, 2, ..."""
    return float(min(2.0, 0.25 * 2 ** (attempt - 1)))


def retrying(
    program: Program[R],
    retries: Mapping[str, int],
    replicas: Mapping[str, Sequence[int]],
    on_retry: Callable[[str, GlimpRouterError], None] = lambda role, error: None,
    on_failover: Callable[[str, int], None] = lambda role, replica: None,
    session: str | None = None,
) -> Program[R]:
    """Wrap ``program``: send each :class:`Request` and :class:`Open` to the role's current
    replica, and send it again when it fails in a retryable way (see :func:`is_retryable`), up
    to ``retries[role]`` times with :func:`backoff`. When a replica stays unreachable, move the
    role once to its next replica in ``replicas[role]`` (the preference order) and try there.
    The program sees only the last failure. Every request carries ``session``, the
    conversation's id."""
    position = dict.fromkeys(replicas, 0)
    moved: set[str] = set()
    value: Any = None
    error: GlimpRouterError | None = None
    try:
        while True:
            try:
                op = program.throw(error) if error is not None else program.send(value)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            value, error = None, None
            attempt = 0
            while True:
                if isinstance(op, (Request, Open)):
                    op = replace(op, replica=replicas[op.role][position[op.role]], session=session)
                try:
                    value = yield op
                    break
                except GlimpRouterError as exc:
                    if not isinstance(op, (Request, Open)) or not is_retryable(exc):
                        error = exc
                        break
                    role = op.role
                    if attempt < retries.get(role, 0):
                        attempt += 1
                        on_retry(role, exc)
                        yield Sleep(backoff(attempt))
                    elif role not in moved and position[role] + 1 < len(replicas[role]):
                        moved.add(role)
                        position[role] += 1
                        attempt = 0
                        on_failover(role, replicas[role][position[role]])
                    else:
                        error = exc
                        break
    finally:
        program.close()


def replica_order(urls: Sequence[str], key: str, avoid: Collection[str] = ()) -> list[int]:
    """Rendezvous (highest-random-weight) order of ``urls`` for a conversation ``key``: the same
    conversation always prefers the same replica, conversations spread evenly, and removing a
    replica moves only its own conversations. URLs in ``avoid`` (recently down) go last."""

    def weight(i: int) -> tuple[bool, bytes]:
        return urls[i] not in avoid, hashlib.sha256(f"{key}|{urls[i]}".encode()).digest()

    return sorted(range(len(urls)), key=weight, reverse=True)
