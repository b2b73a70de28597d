"""``glimprouter demo``: two local vLLM CPU servers on the tiny model, a threshold calibrated on
a warm-up question, and one routed question, shown as ``ask`` shows it."""

from __future__ import annotations

import argparse
from typing import Any, TextIO

from langchain_glimprouter.backend import Backend
from langchain_glimprouter.calibration import (
    calibrate,
)
from langchain_glimprouter.cli import ask
from langchain_glimprouter.cli.flags import (
    add_router_flags,
    messages,
)

DEMO_SYSTEM = (
    "You are a careful math tutor. Reason step by step and put a blank line between steps."
)
DEMO_QUESTIONS = [
    "Tom has 3 boxes with 12 apples in each box. He gives away 7 apples. How many are left?",
    "A train travels 60 km per hour for 2.5 hours. How far does it go?",
]
DEMO_NOTICE = (
    "NOTE: this is a wiring demo. Both servers run SmolLM2-135M-Instruct, a 135M model that is "
    "not a reasoning model: the tokens, logprobs and routing decisions are real, the reasoning "
    "quality is not what GlimpRouter is for."
)


def add_parser(commands: Any) -> None:
    demo = commands.add_parser("demo", help="local vLLM servers on the tiny model, one question")
    demo.add_argument("--question", default=DEMO_QUESTIONS[0])
    demo.add_argument(
        "--quantile", type=float, default=0.7, help="threshold quantile when none is given"
    )
    add_router_flags(
        demo,
        defaults={"threshold": None, "max_reasoning_tokens": 256, "max_tokens": 96},
        notes={"threshold": "default: calibrated on a warm-up question, see --quantile"},
    )
    demo.set_defaults(run=run)


def run(args: argparse.Namespace, out: TextIO) -> int:
    from langchain_glimprouter.cli.servers import start_pair

    print(DEMO_NOTICE, file=out)
    print("Starting two vLLM CPU servers on SmolLM2-135M (about 2 minutes)...", file=out)
    servers = start_pair()
    try:
        small, large = (Backend(base_url=s.base_url, model=s.served_name) for s in servers)
        print(f"  small: {small.base_url}   large: {large.base_url}\n", file=out)
        router = ask.router(args, small, large)
        if args.threshold is None:
            warm_up = [messages(q, DEMO_SYSTEM) for q in DEMO_QUESTIONS[1:]]
            found = calibrate(router, warm_up, target_rate=1.0 - args.quantile)
            print(
                f"Threshold: the {args.quantile:.0%} quantile of SmolLM2's own first-token "
                f"entropies on a warm-up question ({found.n_steps} steps, median "
                f"{found.quantiles[0.5]:.2f} nats) = {found.threshold:.3f} nats.\n"
                f"  SmolLM2 is no reasoning model: at the paper's 0.9 nats, "
                f"{found.rate_at(0.9):.0%} of these steps would go to the large model.\n",
                file=out,
            )
            router = router.model_copy(update={"threshold": found.threshold})
        print(f"Question: {args.question}\n", file=out)
        ask.print_routed(router, args.question, DEMO_SYSTEM, out)
    finally:
        for server in servers:
            server.stop()
    return 0
