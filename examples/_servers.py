"""Where the examples find their two servers: environment variables, else localhost defaults.

GLIMPROUTER_SMALL_URL / GLIMPROUTER_SMALL_MODEL / GLIMPROUTER_LARGE_URL / GLIMPROUTER_LARGE_MODEL
and GLIMPROUTER_THRESHOLD (nats). The test suite sets them to its local vLLM servers.
"""

from __future__ import annotations

import os

from langchain_glimprouter import Backend, GlimpRouterChatModel


def router(**settings: object) -> GlimpRouterChatModel:
    env = os.environ.get
    return GlimpRouterChatModel(
        small=Backend(
            base_url=env("GLIMPROUTER_SMALL_URL", "http://localhost:8001/v1"),
            model=env("GLIMPROUTER_SMALL_MODEL", "Qwen/Qwen3-4B"),
        ),
        large=Backend(
            base_url=env("GLIMPROUTER_LARGE_URL", "http://localhost:8002/v1"),
            model=env("GLIMPROUTER_LARGE_MODEL", "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B"),
        ),
        threshold=float(env("GLIMPROUTER_THRESHOLD", "0.9")),
        **settings,  # type: ignore[arg-type]
    )
