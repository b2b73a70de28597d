"""What a routing program emits as it runs: the chain and the answer as they grow, each finished
step, and one :class:`Result` at the end."""

from __future__ import annotations

from dataclasses import dataclass

from langchain_glimprouter.records import RoutingRecord, StepRecord


@dataclass(frozen=True)
class ReasoningDelta:
    """New text of the reasoning chain (steps joined by the delimiter), as it is produced."""

    text: str


@dataclass(frozen=True)
class StepDone:
    """A reasoning step is finished."""

    record: StepRecord


@dataclass(frozen=True)
class AnswerDelta:
    """New text of the final answer."""

    text: str


@dataclass(frozen=True)
class Result:
    """The end of a routed call: the whole answer, chain and routing record."""

    answer: str
    reasoning: str
    finish_reason: str | None
    record: RoutingRecord
    input_tokens: int
    output_tokens: int
    reasoning_tokens: int


Event = ReasoningDelta | StepDone | AnswerDelta | Result
