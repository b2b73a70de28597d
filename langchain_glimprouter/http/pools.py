"""The connection pools of one server: several small ones under concurrency, and closing the
async ones with their event loop."""

from __future__ import annotations

import threading
import weakref
from collections.abc import AsyncGenerator, Callable, Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

import openai

POOL_REQUESTS = 8
"""Requests in flight on one connection pool before a request opens another pool (see
:class:`Pools`)."""
MAX_POOLS = 32
"""Pools per server at most; past that the least busy one takes more requests."""

C = TypeVar("C", openai.OpenAI, openai.AsyncOpenAI)


class Pools(Generic[C]):
    """SDK clients, each with a connection pool of its own, to one server; each request takes
    the least busy one, and when every pool has ``POOL_REQUESTS`` requests in flight a new one
    is added (up to ``limit``).

    httpcore walks every connection of a pool on each request and each release (a socket poll
    per idle connection; encode/httpcore#1035). With one pool for 64 concurrent calls that
    bookkeeping took about 45 % of the client's CPU time (docs/benchmarks.md); small pools keep
    it cheap. One call at a time only ever uses the first pool. A caller's own client is one
    pool (``limit=1``): the router does not copy a connection pool it did not make, nor close it
    (``owned=False``).
    """

    def __init__(self, make: Callable[[], C], limit: int = MAX_POOLS, owned: bool = True) -> None:
        # weakly: the pools must not keep their BackendClient alive (see BackendClient.__del__)
        self._make: weakref.WeakMethod[Callable[[], C]] = weakref.WeakMethod(make)
        self._limit = limit
        self.owned = owned
        self.clients: list[C] = []
        self._busy: list[int] = []
        self._lock = threading.Lock()

    def acquire(self) -> int:
        """Reserve a pool for one request; give its index back to :meth:`release`."""
        with self._lock:
            busy = self._busy
            index = min(range(len(busy)), key=busy.__getitem__) if busy else -1
            if index < 0 or (busy[index] >= POOL_REQUESTS and len(busy) < self._limit):
                make = self._make()
                assert make is not None, "the pools of a client that is gone"
                self.clients.append(make())
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


LoopPools = tuple[Pools[openai.AsyncOpenAI], AsyncGenerator[None, None]]
"""The async pools of one event loop, and the :func:`closing` generator that closes them."""


async def closing(pools: Pools[openai.AsyncOpenAI]) -> AsyncGenerator[None, None]:
    """Suspended for as long as its event loop runs: the loop closes it when it shuts down
    (``asyncio.run`` and ``asyncio.Runner`` close every async generator before closing the
    loop), and with it ``pools``, while the loop can still close their connections. Dropped
    while the loop runs (its BackendClient replaced), it is closed on that loop all the same."""
    try:
        yield
    finally:
        if pools.owned:
            for client in pools.clients:
                await client.close()
