"""Soak test: many questions at once through abatch while both servers inject random faults.

Counts answers, typed errors, untyped errors, hangs, and steps that were duplicated or lost
(every step of an answer must be exactly the scripted text of the model that wrote it), and
checks that no request is left running on either server at the end.

Run: .venv/bin/python -m benchmarks.soak [--questions 500] [--concurrency 32] [--chaos 0.05]
Exit status 0 only if there were no hangs, no untyped errors, no bad chains and no leaks.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from collections import Counter
from typing import Any

from langchain_glimprouter import Backend, GlimpRouterChatModel, GlimpRouterError
from scripted_server import Faults, Script, ScriptedServer

STEPS = 8
SMALL = [f"small step {i} " + "word " * 6 for i in range(STEPS)]
LARGE = [f"large step {i} " + "word " * 6 for i in range(STEPS)]
H_INIT = [0.3, 1.5] * (STEPS // 2) + [0.0]


async def ask(model: GlimpRouterChatModel, question: str, deadline: float) -> Any:
    try:
        return await asyncio.wait_for(model.ainvoke(question), deadline)
    except TimeoutError:
        return "hang"
    except GlimpRouterError as exc:
        return exc
    except Exception as exc:  # an untyped failure is a finding, not a crash of the soak
        return ("untyped", repr(exc))


def chain_ok(message: Any) -> bool:
    steps = message.response_metadata["glimprouter"]["steps"]
    expected = [(SMALL if s["model"] == "small" else LARGE)[s["index"]] for s in steps]
    return [s["text"] for s in steps] == expected and len(steps) == STEPS


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    small = ScriptedServer(Script(SMALL, h_init=H_INIT), model="s", decode_s=args.decode_s)
    large = ScriptedServer(Script(LARGE), model="l", decode_s=args.decode_s)
    for i, server in enumerate((small.start(), large.start())):
        server.faults = Faults(chaos=args.chaos, rng=random.Random(args.seed + i))
    model = GlimpRouterChatModel(
        small=Backend(base_url=small.base_url, model="s"),
        large=Backend(base_url=large.base_url, model="l"),
        threshold=1.0,
        max_retries=3,
        timeout=5,
    )
    semaphore = asyncio.Semaphore(args.concurrency)

    async def one(i: int) -> Any:
        async with semaphore:
            return await ask(model, f"Question {i}?", args.deadline)

    started = time.monotonic()
    results = await asyncio.gather(*(one(i) for i in range(args.questions)))
    wall = time.monotonic() - started
    tally: Counter[str] = Counter()
    for result in results:
        if result == "hang":
            tally["hangs"] += 1
        elif isinstance(result, tuple):
            tally["untyped_errors"] += 1
        elif isinstance(result, GlimpRouterError):
            tally[f"typed:{type(result).__name__}"] += 1
        else:
            tally["answers"] += 1
            tally["bad_chains"] += 0 if chain_ok(result) else 1
            record = result.response_metadata["glimprouter"]
            tally["retries"] += record["retries"]
            tally["resumed_streams"] += record["resumed_streams"]
    leaks = int(not small.wait_idle(10)) + int(not large.wait_idle(10))
    small.stop()
    large.stop()
    return {
        "questions": args.questions,
        "concurrency": args.concurrency,
        "chaos": args.chaos,
        "requests": len(small.requests) + len(large.requests),
        "wall_s": round(wall, 2),
        "servers_left_running": leaks,
        **dict(sorted(tally.items())),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--chaos", type=float, default=0.05, help="fault probability per request")
    parser.add_argument("--decode-s", type=float, default=0.001, help="seconds per token")
    parser.add_argument("--deadline", type=float, default=60.0, help="seconds before a hang")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    report = asyncio.run(soak(args))
    print(json.dumps(report, indent=2))
    bad = report.get("hangs", 0) + report.get("untyped_errors", 0) + report.get("bad_chains", 0)
    return 1 if bad or report["servers_left_running"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
