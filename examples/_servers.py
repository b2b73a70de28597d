"""Where the examples find their two servers: environment variables, else localhost defaults.

GLIMPROUTER_SMALL_URL / GLIMPROUTER_SMALL_MODEL / GLIMPROUTER_LARGE_URL / GLIMPROUTER_LARGE_MODEL
and GLIMPROUTER_THRESHOLD (nats). The test suite sets them to its local vLLM servers.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from langchain_glimprouter import Backend

if TYPE_CHECKING:
    from langchain_glimprouter import GlimpRouterChatModel

env = os.environ.get


def backends() -> tuple[Backend, Backend]:
    """The small and the large server."""
    small = Backend(
        base_url=env("GLIMPROUTER_SMALL_URL", "http://localhost:8001/v1"),
        model=env("GLIMPROUTER_SMALL_MODEL", "Qwen/Qwen3-4B"),
    )
    large = Backend(
        base_url=env("GLIMPROUTER_LARGE_URL", "http://localhost:8002/v1"),
        model=env("GLIMPROUTER_LARGE_MODEL", "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B"),
    )
    return small, large


def threshold() -> float:
    return float(env("GLIMPROUTER_THRESHOLD", "0.9"))


def router(**settings: object) -> GlimpRouterChatModel:
    """The LangChain chat model over the two servers (LangChain is loaded here, not before)."""
    from langchain_glimprouter import GlimpRouterChatModel

    small, large = backends()
    return GlimpRouterChatModel(
        small=small,
        large=large,
        threshold=threshold(),
        **settings,  # type: ignore[arg-type]
    )
