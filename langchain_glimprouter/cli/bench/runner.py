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
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, Literal, TextIO

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage

from langchain_glimprouter.backend import identity
from langchain_glimprouter.chat_models import GlimpRouterChatModel
from langchain_glimprouter.cli.bench.grading import BenchItem, grade
from langchain_glimprouter.cli.bench.progress import Progress
from langchain_glimprouter.cli.bench.summary import (
    ROLES,
    Summary,
    as_float,
    percent,
    seconds,
    summarize,
    write_sweep_csv,
)
from langchain_glimprouter.core.strategies import SPECS
from langchain_glimprouter.errors import GlimpRouterError, InvalidArgumentError
from langchain_glimprouter.records import RECORD_KEY

ModelSource = BaseChatModel | Callable[[], BaseChatModel]
"""A chat model, or a function that builds one (called once per run)."""
ThresholdSpec = float | Literal["auto"]

INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
"""Appended to every question (the prompt the R1-Distill models are evaluated with)."""
CHOICE_INSTRUCTION = (
    "Please reason step by step, and put the letter of your final choice within \\boxed{}."
)
"""Appended to a multiple-choice question, after its lettered options."""
BASELINES: tuple[str, ...] = tuple(name for name, spec in SPECS.items() if spec.decider == "none")
"""The strategies in which one model writes everything (``--baselines``)."""
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


def model_config(model: BaseChatModel) -> dict[str, Any]:
    """The settings of ``model`` that a results file records: for a router its models, URLs,
    what else identifies each backend's answers (templates, extra_body, tool parser; see
    :data:`~langchain_glimprouter.backend.IDENTIFYING`), strategy, threshold, budgets and
    sampling; for another chat model its class name."""
    if not isinstance(model, GlimpRouterChatModel):
        return {"chat_model": type(model).__name__}
    config: dict[str, Any] = {
        "small_model": model.small.model,
        "large_model": model.large.model,
        "small_url": model.small.base_url,
        "large_url": model.large.base_url,
    }
    for role in ("small", "large"):  # the rest of what identifies each backend's answers
        for name, value in identity(getattr(model, role)).items():
            if name not in ("base_url", "model"):
                config[f"{role}_{name}"] = value
    config.update(model.router_settings)
    return jsonable(config)  # type: ignore[no-any-return]


def _config_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    # A setting the file does not record was added to the router since: not a difference.
    keys = sorted(set(old) - _NOT_COMPARED)
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
    "escalation_requests", "escalation_s"}``). A chat model without a routing record leaves the
    routing fields None.
    """
    response = _text(message)
    verdict = grade(response, item)
    record: Mapping[str, Any] = message.response_metadata.get(RECORD_KEY) or {}
    steps = [
        {
            "model": step.get("model"),
            "h_init": step.get("h_init"),
            "score": step.get("score"),
            "tokens": step.get("tokens"),
            "latency_s": step.get("latency_s"),
            "skipped": step.get("skipped"),
            "decision": step.get("decision"),
            "escalation_requests": step.get("escalation_requests"),
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
    return {role: value.get(role, 0) for role in ROLES}


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


# -- sweep ----------------------------------------------------------------------------------------


def run_name(strategy: str, threshold: Any) -> str:
    """The results file of a run: ``<strategy>_<threshold>.jsonl`` (``glimpse_0.9.jsonl``,
    ``glimpse_auto.jsonl``), ``large_only.jsonl`` / ``small_only.jsonl`` for the baselines."""
    if strategy in BASELINES or threshold is None:
        return f"{strategy}.jsonl"
    value = as_float(threshold)
    tau = f"{value:g}" if value is not None else str(threshold)
    return f"{strategy}_{tau}.jsonl"


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
        f"accuracy {s.accuracy:.1%}, latency mean {seconds(s.latency_mean_s)}, "
        f"intervention {percent(s.intervention_rate)}, {s.errors} failed"
    )
