"""The router's settings: declared once (:class:`RouterSettings`), and what one routed call is
given besides the conversation: its resolved settings (:class:`RouteSettings`), a constraint on
its answer (:class:`AnswerConstraint`), and what the router learned about the servers across
calls (:class:`ServerFacts`).

:class:`RouterSettings` is the one declaration of every router setting: its name, type,
default and doc, and (through :class:`Setting`) whether a call may override it and which CLI
flag sets it. The :class:`~langchain_glimprouter.router.Router`'s constructor,
:class:`~langchain_glimprouter.GlimpRouterChatModel`'s fields, the CLI flags, the proxy's
per-request fields and its environment form all derive from it. Every setting is part of what
identifies a router's answers (LangChain's cache key).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Self, cast

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator
from pydantic.fields import FieldInfo

from langchain_glimprouter.core.entropy import ESTIMATORS, Estimator
from langchain_glimprouter.core.prompts import RenderCache
from langchain_glimprouter.core.strategies import SPECS, STRATEGIES, AdaptiveThreshold, Strategy
from langchain_glimprouter.errors import BudgetError, InvalidArgumentError

Probe = Literal["stream", "separate"]


@dataclass(frozen=True)
class Setting:
    """What a :class:`RouterSettings` field is besides its type, default and doc (in its
    ``Annotated`` metadata; a field without one is ``Setting()``)."""

    per_call: bool = True
    """A call may override it (``invoke(..., threshold=0)``, a proxy request's field)."""
    flag_aliases: tuple[str, ...] = ()
    """More CLI flags for it besides the one of its name (``--max-reasoning-tokens``)."""
    no_flag_because: str = ""
    """Why the CLI has no flag for it (empty: it has one)."""


def setting_of(info: FieldInfo) -> Setting:
    """The :class:`Setting` of a field (``Setting()`` when it declares none)."""
    return next((m for m in info.metadata if isinstance(m, Setting)), Setting())


class RouterSettings(BaseModel):
    """Every router setting, declared once: how steps are routed, the budgets and sampling of
    both servers, retries. (How to reach the servers is
    :class:`~langchain_glimprouter.router.RouterConfig`'s.)"""

    model_config = ConfigDict(populate_by_name=True, use_attribute_docstrings=True)

    threshold: float | Literal["auto"] = 0.9
    """tau in nats: a step whose H_init exceeds it goes to the large model. 0 sends every step
    to the large model (no glimpse), inf every step to the small one. 'auto': an online
    controller keeps the share of large steps near target_rate. With another strategy, the
    threshold of its own measure (see strategy)."""
    strategy: Strategy = "glimpse"
    """How a step's writer is chosen: 'glimpse' (the first token's entropy), the baselines
    'large_only', 'small_only' and 'random' (target_rate of the steps large), or
    generate-then-measure: 'step_entropy' (mean entropy of the small model's step > threshold:
    the large model rewrites it), 'step_ppl' (its perplexity), 'specreason' (the large model's
    0-9 score of it < threshold)."""
    target_rate: float | None = None
    """The wanted share of large steps, in (0, 1): the target of threshold='auto', and the
    probability of strategy='random'."""
    entropy_estimator: Annotated[Estimator, Setting(flag_aliases=("--estimator",))] = (
        "topk_renormalized"
    )
    """How H_init is computed from the top-k logprobs: 'topk_renormalized' (the paper's, whose
    thresholds it keeps), 'topk_tail' (a lower bound), or 'topk_bounds' (bounds of the exact
    entropy: the exact decision where the threshold lies outside them, an escalation probe where
    it is too close to call)."""
    escalation_logprobs: int = 1000
    """entropy_estimator='topk_bounds': k of the 1-token probe that settles a step too close to
    call (the small server's --max-logprobs must allow it; below that the router uses the
    server's cap, and at top_logprobs or less it decides on the estimate). 0: never escalate."""
    probe: Probe = "stream"
    """'stream': the glimpse is the start of the small model's step (one request per delegated
    step). 'separate': a 1-token probe request, then the step."""
    max_reasoning_tokens: int = 8192
    """Token budget of the whole chain, both models together."""
    max_tokens: int = 2048
    """Token budget of the final answer."""
    temperature: float | None = 0.6
    """Sampling temperature of both servers."""
    top_p: float | None = 0.95
    """Nucleus sampling of both servers."""
    seed: int | None = None
    """Sampling seed sent to both servers (and the coin of strategy='random')."""
    top_logprobs: int = 20
    """k of the first-token distribution asked of the small server (vLLM caps it with
    --max-logprobs, 20 by default)."""
    step_delimiter: Annotated[
        str | list[str],
        Setting(no_flag_because="a step ends at a blank line, as the paper's models write"),
    ] = "\n\n"
    """What ends a reasoning step: a string, or several (the one that ended a step stays at its
    end in the chain; several need a server that reports stop_reason, as vLLM does)."""
    max_step_tokens: int | None = None
    """Longest step in tokens: a longer one is cut there and the next step, routed afresh,
    continues its text. None: no limit."""
    stop: Annotated[
        list[str] | None,
        Setting(per_call=False, no_flag_because="the answer ends where the large model ends it"),
    ] = Field(default=None, alias="stop_sequences")
    """Stop sequences of the final answer (a call gives its own as ``stop``)."""
    max_retries: int = 2
    """Retries, with backoff, of a request that failed in a way that is safe to repeat
    (connection refused, 429, 5xx), and resumptions of a stream cut mid-response; a Backend's
    own max_retries wins."""
    on_small_failure: Literal["raise", "large"] = "raise"
    """When the small backend is down or failing (after retries): 'raise', or 'large' to send
    the steps to the large backend (each such step has fallback=True)."""

    @model_validator(mode="after")
    def _check(self) -> Self:
        check_settings(self.settings_dict())
        return self

    def settings_dict(self) -> dict[str, Any]:
        """Every router setting by field name, in declaration order."""
        return {name: getattr(self, name) for name in SETTING_NAMES}

    def with_overrides(self, given: dict[str, Any]) -> dict[str, Any]:
        """These settings with a call's ``given`` ones, each validated by its field's type as
        the constructor validates it (``"0.5"`` for a float becomes 0.5; ``"fast"`` for
        ``probe`` is refused), by field name. Raises
        :class:`~langchain_glimprouter.errors.InvalidArgumentError` naming the setting. The
        caller checks the whole with :func:`check_settings`, as the constructor does."""
        unknown = set(given) - set(PER_CALL)
        if unknown:
            raise InvalidArgumentError(
                f"unsupported call arguments {sorted(unknown)}; the router settings a call may "
                f"set: {sorted(PER_CALL)}.",
                param=min(unknown),
            )
        out = self.settings_dict()
        for name, value in given.items():
            try:
                out[name] = _adapter(name).validate_python(value)
            except ValidationError as exc:
                problem = "; ".join(e["msg"] for e in exc.errors())
                raise InvalidArgumentError(f"{name}={value!r}: {problem}.", param=name) from None
        return out


@functools.cache
def _adapter(name: str) -> TypeAdapter[Any]:
    return TypeAdapter(cast(Any, RouterSettings.model_fields[name].annotation))


SETTING_NAMES: tuple[str, ...] = tuple(RouterSettings.model_fields)
"""Every router setting, in declaration order."""
PER_CALL: tuple[str, ...] = tuple(
    name for name, info in RouterSettings.model_fields.items() if setting_of(info).per_call
)
"""The settings a call may override."""


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


@dataclass(frozen=True)
class RouteSettings:
    """One routed call's settings: a :class:`RouterSettings`' values with the call's overrides
    (see :func:`route_settings`; the docs and defaults are there), by the same names, in the
    forms the step loop reads, and what the call derives (the controller, the tools, the
    answer's constraint)."""

    threshold: float | None
    """The fixed threshold; None with ``threshold="auto"``: ``controller`` decides."""
    entropy_estimator: Estimator
    probe: Probe
    top_logprobs: int
    max_reasoning_tokens: int
    max_tokens: int
    temperature: float | None
    top_p: float | None
    seed: int | None
    step_delimiter: tuple[str, ...]
    """What ends a step (a tuple); the one that ended a step is kept in the chain."""
    max_step_tokens: int | None
    escalation_logprobs: int
    strategy: Strategy
    target_rate: float | None
    stop: tuple[str, ...]
    max_retries: int
    on_small_failure: Literal["raise", "large"]
    controller: AdaptiveThreshold | None = None
    """``threshold="auto"``: decides in place of ``threshold`` (shared across calls)."""
    tools: tuple[dict[str, Any], ...] = ()
    """OpenAI-style tool definitions, rendered into both backends' prompts."""
    answer: AnswerConstraint | None = None
    """A constrained final answer (a forced tool call, a JSON schema), or free text."""


DERIVED = frozenset({"controller", "tools", "answer"})
"""RouteSettings fields made per call, not set by a setting."""


def route_settings(values: Mapping[str, Any], **derived: Any) -> RouteSettings:
    """The step loop's settings from every router setting's value (by name, as
    :meth:`RouterSettings.settings_dict` gives them) and the :data:`DERIVED` ones."""
    converted = dict(values)
    converted["step_delimiter"] = delimiters(values["step_delimiter"])
    converted["stop"] = tuple(values["stop"] or ())
    return RouteSettings(**converted, **derived)


@dataclass(frozen=True)
class AnswerConstraint:
    """The final answer as ``prefix`` + text the server constrains to ``schema`` + ``suffix``.

    ``prefix`` is written into the large backend's prompt (the model continues after it) and is
    part of the answer; ``schema`` is a JSON schema enforced by the server's structured outputs
    (vLLM: ``structured_outputs.json``); ``suffix`` closes the answer when the server stopped
    on its own (not at ``max_tokens``).
    """

    schema: dict[str, Any]
    prefix: str = ""
    suffix: str = ""


@dataclass
class ServerFacts:
    """What the router learned about the servers; reused across calls of one router."""

    renders: RenderCache = field(default_factory=RenderCache)
    down: dict[str, float] = field(default_factory=dict)
    """Replica URLs found unreachable, with when (time.monotonic); skipped for a while."""
    max_model_len: dict[tuple[str, str], int | None] = field(default_factory=dict)
    """Context window per (base_url, model), from the server's /v1/models; None if unknown."""
    max_logprobs: dict[str, int] = field(default_factory=dict)
    """The logprobs cap a server refused more than (vLLM's --max-logprobs), per base_url."""
    token_ids: dict[tuple[str, str], int | None] = field(default_factory=dict)
    """The id of a whitespace token as a server's ``/tokenize`` gives it alone, per
    ``(base_url, token)``; None when it does not come back as one id."""
    untokenized: set[str] = field(default_factory=set)
    """Servers (base_url) whose ``/tokenize`` gave no token ids for a prompt (no such endpoint,
    or another request shape than vLLM's)."""
