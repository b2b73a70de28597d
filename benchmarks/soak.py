"""Soak test: many questions at once while both servers inject random faults.

Each question is one ``ainvoke`` under a semaphore of ``--concurrency``, which is what
``abatch(..., config={"max_concurrency": N})`` runs, each with a deadline of its own so that a
hang is counted rather than waited for. The servers are plain ``http://``, so the calls go
through the router's asyncio network backend (``http/network.py``), and ``asyncio.run`` ends
the run, so the loop's shutdown is what closes the router's connections.

The faults (``Faults.chaos``: the probability that a completions request gets one): HTTP 500,
503 or 429; a stream cut after 0-5 tokens (twice as likely as the others); an event that is not
JSON, or vLLM's error event (code 500, then ``[DONE]``), after 0-5 tokens. The router recovers
from each by a retry or by resuming the stream.

Counted, zeros included, in ``benchmarks/results/soak.json`` (with the command, commit, date and
seed): questions answered; failed, by type, split into failures no retry can fix and recoverable
ones (which should end no question); hangs; untyped errors; duplicated or lost steps (each step
of an answer must be exactly the scripted text of the model that wrote it, and no step may be
missing); requests left running on the servers, and connections left open once the loop closed.

Run: .venv/bin/python -m benchmarks.soak [--questions 1000] [--concurrency 32] [--chaos 0.05]
Exit status 0 only if every counter that must be zero is.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks._common import results_path, run_header, write_results
from langchain_glimprouter import (
    Backend,
    ContextLengthExceededError,
    GlimpRouterChatModel,
    GlimpRouterError,
    IncompleteAnswerError,
    InvalidArgumentError,
    MissingLogprobsError,
    PromptRenderingError,
)
from scripted_server import Faults, Script, ScriptedServer

STEPS = 8
SMALL = [f"small step {i} " + "word " * 6 for i in range(STEPS)]
LARGE = [f"large step {i} " + "word " * 6 for i in range(STEPS)]
H_INIT = [0.3, 1.5] * (STEPS // 2) + [0.0]

UNRECOVERABLE = (
    ContextLengthExceededError,
    InvalidArgumentError,
    MissingLogprobsError,
    PromptRenderingError,
    IncompleteAnswerError,
)
"""Failures no retry or resumption can fix (the request itself is at fault). None of the
injected faults is one: any other failure is a recoverable fault that ended a question."""
MUST_BE_ZERO = (
    "hangs",
    "untyped_errors",
    "duplicated_or_lost_steps",
    "requests_left_running",
    "connections_left_open",
)


async def ask(model: GlimpRouterChatModel, question: str, deadline: float) -> Any:
    try:
        return await asyncio.wait_for(model.ainvoke(question), deadline)
    except TimeoutError:
        return "hang"
    except GlimpRouterError as exc:
        return exc
    except Exception as exc:  # an untyped failure is a finding, not a crash of the soak
        return ("untyped", repr(exc))


def step_errors(message: Any) -> int:
    """Steps of an answer that are not exactly the scripted text of the model that wrote them,
    or that are missing (or one too many)."""
    steps = message.response_metadata["glimprouter"]["steps"]
    wrong = sum(
        s["index"] >= STEPS or s["text"] != (SMALL if s["model"] == "small" else LARGE)[s["index"]]
        for s in steps
    )
    return wrong + abs(len(steps) - STEPS)


def tally(results: Sequence[Any]) -> dict[str, Any]:
    """The counts of a run's results (each a message, a typed error, ``"hang"`` or
    ``("untyped", repr)``), every counter present even when zero."""
    unrecoverable: Counter[str] = Counter()
    recoverable: Counter[str] = Counter()
    counts: Counter[str] = Counter(dict.fromkeys(("answered", "hangs", "untyped_errors"), 0))
    counts.update({"duplicated_or_lost_steps": 0, "retries": 0, "resumed_streams": 0})
    for result in results:
        if isinstance(result, str):
            counts["hangs"] += 1
        elif isinstance(result, tuple):
            counts["untyped_errors"] += 1
        elif isinstance(result, GlimpRouterError):
            failed = unrecoverable if isinstance(result, UNRECOVERABLE) else recoverable
            failed[type(result).__name__] += 1
        else:
            counts["answered"] += 1
            counts["duplicated_or_lost_steps"] += step_errors(result)
            record = result.response_metadata["glimprouter"]
            counts["retries"] += record["retries"]
            counts["resumed_streams"] += record["resumed_streams"]
    return {
        "answered": counts["answered"],
        "failed_unrecoverable": dict(sorted(unrecoverable.items())),
        "failed_recoverable": dict(sorted(recoverable.items())),
        "hangs": counts["hangs"],
        "untyped_errors": counts["untyped_errors"],
        "duplicated_or_lost_steps": counts["duplicated_or_lost_steps"],
        "recovered": {"retries": counts["retries"], "resumed_streams": counts["resumed_streams"]},
    }


def settled(value: Callable[[], int], timeout: float) -> int:
    """``value()`` once it is 0, or after ``timeout`` seconds (a server sees a close late)."""
    deadline = time.monotonic() + timeout
    while (now := value()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return now


async def ask_all(model: GlimpRouterChatModel, args: argparse.Namespace) -> list[Any]:
    semaphore = asyncio.Semaphore(args.concurrency)

    async def one(i: int) -> Any:
        async with semaphore:
            return await ask(model, f"Question {i}?", args.deadline)

    return await asyncio.gather(*(one(i) for i in range(args.questions)))


def soak(args: argparse.Namespace) -> dict[str, Any]:
    small = ScriptedServer(Script(SMALL, h_init=H_INIT), model="s", decode_s=args.decode_s)
    large = ScriptedServer(Script(LARGE), model="l", decode_s=args.decode_s)
    servers = (small.start(), large.start())
    try:
        for i, server in enumerate(servers):
            server.faults = Faults(chaos=args.chaos, rng=random.Random(args.seed + i))
        model = GlimpRouterChatModel(
            small=Backend(base_url=small.base_url, model="s"),
            large=Backend(base_url=large.base_url, model="l"),
            threshold=1.0,
            max_retries=3,
            timeout=5,
        )
        started = time.monotonic()
        results = asyncio.run(ask_all(model, args))
        wall = time.monotonic() - started
        for server in servers:
            server.wait_idle(10)
        running = sum(server.active for server in servers)
        left_open = settled(lambda: sum(server.connections for server in servers), 5.0)
        drawn: Counter[str] = Counter()
        for server in servers:
            drawn.update(server.faults.chaos_drawn)
    finally:
        for server in servers:
            server.stop()
    counts = tally(results)
    return {
        **run_header(),
        "seed": args.seed,
        "questions": args.questions,
        "concurrency": args.concurrency,
        "chaos": args.chaos,
        "deadline_s": args.deadline,
        "path": "ainvoke per question under a semaphore (as abatch runs them), on the asyncio "
        "network backend (http://)",
        "faults_drawn": dict(sorted(drawn.items())),
        "requests": sum(len(server.requests) for server in servers),
        "wall_s": round(wall, 1),
        "counts": {
            **{k: v for k, v in counts.items() if k != "recovered"},
            "requests_left_running": running,
            "connections_left_open": left_open,
        },
        "recovered": counts["recovered"],
    }


def failures(report: dict[str, Any]) -> list[str]:
    """The counters that should be zero and are not."""
    counts = report["counts"]
    bad = [f"{key}={counts[key]}" for key in MUST_BE_ZERO if counts[key]]
    return bad + [f"failed_recoverable {counts['failed_recoverable']}"] * bool(
        counts["failed_recoverable"]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--chaos", type=float, default=0.05, help="fault probability per request")
    parser.add_argument("--decode-s", type=float, default=0.001, help="seconds per token")
    parser.add_argument("--deadline", type=float, default=60.0, help="seconds before a hang")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=results_path("soak"))
    args = parser.parse_args(argv)
    report = soak(args)
    print(json.dumps(report, indent=1))
    print(f"wrote {write_results(args.out, report)}")
    bad = failures(report)
    if bad:
        print("not zero: " + ", ".join(bad))
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
