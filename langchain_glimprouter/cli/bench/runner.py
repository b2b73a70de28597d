"""``glimprouter bench``: run a question set through the router and see what it saves and costs.

The experiment of the paper as a tool. :func:`arun` routes every question of a bench file (see
:mod:`~langchain_glimprouter.cli.bench.grading`) through a chat model, ``concurrency`` at a time,
grades each answer and appends one JSON line per question to a results file as soon as it finishes.
:func:`summarize` turns such lines into a :class:`Summary` (accuracy, latency, intervention
rate, tokens and requests per model). :func:`asweep` does one run per threshold (and, on
request, the large-only and small-only baselines) and writes ``sweep.csv``. What is drawn or
analysed from recorded runs (the sweep's plots, the entropy comparison of ``--analyze``) is in
:mod:`~langchain_glimprouter.cli.bench.plots`.

A results file is JSON lines. The first line is ``{"config": {...}}``: the settings of the run
(strategy, threshold, models, budgets, sampling, prompt), which ``resume=True`` checks before it
continues a file. Every further line is one question (see :func:`result_line` for the fields);
:func:`read_results` reads a file back.
"""

from __future__ import annotations

import asyncio
import csv
import json
import math
import os
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Literal, TextIO

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage

from langchain_glimprouter import stats
from langchain_glimprouter.chat_models import GlimpRouterChatModel
from langchain_glimprouter.cli.bench.grading import BenchItem, grade
from langchain_glimprouter.errors import GlimpRouterError, InvalidArgumentError

ModelSource = BaseChatModel | Callable[[], BaseChatModel]
"""A chat model, or a function that builds one (called once per run)."""
ThresholdSpec = float | Literal["auto"]

INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
"""Appended to every question (the prompt the R1-Distill models are evaluated with)."""
CHOICE_INSTRUCTION = (
    "Please reason step by step, and put the letter of your final choice within \\boxed{}."
)
"""Appended to a multiple-choice question, after its lettered options."""
BASELINES: tuple[str, ...] = ("large_only", "small_only")
SWEEP_FIELDS: tuple[str, ...] = (
    "threshold",
    "strategy",
    "n",
    "errors",
    "accuracy",
    "accuracy_lo",
    "accuracy_hi",
    "latency_mean_s",
    "latency_median_s",
    "latency_median_lo_s",
    "latency_median_hi_s",
    "latency_p10_s",
    "latency_p90_s",
    "latency_vs_large_only",
    "latency_vs_large_only_lo",
    "latency_vs_large_only_hi",
    "intervention_rate",
    "intervention_rate_lo",
    "intervention_rate_hi",
    "intervention_rate_mean",
    "tokens_small",
    "tokens_large",
    "requests_small",
    "requests_large",
    "wasted_small_tokens",
)
"""The columns of ``sweep.csv``, one row per run. ``_lo`` / ``_hi`` are the ends of a bootstrap
95 % confidence interval over questions (:mod:`~langchain_glimprouter.stats`);
``latency_vs_large_only`` is the run's mean latency over the large-only baseline's, on the
questions both answered (empty without that baseline in the sweep)."""

_ROLES = ("small", "large")
_ROUTER_SETTINGS = (
    "strategy",
    "threshold",
    "target_rate",
    "entropy_estimator",
    "probe",
    "max_reasoning_tokens",
    "max_tokens",
    "temperature",
    "top_p",
    "seed",
    "top_logprobs",
    "step_delimiter",
    "max_step_tokens",
    "on_small_failure",
)
# Config keys that may differ when a file is resumed: where the servers are, how fast it runs.
_NOT_COMPARED = frozenset({"small_url", "large_url", "data", "concurrency"})


# -- prompts and config ---------------------------------------------------------------------------


def item_messages(item: BenchItem, system: str | None = None) -> list[BaseMessage]:
    """The conversation of one question: an optional system message, then the question with its
    options lettered "(A) ..." (multiple choice) and :data:`INSTRUCTION` (or
    :data:`CHOICE_INSTRUCTION`), unless the question already asks for ``\\boxed``."""
    text = item.question
    if item.choices:
        options = "\n".join(
            f"({chr(ord('A') + i)}) {choice}" for i, choice in enumerate(item.choices)
        )
        text = f"{text}\n\n{options}"
    if "\\boxed" not in item.question:
        text = f"{text}\n\n{CHOICE_INSTRUCTION if item.choices else INSTRUCTION}"
    messages: list[BaseMessage] = [SystemMessage(system)] if system else []
    return [*messages, HumanMessage(text)]


def jsonable(value: Any) -> Any:
    """``value`` with non-finite floats as the strings ``"inf"``, ``"-inf"``, ``"nan"`` (strict
    JSON has no infinity), tuples as lists, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def as_float(value: Any) -> float | None:
    """A number of a results line (``"inf"`` included) as a float; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def model_config(model: BaseChatModel) -> dict[str, Any]:
    """The settings of ``model`` that a results file records: for a router its models, URLs,
    strategy, threshold, budgets and sampling; for another chat model its class name."""
    if not isinstance(model, GlimpRouterChatModel):
        return {"chat_model": type(model).__name__}
    config: dict[str, Any] = {
        "small_model": model.small.model,
        "large_model": model.large.model,
        "small_url": model.small.base_url,
        "large_url": model.large.base_url,
    }
    for name in _ROUTER_SETTINGS:
        config[name] = getattr(model, name)
    return jsonable(config)  # type: ignore[no-any-return]


def _config_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    keys = sorted((set(old) | set(new)) - _NOT_COMPARED)
    return [
        f"{key}: {old.get(key)!r} in the file, {new.get(key)!r} now"
        for key in keys
        if old.get(key) != new.get(key)
    ]


# -- results lines --------------------------------------------------------------------------------


def _text(message: BaseMessage) -> str:
    return message.content if isinstance(message.content, str) else message.text


def result_line(
    item: BenchItem,
    message: BaseMessage,
    latency_s: float,
    strategy: str,
    threshold: Any = None,
) -> dict[str, Any]:
    """One results line: the question, the graded response and the routing record's numbers.

    Fields: ``id``, ``question``, ``expected`` (the reference answer), ``response`` (the answer
    text), ``predicted`` (the normalised extracted answer, or None), ``correct``, ``latency_s``
    (wall time of the call), ``strategy`` (the run's), ``threshold`` (the record's: the value
    used, ``"inf"`` for infinity), ``n_steps``, ``n_large_steps``, ``intervention_rate``,
    ``tokens`` and ``requests`` (``{"small": int, "large": int}``), ``wasted_small_tokens``,
    ``reasoning_tokens``, ``answer_tokens``, ``chain_end``, ``escalations`` and ``steps`` (each
    ``{"model", "h_init", "score", "tokens", "latency_s", "skipped", "decision",
    "escalation_s"}``). A chat model without a routing record leaves the routing fields None.
    """
    response = _text(message)
    verdict = grade(response, item)
    record: Mapping[str, Any] = message.response_metadata.get("glimprouter") or {}
    steps = [
        {
            "model": step.get("model"),
            "h_init": step.get("h_init"),
            "score": step.get("score"),
            "tokens": step.get("tokens"),
            "latency_s": step.get("latency_s"),
            "skipped": step.get("skipped"),
            "decision": step.get("decision"),
            "escalation_s": step.get("escalation_s"),
        }
        for step in record.get("steps", [])
    ]
    return jsonable(  # type: ignore[no-any-return]
        {
            "id": item.id,
            "question": item.question,
            "expected": item.answer,
            "response": response,
            "predicted": verdict.predicted,
            "correct": verdict.correct,
            "latency_s": latency_s,
            "strategy": strategy,
            "threshold": record.get("threshold", threshold),
            "n_steps": record.get("n_steps"),
            "n_large_steps": record.get("n_large_steps"),
            "intervention_rate": record.get("intervention_rate"),
            "tokens": _per_role(record.get("tokens")),
            "requests": _per_role(record.get("requests")),
            "wasted_small_tokens": record.get("wasted_small_tokens"),
            "reasoning_tokens": record.get("reasoning_tokens"),
            "answer_tokens": record.get("answer_tokens"),
            "chain_end": record.get("chain_end"),
            "escalations": record.get("escalations"),
            "steps": steps,
        }
    )


def _per_role(value: Any) -> dict[str, Any] | None:
    if not isinstance(value, Mapping):
        return None
    return {role: value.get(role, 0) for role in _ROLES}


def error_line(
    item: BenchItem, error: BaseException, latency_s: float, strategy: str, threshold: Any = None
) -> dict[str, Any]:
    """The results line of a question whose call failed: ``"error": "<type>: <message>"``,
    ``correct`` false, the routing fields None."""
    line: dict[str, Any] = {
        "id": item.id,
        "question": item.question,
        "expected": item.answer,
        "response": None,
        "predicted": None,
        "correct": False,
        "latency_s": latency_s,
        "strategy": strategy,
        "threshold": threshold,
    }
    line |= dict.fromkeys(
        ("n_steps", "n_large_steps", "intervention_rate", "tokens", "requests",
         "wasted_small_tokens", "reasoning_tokens", "answer_tokens", "chain_end"),
    )  # fmt: skip
    line |= {"steps": [], "error": f"{type(error).__name__}: {error}"}
    return jsonable(line)  # type: ignore[no-any-return]


def read_results(path: str | os.PathLike[str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The config and the question lines of a results file.

    A line that is not a JSON object (the last one, cut by a crash) is skipped; when an id
    appears more than once the last line wins. Raises :class:`InvalidArgumentError` when the
    file cannot be read.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidArgumentError(f"cannot read the results file {path}: {exc}") from None
    config: dict[str, Any] = {}
    lines: dict[str, dict[str, Any]] = {}
    for raw in text.splitlines():
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError:
            continue
        if not isinstance(obj, dict):
            continue
        if "config" in obj and "id" not in obj:
            config = obj["config"] if isinstance(obj["config"], dict) else {}
        elif isinstance(obj.get("id"), str):
            lines.pop(obj["id"], None)
            lines[obj["id"]] = obj
    return config, list(lines.values())


# -- progress -------------------------------------------------------------------------------------


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


# -- one run --------------------------------------------------------------------------------------


def _build(model: ModelSource) -> BaseChatModel:
    if isinstance(model, BaseChatModel):  # a chat model is callable too (deprecated __call__)
        return model
    built = model()
    if not isinstance(built, BaseChatModel):
        raise InvalidArgumentError(f"the model factory returned {type(built).__name__}")
    return built


def _default_label(model: BaseChatModel) -> str:
    return str(getattr(model, "strategy", "glimpse"))


def _check_items(items: Sequence[BenchItem], concurrency: int) -> None:
    if concurrency < 1:
        raise InvalidArgumentError(f"concurrency must be at least 1 (got {concurrency})")
    if not items:
        raise InvalidArgumentError("the bench has no questions")
    seen: set[str] = set()
    for item in items:
        if not item.id:
            raise InvalidArgumentError(
                f"a question has no id ({item.question[:40]!r}): give every BenchItem an id "
                "(load_items numbers them)"
            )
        if item.id in seen:
            raise InvalidArgumentError(f"two questions have the id {item.id!r}")
        seen.add(item.id)


def _prepare_file(
    out: Path, config: dict[str, Any], items: Sequence[BenchItem], resume: bool
) -> dict[str, dict[str, Any]]:
    """Write the header of a new file, or check and compact the file to resume; return the
    lines of the questions already done (by id)."""
    if not out.exists() or out.stat().st_size == 0:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"config": config}) + "\n", encoding="utf-8")
        return {}
    if not resume:
        raise InvalidArgumentError(
            f"{out} exists: pass --resume (resume=True) to continue it, or choose another "
            "output folder"
        )
    old, lines = read_results(out)
    if not old:
        raise InvalidArgumentError(f"cannot resume {out}: it has no config line")
    differences = _config_differences(old, config)
    if differences:
        raise InvalidArgumentError(
            f"cannot resume {out}: it was written with other settings ("
            + "; ".join(differences)
            + "). Use the same settings, or another output folder."
        )
    questions = {item.id: item.question for item in items}
    for line in lines:
        known = questions.get(line["id"])
        if known is not None and known != line.get("question"):
            raise InvalidArgumentError(
                f"cannot resume {out}: its question {line['id']!r} is not the data's question "
                "with that id (another data file?)"
            )
    done = {line["id"]: line for line in lines if not line.get("error")}
    # Rewrite without the failed questions (they run again) and any cut last line.
    tmp = out.with_name(out.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(json.dumps({"config": old | _only(config, {"small_url", "large_url"})}) + "\n")
        for line in done.values():
            f.write(json.dumps(line) + "\n")
    os.replace(tmp, out)
    return done


def _append(path: Path) -> TextIO:
    """The results file opened for appending (small writes, one line per finished question)."""
    return path.open("a", encoding="utf-8")


def _only(mapping: Mapping[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    return {k: mapping[k] for k in keys if k in mapping}


async def arun(
    items: Sequence[BenchItem],
    model: ModelSource,
    out: str | os.PathLike[str],
    *,
    concurrency: int = 4,
    resume: bool = False,
    system: str | None = None,
    label: str | None = None,
    config: Mapping[str, Any] | None = None,
    progress: TextIO | None = None,
) -> list[dict[str, Any]]:
    """Route ``items`` through ``model``, ``concurrency`` at a time, into the results file ``out``.

    ``model`` is a chat model or a function that builds one. Each question is sent with
    :func:`item_messages` (``ainvoke``), graded with
    :func:`~langchain_glimprouter.cli.bench.grading.grade` and written as one line
    (:func:`result_line`) as soon as it finishes. A call that raises a
    :class:`GlimpRouterError` is written as an :func:`error_line` and the run goes on. ``label``
    is the run's strategy name in the lines (default: the model's ``strategy``, else
    ``"glimpse"``); ``config`` adds to the settings the header records (:func:`model_config`).
    ``progress``: where the :class:`Progress` line goes (``sys.stderr`` in the CLI; None: none).

    An existing, non-empty ``out`` is refused unless ``resume``: then its config must equal this
    run's (server URLs and the data path aside), questions it holds without an error are
    skipped, and failed ones run again. Cancellation (Ctrl-C) stops the run; every line written
    stays. Returns the lines of all the questions in the file, in the order of ``items``.
    """
    _check_items(items, concurrency)
    chat = _build(model)
    label = label or _default_label(chat)
    settings = model_config(chat) | {"strategy": label}
    settings |= {"system": system, "instruction": INSTRUCTION} | jsonable(dict(config or {}))
    path = Path(out)
    done = _prepare_file(path, settings, items, resume)
    todo = [item for item in items if item.id not in done]
    threshold = settings.get("threshold")
    meter = Progress(
        label if threshold is None else f"{label} {threshold}",
        total=len(items),
        done=len(items) - len(todo),
        correct=sum(bool(done[i.id].get("correct")) for i in items if i.id in done),
        stream=progress,
    )
    gate = asyncio.Semaphore(concurrency)
    results: dict[str, dict[str, Any]] = {k: v for k, v in done.items()}

    with _append(path) as f:

        async def one(item: BenchItem) -> None:
            async with gate:
                start = time.perf_counter()
                try:
                    message = await chat.ainvoke(item_messages(item, system))
                except GlimpRouterError as exc:
                    line = error_line(item, exc, time.perf_counter() - start, label, threshold)
                else:
                    latency = time.perf_counter() - start
                    line = result_line(item, message, latency, label, threshold)
            f.write(json.dumps(line) + "\n")
            f.flush()
            results[item.id] = line
            meter.update(line)

        meter.start()
        tasks = [asyncio.ensure_future(one(item)) for item in todo]
        try:
            for finished in asyncio.as_completed(tasks):
                await finished
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            meter.close()
    return [results[item.id] for item in items if item.id in results]


def run(items: Sequence[BenchItem], model: ModelSource, out: str | os.PathLike[str],
        **kwargs: Any) -> list[dict[str, Any]]:  # fmt: skip
    """:func:`arun` in a new event loop."""
    return asyncio.run(arun(items, model, out, **kwargs))


# -- summary --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    """What one run comes to. Errors count as wrong answers in ``accuracy``; the latency,
    intervention, token and request figures are over the questions that did not fail."""

    strategy: str
    threshold: Any
    """The run's threshold: a float, ``"inf"``, ``"auto"``, or None when unknown."""
    n: int
    errors: int
    correct: int
    accuracy: float
    latency_mean_s: float | None
    latency_median_s: float | None
    intervention_rate: float | None
    """Step-weighted: large steps over all steps of all questions."""
    intervention_rate_mean: float | None
    """The mean of the questions' own intervention rates."""
    tokens: dict[str, int] = field(default_factory=dict)
    requests: dict[str, int] = field(default_factory=dict)
    tokens_per_question: dict[str, float] = field(default_factory=dict)
    requests_per_question: dict[str, float] = field(default_factory=dict)
    wasted_small_tokens: int = 0
    accuracy_ci: stats.Interval | None = None
    """Bootstrap 95 % interval of ``accuracy`` over the questions."""
    intervention_rate_ci: stats.Interval | None = None
    latency_mean_ci: stats.Interval | None = None
    latency_median_ci: stats.Interval | None = None
    latency_quantiles: dict[float, float] = field(default_factory=dict)
    """The 10, 50 and 90 % quantiles of the latency."""
    latencies: dict[str, float] = field(default_factory=dict, repr=False)
    """Each answered question's latency by its id (for ratios against another run)."""

    @property
    def ok(self) -> int:
        """Questions that did not fail."""
        return self.n - self.errors

    def row(self, baseline: Summary | None = None) -> dict[str, Any]:
        """The :data:`SWEEP_FIELDS` of this run (token and request totals); the latency ratio
        against ``baseline`` when one is given."""
        ratio = self.latency_ratio(baseline) if baseline is not None else None
        quants = self.latency_quantiles
        return {
            "threshold": self.threshold,
            "strategy": self.strategy,
            "n": self.n,
            "errors": self.errors,
            "accuracy": self.accuracy,
            **_ends("accuracy", self.accuracy_ci),
            "latency_mean_s": self.latency_mean_s,
            "latency_median_s": self.latency_median_s,
            **_ends("latency_median", self.latency_median_ci, "_s"),
            "latency_p10_s": quants.get(0.1),
            "latency_p90_s": quants.get(0.9),
            "latency_vs_large_only": ratio[0] if ratio else None,
            **_ends("latency_vs_large_only", ratio[1] if ratio else None),
            "intervention_rate": self.intervention_rate,
            **_ends("intervention_rate", self.intervention_rate_ci),
            "intervention_rate_mean": self.intervention_rate_mean,
            "tokens_small": self.tokens.get("small", 0),
            "tokens_large": self.tokens.get("large", 0),
            "requests_small": self.requests.get("small", 0),
            "requests_large": self.requests.get("large", 0),
            "wasted_small_tokens": self.wasted_small_tokens,
        }

    def latency_ratio(self, baseline: Summary) -> tuple[float, stats.Interval] | None:
        """Mean latency over ``baseline``'s on the questions both answered, with its paired
        bootstrap 95 % interval."""
        return stats.paired_ratio(self.latencies, baseline.latencies)

    def table(self) -> str:
        """A text table of the run; the intervals are bootstrap 95 % over questions."""
        tau = "" if self.threshold is None else f", threshold {self.threshold}"
        quants = "   ".join(
            f"p{q * 100:.0f} {v:.2f} s" for q, v in self.latency_quantiles.items() if q != 0.5
        )
        rows = [
            f"Bench: {self.strategy}{tau}: {self.n} questions, {self.errors} failed",
            f"  accuracy             {self.accuracy:.1%} ({self.correct} of {self.n})"
            f"{_ci(self.accuracy_ci, '.1%')}",
            f"  latency              mean {_seconds(self.latency_mean_s)}   "
            f"median {_seconds(self.latency_median_s)}{_ci(self.latency_median_ci, '.2f', ' s')}"
            + (f"   {quants}" if quants else ""),
            f"  intervention rate    {_percent(self.intervention_rate)} of steps"
            f"{_ci(self.intervention_rate_ci, '.1%')}   "
            f"(per-question mean {_percent(self.intervention_rate_mean)})",
            f"  {'':<20} {'small':>10} {'large':>10}",
        ]
        for name, totals, means in (
            ("tokens", self.tokens, self.tokens_per_question),
            ("requests", self.requests, self.requests_per_question),
        ):
            small, large = totals.get("small", 0), totals.get("large", 0)
            rows.append(f"  {name + ' (total)':<20} {small:>10} {large:>10}")
            rows.append(
                f"  {name + ' / question':<20} {means.get('small', 0.0):>10.1f} "
                f"{means.get('large', 0.0):>10.1f}"
            )
        rows.append(f"  wasted small tokens  {self.wasted_small_tokens}")
        return "\n".join(rows)


def _ends(name: str, interval: stats.Interval | None, unit: str = "") -> dict[str, float | None]:
    lo, hi = interval if interval is not None else (None, None)
    return {f"{name}_lo{unit}": lo, f"{name}_hi{unit}": hi}


def _ci(interval: stats.Interval | None, spec: str, unit: str = "") -> str:
    """`` [lo–hi]`` for a table, empty without an interval."""
    if interval is None:
        return ""
    return f" [{format(interval[0], spec)}–{format(interval[1], spec)}{unit}]"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def summarize(
    lines: Sequence[Mapping[str, Any]], strategy: str | None = None, threshold: Any = None
) -> Summary:
    """The :class:`Summary` of a run's results lines. ``strategy`` and ``threshold`` default to
    the lines' own (the first line's)."""
    ok = [line for line in lines if not line.get("error")]
    first = lines[0] if lines else {}
    by_id = {
        str(line.get("id")): float(x)
        for line in ok
        if (x := as_float(line.get("latency_s"))) is not None
    }
    latencies = list(by_id.values())
    routed = [line for line in ok if isinstance(line.get("n_steps"), int)]
    steps = sum(int(line["n_steps"]) for line in routed)
    large = sum(int(line.get("n_large_steps") or 0) for line in routed)
    rates = [
        float(r) for line in routed if (r := as_float(line.get("intervention_rate"))) is not None
    ]
    totals: dict[str, dict[str, int]] = {"tokens": {}, "requests": {}}
    for key, total in totals.items():
        for role in _ROLES:
            total[role] = sum(int((line.get(key) or {}).get(role, 0)) for line in ok)
    n_ok = len(ok)
    correct = sum(bool(line.get("correct")) for line in lines)
    return Summary(
        strategy=strategy or str(first.get("strategy", "")),
        threshold=threshold if threshold is not None else first.get("threshold"),
        n=len(lines),
        errors=len(lines) - n_ok,
        correct=correct,
        accuracy=correct / len(lines) if lines else 0.0,
        latency_mean_s=statistics.fmean(latencies) if latencies else None,
        latency_median_s=statistics.median(latencies) if latencies else None,
        intervention_rate=large / steps if steps else (0.0 if routed else None),
        intervention_rate_mean=statistics.fmean(rates) if rates else None,
        tokens=totals["tokens"],
        requests=totals["requests"],
        tokens_per_question={r: v / n_ok if n_ok else 0.0 for r, v in totals["tokens"].items()},
        requests_per_question={r: v / n_ok if n_ok else 0.0 for r, v in totals["requests"].items()},
        wasted_small_tokens=sum(int(line.get("wasted_small_tokens") or 0) for line in ok),
        accuracy_ci=stats.mean_ci([float(bool(line.get("correct"))) for line in lines]),
        intervention_rate_ci=stats.ratio_of_sums_ci(
            [float(line.get("n_large_steps") or 0) for line in routed],
            [float(line["n_steps"]) for line in routed],
        ),
        latency_mean_ci=stats.mean_ci(latencies),
        latency_median_ci=stats.median_ci(latencies),
        latency_quantiles=stats.quantiles(latencies),
        latencies=by_id,
    )


def large_only(summaries: Sequence[Summary]) -> Summary | None:
    """The large-only baseline among ``summaries``, if the sweep ran it."""
    return next((s for s in summaries if s.strategy == "large_only"), None)


def comparison_table(summaries: Sequence[Summary]) -> str:
    """One text row per run: strategy, threshold, accuracy, latency, intervention, tokens and
    requests per question."""
    baseline = large_only(summaries)
    head = (
        f"{'strategy':<12} {'threshold':>9} {'n':>4} {'err':>4} {'accuracy':>8} "
        f"{'95% CI':>13} {'lat mean':>9} {'lat med':>9} {'vs large':>8} {'95% CI':>11} "
        f"{'interv':>7} {'95% CI':>13} {'tok/q S':>8} {'tok/q L':>8} "
        f"{'req/q S':>7} {'req/q L':>7}"
    )
    rows = [head]
    for s in summaries:
        tau = "-" if s.threshold is None else str(s.threshold)
        ratio = s.latency_ratio(baseline) if baseline is not None else None
        rows.append(
            f"{s.strategy:<12} {tau:>9} {s.n:>4} {s.errors:>4} {s.accuracy:>8.1%} "
            f"{_ci(s.accuracy_ci, '.1%').strip():>13} "
            f"{_seconds(s.latency_mean_s):>9} {_seconds(s.latency_median_s):>9} "
            f"{f'{ratio[0]:.3f}' if ratio else '-':>8} "
            f"{_ci(ratio[1] if ratio else None, '.3f').strip():>11} "
            f"{_percent(s.intervention_rate):>7} "
            f"{_ci(s.intervention_rate_ci, '.1%').strip():>13} "
            f"{s.tokens_per_question.get('small', 0):>8.1f} "
            f"{s.tokens_per_question.get('large', 0):>8.1f} "
            f"{s.requests_per_question.get('small', 0):>7.2f} "
            f"{s.requests_per_question.get('large', 0):>7.2f}"
        )
    return "\n".join(rows)


# -- sweep ----------------------------------------------------------------------------------------


def run_name(strategy: str, threshold: Any) -> str:
    """The results file of a run: ``<strategy>_<threshold>.jsonl`` (``glimpse_0.9.jsonl``,
    ``glimpse_auto.jsonl``), ``large_only.jsonl`` / ``small_only.jsonl`` for the baselines."""
    if strategy in BASELINES or threshold is None:
        return f"{strategy}.jsonl"
    value = as_float(threshold)
    tau = f"{value:g}" if value is not None else str(threshold)
    return f"{strategy}_{tau}.jsonl"


def write_sweep_csv(summaries: Sequence[Summary], path: str | os.PathLike[str]) -> Path:
    """``sweep.csv``: the :data:`SWEEP_FIELDS` of every run, one row each."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(SWEEP_FIELDS))
        writer.writeheader()
        baseline = large_only(summaries)
        for summary in summaries:
            row = summary.row(baseline)
            writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return target


def read_sweep_csv(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """The rows of a ``sweep.csv`` as strings."""
    with Path(path).open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


async def asweep(
    items: Sequence[BenchItem],
    make_model: Callable[[ThresholdSpec], BaseChatModel],
    thresholds: Sequence[ThresholdSpec],
    out_dir: str | os.PathLike[str],
    *,
    baselines: Mapping[str, ModelSource] | None = None,
    label: str | None = None,
    concurrency: int = 4,
    resume: bool = False,
    system: str | None = None,
    config: Mapping[str, Any] | None = None,
    progress: TextIO | None = None,
    report: TextIO | None = None,
) -> list[Summary]:
    """One :func:`arun` per threshold (``make_model(threshold)`` builds its model), then one per
    baseline (``{"large_only": model, "small_only": model}``), each into
    ``<out_dir>/<run_name>``; ``sweep.csv`` is rewritten after every run. A one-line summary of
    each run goes to ``report``. Returns the summaries in run order; draw them with
    :func:`~langchain_glimprouter.cli.bench.plots.write_sweep_plots`."""
    if not thresholds and not baselines:
        raise InvalidArgumentError("a sweep needs at least one threshold or baseline")
    folder = Path(out_dir)
    plan: list[tuple[str | None, ModelSource, ThresholdSpec | None]] = [
        (label, partial(make_model, tau), tau) for tau in thresholds
    ]
    plan += [(name, model, None) for name, model in (baselines or {}).items()]
    summaries: list[Summary] = []
    for name, source, tau in plan:
        chat = _build(source)
        strategy = name or _default_label(chat)
        path = folder / run_name(strategy, tau)
        lines = await arun(
            items, chat, path, concurrency=concurrency, resume=resume, system=system,
            label=strategy, config=config, progress=progress,
        )  # fmt: skip
        summary = summarize(lines, strategy, jsonable(tau))
        if tau is None:  # a baseline: its threshold means nothing
            summary = replace(summary, threshold=None)
        summaries.append(summary)
        write_sweep_csv(summaries, folder / "sweep.csv")
        if report is not None:
            print(f"{path}: {_one_line(summary)}", file=report, flush=True)
    return summaries


def _one_line(s: Summary) -> str:
    return (
        f"accuracy {s.accuracy:.1%}, latency mean {_seconds(s.latency_mean_s)}, "
        f"intervention {_percent(s.intervention_rate)}, {s.errors} failed"
    )
