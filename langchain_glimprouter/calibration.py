"""Choosing the threshold: the H_init quantile that sends a wanted share of step starts large.

:func:`calibrate` routes a sample of questions with every step on the small model
(``threshold=math.inf``: every step start is glimpsed and its ``h_init`` recorded, no step goes
large) and returns the threshold at which a share ``target_rate`` of those step starts would have
gone to the large model. ``glimprouter calibrate`` and ``glimprouter demo`` use it.

The quantile is an *upper* one, chosen among the observed values: for ``q = 1 - target_rate`` it
is the smallest observed value ``t`` such that the share of values strictly above ``t`` is at most
``target_rate``. Since a step goes large when ``H_init > threshold``, routing the same step starts
with ``threshold=t`` sends at most ``target_rate`` of them large (less when values tie at ``t``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_core.language_models import LanguageModelInput
from langchain_core.messages import BaseMessage

from langchain_glimprouter import stats
from langchain_glimprouter.chat_models import GlimpRouterChatModel
from langchain_glimprouter.errors import InvalidArgumentError
from langchain_glimprouter.questions import CALIBRATION_QUESTIONS as CALIBRATION_QUESTIONS
from langchain_glimprouter.records import RECORD_KEY

QUANTILES: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 0.9)
"""The quantiles a :class:`Calibration` reports besides its threshold."""

_EPS = 1e-9  # slack for target_rate * n computed in floating point (0.29 * 100 < 29)


def upper_quantile(values: Sequence[float], q: float) -> float:
    """The smallest value ``t`` of ``values`` with at most a share ``1 - q`` of them above ``t``.

    ``values`` must not be empty and ``q`` must lie in ``[0, 1]``. With ``q = 1 - target_rate``
    this is :func:`calibrate`'s threshold: no more than ``target_rate`` of the values exceed it.
    """
    ordered = sorted(values)
    n = len(ordered)
    allowed = (1.0 - q) * n + _EPS  # how many values may lie strictly above t
    for i, value in enumerate(ordered):
        # values strictly above ordered[i]: those after its last tie
        above = n - (i + 1)
        if i + 1 < n and ordered[i + 1] == value:
            continue
        if above <= allowed:
            return value
    return ordered[-1]


@dataclass(frozen=True)
class Calibration:
    """What :func:`calibrate` found: the threshold and the sample it comes from."""

    threshold: float
    """tau in nats: the ``1 - target_rate`` upper quantile of the observed H_init values."""
    target_rate: float
    """The wanted share of step starts that go to the large model."""
    realised_rate: float
    """The share of the sample's step starts above ``threshold`` (at most ``target_rate``)."""
    n_questions: int
    n_steps: int
    """Step starts with an observed H_init (steps with ``h_init=None`` are left out)."""
    quantiles: dict[float, float] = field(default_factory=dict)
    """The upper quantiles 0.1, 0.25, 0.5, 0.75 and 0.9 of the H_init values."""
    values: tuple[float, ...] = ()
    """Every observed H_init, sorted."""
    threshold_ci: tuple[float, float] | None = None
    """A bootstrap 95 % interval of ``threshold`` over the sample's questions: how far another
    sample of as many questions could move it (wide: calibrate on more questions)."""

    def rate_at(self, threshold: float) -> float:
        """The share of the sample's step starts that ``threshold`` would send large."""
        return sum(v > threshold for v in self.values) / len(self.values)

    def rounded_threshold(self, digits: int = 4) -> float:
        """The threshold rounded *up* to ``digits`` decimals, when that sends the same step starts
        of the sample large; otherwise the exact threshold (a value lies in between)."""
        scale = 10.0**digits
        rounded = math.ceil(self.threshold * scale) / scale
        return rounded if self.rate_at(rounded) == self.realised_rate else self.threshold

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the quantiles keyed by percent (``"10%"``), without the raw values."""
        return {
            "threshold": self.threshold,
            "target_rate": self.target_rate,
            "realised_rate": self.realised_rate,
            "n_questions": self.n_questions,
            "n_steps": self.n_steps,
            "quantiles": {f"{q:.0%}": v for q, v in self.quantiles.items()},
            "threshold_ci": list(self.threshold_ci) if self.threshold_ci else None,
        }


def _summarise(
    target_rate: float, n_questions: int, messages: Sequence[BaseMessage]
) -> Calibration:
    groups = [
        [s["h_init"] for s in message.response_metadata[RECORD_KEY]["steps"]
         if s["h_init"] is not None]
        for message in messages
    ]  # fmt: skip
    values = [v for group in groups for v in group]
    if not values:
        raise InvalidArgumentError(
            f"no H_init was observed over {n_questions} question(s): no step was glimpsed. "
            "Check that the small server returns logprobs and that the chains have steps "
            "(raise max_reasoning_tokens, use questions that need reasoning), or add questions."
        )
    values.sort()
    threshold = upper_quantile(values, 1.0 - target_rate)
    return Calibration(
        threshold=threshold,
        target_rate=target_rate,
        realised_rate=sum(v > threshold for v in values) / len(values),
        n_questions=n_questions,
        n_steps=len(values),
        quantiles={q: upper_quantile(values, q) for q in QUANTILES},
        values=tuple(values),
        threshold_ci=stats.upper_quantile_ci(groups, 1.0 - target_rate),
    )


def _check(
    questions: Sequence[LanguageModelInput], target_rate: float, max_concurrency: int | None
) -> list[Any]:
    if not 0.0 < target_rate < 1.0:
        raise InvalidArgumentError(
            f"target_rate must lie strictly between 0 and 1 (got {target_rate}): it is the share "
            "of step starts that should go to the large model, e.g. 0.25. For every step large "
            "use threshold=0; for none, threshold=math.inf."
        )
    if max_concurrency is not None and max_concurrency < 1:
        raise InvalidArgumentError(f"max_concurrency must be at least 1 (got {max_concurrency})")
    if isinstance(questions, str) or not questions:
        raise InvalidArgumentError(
            "calibration needs a non-empty list of questions (strings or message lists); "
            "a dozen or more representative ones give a usable threshold."
        )
    return list(questions)


# Every step on the small model; the answer (always the large model's) cut to one token, since
# only the chain's H_init values are wanted.
_OVERRIDES: dict[str, Any] = {"threshold": math.inf, "max_tokens": 1}


def calibrate(
    router: GlimpRouterChatModel,
    questions: Sequence[LanguageModelInput],
    target_rate: float,
    *,
    max_concurrency: int | None = None,
) -> Calibration:
    """The threshold that sends a share ``target_rate`` of step starts to the large model.

    Routes each question (a string or a message list) with ``threshold=math.inf`` (every step on
    the small model, every step start glimpsed) and ``max_tokens=1`` for the answer, up to
    ``max_concurrency`` at a time, and takes the ``1 - target_rate`` upper quantile of the
    recorded H_init values (see the module docstring). The router's other settings
    (``max_reasoning_tokens``, sampling, estimator) apply as they are.

    Raises :class:`InvalidArgumentError` for a ``target_rate`` outside (0, 1), no questions, or
    no H_init observed; a failing server raises as in ``batch``.
    """
    inputs = _check(questions, target_rate, max_concurrency)
    messages = router.batch(inputs, config={"max_concurrency": max_concurrency}, **_OVERRIDES)
    return _summarise(target_rate, len(inputs), messages)


async def acalibrate(
    router: GlimpRouterChatModel,
    questions: Sequence[LanguageModelInput],
    target_rate: float,
    *,
    max_concurrency: int | None = None,
) -> Calibration:
    """Async :func:`calibrate` (through ``abatch``)."""
    inputs = _check(questions, target_rate, max_concurrency)
    messages = await router.abatch(
        inputs, config={"max_concurrency": max_concurrency}, **_OVERRIDES
    )
    return _summarise(target_rate, len(inputs), messages)


def load_questions(path: str | Path) -> list[str]:
    """Questions from a file: one per line, or JSON lines with a ``"question"`` key.

    Each non-blank line that starts with ``{`` is read as a JSON object and must have a string
    ``"question"``; any other non-blank line is a question as it stands.
    """
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidArgumentError(f"cannot read the questions file {path}: {exc}") from None
    questions: list[str] = []
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text:
            continue
        if text.startswith("{"):
            try:
                record = json.loads(text)
            except json.JSONDecodeError as exc:
                raise InvalidArgumentError(
                    f"{path}:{number}: a line starting with '{{' must be a JSON object: {exc}"
                ) from None
            question = record.get("question") if isinstance(record, dict) else None
            if not isinstance(question, str) or not question.strip():
                raise InvalidArgumentError(
                    f'{path}:{number}: the JSON object has no string "question" key'
                )
            text = question.strip()
        questions.append(text)
    if not questions:
        raise InvalidArgumentError(f"the questions file {path} holds no question")
    return questions
