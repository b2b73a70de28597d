"""langchain-glimprouter: probe-then-dispatch routing of reasoning steps between two models."""

from langchain_glimprouter.backend import Backend
from langchain_glimprouter.chat_models import GlimpRouterChatModel
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
    StreamInterruptedError,
)
from langchain_glimprouter.gguf import gguf_chat_template
from langchain_glimprouter.records import STEP_EVENT, RoutingRecord, StepRecord
from langchain_glimprouter.routing.strategies import STRATEGIES, AdaptiveThreshold, Strategy

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
    "StreamInterruptedError",
    "gguf_chat_template",
]
