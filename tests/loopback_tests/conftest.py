"""Scripted servers for the loopback tests: real HTTP on 127.0.0.1 (scripted_server), for what
only a connection shows (faults on the wire, aborts, headers, servers going down)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from scripted_server import Script, ScriptedServer


@pytest.fixture
def server() -> Iterator[Callable[..., ScriptedServer]]:
    """Factory: ``server(script, **settings)``, a started :class:`ScriptedServer` (stopped at
    the end of the test)."""
    started: list[ScriptedServer] = []

    def make(script: Script, **settings: Any) -> ScriptedServer:
        started.append(ScriptedServer(script, **settings).start())
        return started[-1]

    yield make
    for running in started:
        running.stop()
