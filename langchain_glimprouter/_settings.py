"""The router's settings, declared once as the fields of
:class:`~langchain_glimprouter.GlimpRouterChatModel`, and everything derived from them.

A field is a *router setting* unless it says how to reach the servers (:data:`CONNECTION`) or
belongs to LangChain's ``BaseChatModel``. From that one list come the routing core's
:class:`~langchain_glimprouter.core.settings.RouteSettings` (:func:`route_settings`), the
model's identifying params (LangChain's cache key), the header of a bench results file and the
CLI flags (:mod:`langchain_glimprouter.cli.flags`); ``tests/unit_tests/test_settings.py`` fails
when a setting is missing from any of them.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping
from typing import Any, Literal, cast

from pydantic import TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from langchain_glimprouter.core.entropy import ESTIMATORS
from langchain_glimprouter.core.settings import RouteSettings
from langchain_glimprouter.core.strategies import SPECS, STRATEGIES
from langchain_glimprouter.errors import (
    BudgetError,
    InvalidArgumentError,
)

CONNECTION = frozenset({"small", "large", "api_key", "timeout", "streaming"})
"""Fields that say how to reach the servers or how LangChain calls the model, not how to route."""
NOT_PER_CALL = frozenset({"stop"})
"""Router settings a call may not override: ``stop`` is LangChain's own call argument."""
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
            "the large model, math.inf every step to the small one.",
            param="threshold",
        )
    if max_reasoning_tokens <= 0 or max_tokens <= 0:
        raise BudgetError(
            "max_reasoning_tokens and max_tokens must be positive (got "
            f"{max_reasoning_tokens} and {max_tokens}).",
            param="max_reasoning_tokens" if max_reasoning_tokens <= 0 else "max_tokens",
        )


def check_strategy(
    strategy: str, threshold: float | Literal["auto"], target_rate: float | None
) -> None:
    """Refuse a strategy, threshold and target rate that do not go together."""
    if strategy not in STRATEGIES:
        raise InvalidArgumentError(
            f"strategy must be one of {STRATEGIES} (got {strategy!r}).", param="strategy"
        )
    if target_rate is not None and not 0.0 <= target_rate <= 1.0:
        raise InvalidArgumentError(
            f"target_rate must be in [0, 1] (got {target_rate}).", param="target_rate"
        )
    if threshold == "auto":
        if not SPECS[strategy].measured:
            raise InvalidArgumentError(
                f"threshold='auto' needs a strategy with a measure (glimpse, step_entropy, "
                f"step_ppl, specreason), not {strategy!r}.",
                param="strategy",
            )
        if target_rate is None or not 0.0 < target_rate < 1.0:
            raise InvalidArgumentError(
                "threshold='auto' needs target_rate in (0, 1): the share of steps to send to "
                "the large model, e.g. target_rate=0.25.",
                param="target_rate",
            )
    elif SPECS[strategy].decider == "coin":
        if target_rate is None:
            raise InvalidArgumentError(
                "strategy='random' needs target_rate: the probability of a large step.",
                param="target_rate",
            )
    elif target_rate is not None:
        raise InvalidArgumentError(
            "target_rate is used only with threshold='auto' or strategy='random'; remove it, "
            "or set threshold='auto'.",
            param="target_rate",
        )


def delimiters(step_delimiter: str | list[str]) -> tuple[str, ...]:
    return (step_delimiter,) if isinstance(step_delimiter, str) else tuple(step_delimiter)


def check_settings(values: Mapping[str, Any]) -> None:
    """Refuse router settings that do not go together (the checks pydantic's types cannot
    make): the constructor's, and those of a call's overrides."""
    check_budgets(values["threshold"], values["max_reasoning_tokens"], values["max_tokens"])
    check_strategy(values["strategy"], values["threshold"], values["target_rate"])
    if values["max_step_tokens"] is not None and values["max_step_tokens"] < 1:
        raise InvalidArgumentError(
            f"max_step_tokens must be >= 1 or None (got {values['max_step_tokens']}).",
            param="max_step_tokens",
        )
    if values["top_logprobs"] < 1:
        raise InvalidArgumentError(
            f"top_logprobs must be >= 1 (got {values['top_logprobs']}).", param="top_logprobs"
        )
    if values["escalation_logprobs"] < 0:
        raise InvalidArgumentError(
            f"escalation_logprobs must be >= 0 (got {values['escalation_logprobs']}); 0 never "
            "escalates.",
            param="escalation_logprobs",
        )
    if values["max_retries"] < 0:
        raise InvalidArgumentError(
            f"max_retries must be >= 0 (got {values['max_retries']}).", param="max_retries"
        )
    found = delimiters(values["step_delimiter"])
    if not found or not all(found):
        raise InvalidArgumentError(
            "step_delimiter must not be empty (nor hold an empty one).", param="step_delimiter"
        )
    if values["entropy_estimator"] not in ESTIMATORS:
        raise InvalidArgumentError(
            f"entropy_estimator must be one of {ESTIMATORS}.", param="entropy_estimator"
        )


def overrides(fields: Mapping[str, FieldInfo], given: Mapping[str, Any]) -> dict[str, Any]:
    """A call's router settings, each validated by its field's type as the constructor would
    (``"0.5"`` for a float becomes 0.5; ``"fast"`` for ``probe`` is refused)."""
    out: dict[str, Any] = {}
    for name, value in given.items():
        try:
            out[name] = _adapter(fields[name]).validate_python(value)
        except ValidationError as exc:
            problem = "; ".join(e["msg"] for e in exc.errors())
            raise InvalidArgumentError(f"{name}={value!r}: {problem}.", param=name) from None
    return out


@functools.cache
def _adapter(field: FieldInfo) -> TypeAdapter[Any]:
    return TypeAdapter(cast(Any, field.annotation))
