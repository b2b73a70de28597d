"""Scripted small and large servers (real HTTP on loopback) for the unit tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from langchain_glimprouter import Backend, GlimpRouterChatModel
from scripted_server import Script, ScriptedServer

SMALL_STEPS = ["small writes step zero", "small writes step one", "small writes step two",
               "small writes step three"]  # fmt: skip
LARGE_STEPS = [s.replace("small", "large") for s in SMALL_STEPS]
H_INIT = [0.2, 1.5, 0.1, 2.0, 0.0]  # the last: the glimpse that finds "</think>"


@pytest.fixture
def servers() -> Iterator[Callable[..., tuple[ScriptedServer, ScriptedServer]]]:
    """Factory: ``servers(small_script=..., large_script=..., **server_kwargs)``."""
    started: list[ScriptedServer] = []

    def make(
        small: Script | None = None, large: Script | None = None, **kwargs: Any
    ) -> tuple[ScriptedServer, ScriptedServer]:
        pair = (
            ScriptedServer(small or Script(steps=SMALL_STEPS, h_init=H_INIT), model="small-m",
                           **kwargs).start(),
            ScriptedServer(large or Script(steps=LARGE_STEPS, answer="The answer is 42."),
                           model="large-m", **kwargs).start(),
        )  # fmt: skip
        started.extend(pair)
        return pair

    yield make
    for server in started:
        server.stop()


def router_for(
    small: ScriptedServer, large: ScriptedServer, **settings: Any
) -> GlimpRouterChatModel:
    settings.setdefault("threshold", 1.0)
    return GlimpRouterChatModel(
        small=Backend(base_url=small.base_url, model="small-m"),
        large=Backend(base_url=large.base_url, model="large-m"),
        **settings,
    )
