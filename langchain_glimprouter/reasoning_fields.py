"""The two names of the chain of thought in an OpenAI-style chat completions message or delta.

vLLM's reasoning parsers wrote it as ``reasoning_content`` (DeepSeek's name) until vllm#27752,
which moved it to ``reasoning`` (OpenAI's guidance since gpt-oss, OpenRouter's name) and kept the
old name for a while; later vLLM releases write ``reasoning`` only. The proxy writes both names;
whatever reads a server's answer takes either (:func:`reasoning_of`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

NAMES = ("reasoning", "reasoning_content")
"""The chain's field names, the current one first."""


def reasoning_of(message: Mapping[str, Any] | Any) -> str:
    """The chain in a chat completions ``message`` or stream ``delta`` under either name (the
    first that is not empty), or ``""``. ``message`` is the JSON object, or the openai SDK's
    object (whose ``model_extra`` holds fields beyond OpenAI's)."""
    fields = message if isinstance(message, Mapping) else getattr(message, "model_extra", None)
    for name in NAMES:
        if text := (fields or {}).get(name):
            return str(text)
    return ""
