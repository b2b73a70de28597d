"""The scripted small and large models the routing tests share, and a router over two servers
(fake or loopback: anything with a ``base_url``)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import pytest

from langchain_glimprouter import Backend, GlimpRouterChatModel
from scripted_server import Script

SMALL_STEPS = ["small writes step zero", "small writes step one", "small writes step two",
               "small writes step three"]  # fmt: skip
LARGE_STEPS = [s.replace("small", "large") for s in SMALL_STEPS]
H_INIT = [0.2, 1.5, 0.1, 2.0, 0.0]  # the last: the glimpse that finds "</think>"
RENDERS_PAST_REASONING = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% for key in ('reasoning', 'reasoning_content') %}{% if m[key] %}<think>{{ m[key] }}</think>"
    "{% endif %}{% endfor %}{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""ChatML that renders an assistant message's chain under either name, if it is given one (so a
test sees whether the router passes a past turn's chain to the template)."""


class Served(Protocol):
    base_url: str


S = TypeVar("S")


def scripted_pair(
    make: Callable[..., S], small: Script | None = None, large: Script | None = None, **kwargs: Any
) -> tuple[S, S]:
    """A small and a large server from ``make(script, model=..., **kwargs)`` (``"small-m"`` and
    ``"large-m"``) on the shared scripts, or on the scripts given."""
    small = small or Script(steps=SMALL_STEPS, h_init=H_INIT)
    large = large or Script(steps=LARGE_STEPS, answer="The answer is 42.")
    return make(small, model="small-m", **kwargs), make(large, model="large-m", **kwargs)


def router_for(small: Served, large: Served, **settings: Any) -> GlimpRouterChatModel:
    settings.setdefault("threshold", 1.0)
    return GlimpRouterChatModel(
        small=Backend(base_url=small.base_url, model="small-m"),
        large=Backend(base_url=large.base_url, model="large-m"),
        **settings,
    )


def replica_router(small: list[Served], large: list[Served]) -> GlimpRouterChatModel:
    """A router over replicas: the first server of each list is the base_url, the rest replicas."""

    def backend(servers: list[Served], model: str) -> Backend:
        urls = [s.base_url for s in servers]
        return Backend(base_url=urls[0], replicas=urls[1:], model=model)

    return GlimpRouterChatModel(
        small=backend(small, "s"), large=backend(large, "l"), threshold=1.0, max_retries=0
    )


async def cancel_mid_stream(work: Awaitable[Any], server: Any) -> None:
    """Start ``work``, cancel it once ``server`` (scripted, on a socket) streams a completion,
    and check that the server saw the request end unfinished: aborted, not left running."""
    task = asyncio.ensure_future(work)
    for _ in range(500):  # until a completion streams, however busy the machine
        if server.active == 1:
            break
        await asyncio.sleep(0.01)
    assert server.active == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.to_thread(server.wait_idle, 2)
    assert not server.requests[-1].finished
