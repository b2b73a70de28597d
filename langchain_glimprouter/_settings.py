"""The router's settings, declared once as the fields of
:class:`~langchain_glimprouter.GlimpRouterChatModel`, and everything derived from them.

A field is a *router setting* unless it says how to reach the servers (:data:`CONNECTION`) or
belongs to LangChain's ``BaseChatModel``. From that one list come the routing core's
:class:`~langchain_glimprouter.routing.settings.RouteSettings` (:func:`route_settings`), the
model's identifying params (LangChain's cache key), the header of a bench results file and the
CLI flags (:mod:`langchain_glimprouter.cli.flags`); ``tests/unit_tests/test_settings.py`` fails
when a setting is missing from any of them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from langchain_glimprouter.errors import (
    BudgetError,
    InvalidArgumentError,
)
from langchain_glimprouter.routing.settings import RouteSettings
from langchain_glimprouter.routing.strategies import SPECS, STRATEGIES

CONNECTION = frozenset({"small", "large", "api_key", "timeout", "streaming"})
"""Fields that say how to reach the servers or how LangChain calls the model, not how to route."""
PER_CALL = frozenset(
    {"threshold", "max_reasoning_tokens", "max_tokens", "temperature", "top_p", "seed"}
)
"""Router settings a call may override (``router.invoke(..., threshold=0.5)``)."""
RENAMED = {"entropy_estimator": "estimator", "step_delimiter": "delimiters"}
"""Router settings whose RouteSettings field has another name (and form)."""
DERIVED = frozenset({"controller", "tools", "answer"})
"""RouteSettings fields made per call, not set by a field: the ``threshold="auto"`` controller,
the bound tools and the answer's constraint."""


def setting_names(fields: Iterable[str], inherited: Iterable[str]) -> tuple[str, ...]:
    """The router settings among a chat model's ``fields`` (those not ``inherited`` from
    ``BaseChatModel`` nor in :data:`CONNECTION`), in declaration order."""
    skip = CONNECTION | set(inherited)
    return tuple(name for name in fields if name not in skip)


def route_settings(values: Mapping[str, Any], **derived: Any) -> RouteSettings:
    """The core's settings from the router settings' ``values`` (by field name) and the
    :data:`DERIVED` ones."""
    converted = dict(values)
    converted["step_delimiter"] = delimiters(values["step_delimiter"])
    converted["stop"] = tuple(values["stop"] or ())
    return RouteSettings(**{RENAMED.get(k, k): v for k, v in converted.items()}, **derived)


def check_budgets(
    threshold: float | Literal["auto"], max_reasoning_tokens: int, max_tokens: int
) -> None:
    """Refuse a threshold or token budgets no routed call could use."""
    if threshold != "auto" and (
        not isinstance(threshold, (int, float)) or math.isnan(threshold) or threshold < 0
    ):
        raise InvalidArgumentError(
            f"threshold must be >= 0 nats or 'auto' (got {threshold!r}); 0 sends every step to "
            "the large model, math.inf every step to the small one."
        )
    if max_reasoning_tokens <= 0 or max_tokens <= 0:
        raise BudgetError(
            "max_reasoning_tokens and max_tokens must be positive (got "
            f"{max_reasoning_tokens} and {max_tokens})."
        )


def check_strategy(
    strategy: str, threshold: float | Literal["auto"], target_rate: float | None
) -> None:
    """Refuse a strategy, threshold and target rate that do not go together."""
    if strategy not in STRATEGIES:
        raise InvalidArgumentError(f"strategy must be one of {STRATEGIES} (got {strategy!r}).")
    if target_rate is not None and not 0.0 <= target_rate <= 1.0:
        raise InvalidArgumentError(f"target_rate must be in [0, 1] (got {target_rate}).")
    if threshold == "auto":
        if not SPECS[strategy].measured:
            raise InvalidArgumentError(
                f"threshold='auto' needs a strategy with a measure (glimpse, step_entropy, "
                f"step_ppl, specreason), not {strategy!r}."
            )
        if target_rate is None or not 0.0 < target_rate < 1.0:
            raise InvalidArgumentError(
                "threshold='auto' needs target_rate in (0, 1): the share of steps to send to "
                "the large model, e.g. target_rate=0.25."
            )
    elif SPECS[strategy].decider == "coin":
        if target_rate is None:
            raise InvalidArgumentError(
                "strategy='random' needs target_rate: the probability of a large step."
            )
    elif target_rate is not None:
        raise InvalidArgumentError(
            "target_rate is used only with threshold='auto' or strategy='random'; remove it, "
            "or set threshold='auto'."
        )


def delimiters(step_delimiter: str | list[str]) -> tuple[str, ...]:
    return (step_delimiter,) if isinstance(step_delimiter, str) else tuple(step_delimiter)
