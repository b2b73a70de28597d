"""What a routed call saved on the large model: the tokens it did not generate and the time
they would have taken at the large backend's decode rate observed on the same call.

The step loop times every stream as it reads it (:class:`StreamClock`, one per stream of a
:class:`~langchain_glimprouter.core.generation.Generation`); :class:`LargeTime` sums the large
backend's streams, and :func:`savings` turns that and the kept steps into the record's
``large_tokens_saved``, ``large_share``, ``large_s``, ``large_s_per_token`` and
``large_seconds_saved`` (see docs/deployment.md, "What to monitor").
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from langchain_glimprouter.records import Role, RoutingRecord


def now() -> float:
    """The clock of every stream's times (``time.perf_counter``)."""
    return time.perf_counter()


@dataclass
class StreamClock:
    """When one stream was opened, and when it brought its first and last tokens."""

    opened: float = field(default_factory=now)
    first: float | None = None
    """When the first chunk with a token arrived."""
    first_tokens: int = 0
    """Tokens counted up to and with that chunk (not decoded at the observed rate)."""
    last: float | None = None
    """When the last chunk arrived."""

    def read(self, tokens: int) -> None:
        """A chunk arrived; ``tokens``: the stream's tokens so far."""
        at = now()
        if self.first is None and tokens > 0:
            self.first, self.first_tokens = at, tokens
        self.last = at


@dataclass
class LargeTime:
    """The large backend's streams of one call, summed."""

    seconds: float = 0.0
    """From each request's opening to its last chunk (prefill and queueing included)."""
    decode_s: float = 0.0
    """From each stream's first token to its last chunk."""
    decode_tokens: int = 0
    """The tokens generated in ``decode_s``: each stream's tokens after its first chunk's."""

    def add(self, clock: StreamClock, tokens: int) -> None:
        """Account one finished (or abandoned) large stream of ``tokens`` tokens."""
        if clock.last is None:
            return
        self.seconds += clock.last - clock.opened
        if clock.first is not None and tokens > clock.first_tokens:
            self.decode_s += clock.last - clock.first
            self.decode_tokens += tokens - clock.first_tokens


def savings(record: RoutingRecord, answer_writer: Role, large: LargeTime) -> dict[str, Any]:
    """The record's savings fields for its kept steps and answer (see the module docstring)."""
    written: dict[Role, int] = {"small": 0, "large": 0}
    for step in record.steps:
        written[step.model] += step.tokens
    written[answer_writer] += record.answer_tokens
    saved, kept = written["small"], written["small"] + written["large"]
    per_token = large.decode_s / large.decode_tokens if large.decode_tokens else None
    return {
        "large_tokens_saved": saved,
        "large_share": written["large"] / kept if kept else 0.0,
        "large_s": large.seconds,
        "large_s_per_token": per_token,
        "large_seconds_saved": saved * per_token if per_token is not None else None,
    }
