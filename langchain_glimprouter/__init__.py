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
from importlib.metadata import version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from langchain_glimprouter import errors
    from langchain_glimprouter.backend import Backend
    from langchain_glimprouter.chat_models import GlimpRouterChatModel
    from langchain_glimprouter.core.answers import RoutedAnswer, ToolCallDone, Usage
    from langchain_glimprouter.core.events import AnswerDelta, ReasoningDelta, StepDone
    from langchain_glimprouter.core.settings import RouterSettings
    from langchain_glimprouter.core.strategies import STRATEGIES, AdaptiveThreshold, Strategy
    from langchain_glimprouter.core.tool_calls import (
        HermesToolCallParser,
        InvalidCall,
        ParsedCall,
        ToolCallParser,
    )
    from langchain_glimprouter.errors import GlimpRouterError
    from langchain_glimprouter.gguf import gguf_chat_template
    from langchain_glimprouter.records import (
        RECORD_KEY,
        STEP_EVENT,
        STEPS_KEY,
        RoutingRecord,
        StepRecord,
    )
    from langchain_glimprouter.router import Router, RouterConfig

__version__ = version("langchain-glimprouter")

__all__ = [
    "RECORD_KEY",
    "STEPS_KEY",
    "STEP_EVENT",
    "STRATEGIES",
    "AdaptiveThreshold",
    "AnswerDelta",
    "Backend",
    "GlimpRouterChatModel",
    "GlimpRouterError",
    "HermesToolCallParser",
    "InvalidCall",
    "ParsedCall",
    "ReasoningDelta",
    "RoutedAnswer",
    "Router",
    "RouterConfig",
    "RouterSettings",
    "RoutingRecord",
    "StepDone",
    "StepRecord",
    "Strategy",
    "ToolCallDone",
    "ToolCallParser",
    "Usage",
    "__version__",
    "errors",
    "gguf_chat_template",
]
_ERRORS = (
    "BackendError",
    "BackendResponseError",
    "BackendTimeoutError",
    "BackendUnreachableError",
    "BudgetError",
    "ContextLengthExceededError",
    "IncompleteAnswerError",
    "InvalidArgumentError",
    "LogprobsCapError",
    "MalformedStreamError",
    "MissingLogprobsError",
    "PromptRenderingError",
    "StreamErrorEventError",
    "StreamInterruptedError",
    "StreamTimeoutError",
)
"""The typed errors, grouped under :mod:`~langchain_glimprouter.errors`; also importable from here
(``from langchain_glimprouter import InvalidArgumentError``), as before 0.2."""
_WHERE: dict[str, str] = {
    **dict.fromkeys((*_ERRORS, "GlimpRouterError"), "errors"),
    **dict.fromkeys(("Router", "RouterConfig"), "router"),
    **dict.fromkeys(("RoutedAnswer", "ToolCallDone", "Usage"), "core.answers"),
    **dict.fromkeys(("AnswerDelta", "ReasoningDelta", "StepDone"), "core.events"),
    "RouterSettings": "core.settings",
    **dict.fromkeys(
        ("HermesToolCallParser", "InvalidCall", "ParsedCall", "ToolCallParser"), "core.tool_calls"
    ),
    "Backend": "backend",
    "GlimpRouterChatModel": "chat_models",
    "gguf_chat_template": "gguf",
    **dict.fromkeys(
        ("RECORD_KEY", "STEPS_KEY", "STEP_EVENT", "RoutingRecord", "StepRecord"), "records"
    ),
    **dict.fromkeys(("STRATEGIES", "AdaptiveThreshold", "Strategy"), "core.strategies"),
}


def __getattr__(name: str) -> Any:
    if name == "errors":
        return import_module(f"{__name__}.errors")
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value  # once: later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
