"""langchain-glimprouter: probe-then-dispatch routing of reasoning steps between two models.

The package has four rooms: :mod:`~langchain_glimprouter.core` (the step loop, sans-I/O: no
LangChain, no HTTP), :mod:`~langchain_glimprouter.http` (the client and the drivers that run the
loop), the LangChain surface (:mod:`~langchain_glimprouter.chat_models` and its helpers) and the
tooling (:mod:`~langchain_glimprouter.cli`). Two more surfaces sit over the chat model as extras:
LlamaIndex's (:mod:`~langchain_glimprouter.llama_index`) and the OpenAI-compatible server
(:mod:`~langchain_glimprouter.proxy`). The names below are imported on first use, so that
``import langchain_glimprouter.core`` loads neither LangChain nor an HTTP client.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from langchain_glimprouter.backend import Backend
    from langchain_glimprouter.chat_models import GlimpRouterChatModel
    from langchain_glimprouter.core.strategies import STRATEGIES, AdaptiveThreshold, Strategy
    from langchain_glimprouter.errors import (
        BackendError,
        BackendResponseError,
        BackendTimeoutError,
        BackendUnreachableError,
        BudgetError,
        ContextLengthExceededError,
        GlimpRouterError,
        IncompleteAnswerError,
        InvalidArgumentError,
        LogprobsCapError,
        MalformedStreamError,
        MissingLogprobsError,
        PromptRenderingError,
        StreamErrorEventError,
        StreamInterruptedError,
        StreamTimeoutError,
    )
    from langchain_glimprouter.gguf import gguf_chat_template
    from langchain_glimprouter.records import STEP_EVENT, RoutingRecord, StepRecord

__all__ = [
    "STEP_EVENT",
    "STRATEGIES",
    "AdaptiveThreshold",
    "Backend",
    "BackendError",
    "BackendResponseError",
    "BackendTimeoutError",
    "BackendUnreachableError",
    "BudgetError",
    "ContextLengthExceededError",
    "GlimpRouterChatModel",
    "GlimpRouterError",
    "IncompleteAnswerError",
    "InvalidArgumentError",
    "LogprobsCapError",
    "MalformedStreamError",
    "MissingLogprobsError",
    "PromptRenderingError",
    "RoutingRecord",
    "StepRecord",
    "Strategy",
    "StreamErrorEventError",
    "StreamInterruptedError",
    "StreamTimeoutError",
    "gguf_chat_template",
]
_WHERE: dict[str, str] = {
    **{name: "errors" for name in __all__ if name.endswith("Error")},
    "Backend": "backend",
    "GlimpRouterChatModel": "chat_models",
    "gguf_chat_template": "gguf",
    **dict.fromkeys(("STEP_EVENT", "RoutingRecord", "StepRecord"), "records"),
    **dict.fromkeys(("STRATEGIES", "AdaptiveThreshold", "Strategy"), "core.strategies"),
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value  # once: later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
