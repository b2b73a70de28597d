"""The one line ``glimprouter bench`` keeps up to date on stderr while a run goes: questions
done, accuracy so far, the elapsed time and an estimate of the time left."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, TextIO


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class Progress:
    """The progress line on ``stream``: done/total, accuracy so far, errors, ETA.

    On a terminal the line is rewritten in place (``\\r``); otherwise one line is printed each
    time another tenth of the questions is done (and at the end).
    """

    def __init__(
        self, label: str, total: int, done: int = 0, correct: int = 0, stream: TextIO | None = None
    ) -> None:
        self.label, self.total, self.done, self.correct = label, total, done, correct
        self.errors = 0
        self.stream = stream
        self._skipped = done
        self._start = time.monotonic()
        self._tty = bool(stream is not None and stream.isatty())
        self._tenths = done * 10 // total if total else 10
        self._drawn = False

    def line(self) -> str:
        """The progress text as it stands."""
        share = self.done / self.total if self.total else 1.0
        accuracy = f"{self.correct / self.done:.1%}" if self.done else "-"
        fresh = self.done - self._skipped
        if self.done >= self.total:
            eta = "done in " + _duration(time.monotonic() - self._start)
        elif fresh:
            rate = (time.monotonic() - self._start) / fresh
            eta = "ETA " + _duration(rate * (self.total - self.done))
        else:
            eta = "ETA -"
        return (
            f"[{self.label}] {self.done}/{self.total} ({share:.0%})  accuracy {accuracy}  "
            f"errors {self.errors}  {eta}"
        )

    def update(self, line: Mapping[str, Any]) -> None:
        """Count one finished question and redraw."""
        self.done += 1
        self.correct += bool(line.get("correct"))
        self.errors += "error" in line
        if self.stream is None:
            return
        if self._tty:
            self.stream.write("\r\x1b[K" + self.line())
            self.stream.flush()
            self._drawn = True
            return
        tenths = self.done * 10 // self.total if self.total else 10
        if tenths > self._tenths or self.done == self.total:
            self._tenths = tenths
            print(self.line(), file=self.stream, flush=True)

    def start(self) -> None:
        """Show the line before the first question finishes (terminals only)."""
        if self.stream is not None and self._tty:
            self.stream.write(self.line())
            self.stream.flush()
            self._drawn = True

    def close(self) -> None:
        """End the terminal line."""
        if self.stream is not None and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False
