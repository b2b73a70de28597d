"""``/health`` kept cheap (:class:`HealthCache`): each backend is probed at most once per
interval (:data:`HEALTH_INTERVAL_S`), and concurrent ``/health`` requests share the probe that
is running. ``/health`` stays open without the key, as load balancers and orchestrators probe
it: it says only ok/unavailable per tier, and costs the backends at most one request each per
interval however often it is asked."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

HEALTH_INTERVAL_S = 5.0


class HealthCache:
    """The last outcome of ``probe(role)`` per role, fresh for ``interval`` seconds; a probe
    already running is awaited rather than repeated."""

    def __init__(
        self, probe: Callable[[str], Awaitable[str]], interval: float = HEALTH_INTERVAL_S
    ) -> None:
        self.probe, self.interval = probe, interval
        self._last: dict[str, tuple[float, str]] = {}
        self._running: dict[str, asyncio.Future[str]] = {}

    async def status(self, role: str) -> str:
        last = self._last.get(role)
        if last is not None and time.monotonic() - last[0] < self.interval:
            return last[1]
        running = self._running.get(role)
        if running is None:
            running = asyncio.ensure_future(self._probe(role))
            self._running[role] = running
        # shielded: a /health request whose client left does not cancel the others' probe
        return await asyncio.shield(running)

    async def _probe(self, role: str) -> str:
        try:
            outcome = await self.probe(role)
            self._last[role] = (time.monotonic(), outcome)
            return outcome
        finally:
            self._running.pop(role, None)
