"""``glimprouter calibrate``: the threshold that sends a wanted share of step starts to the large
model, found on a sample of questions routed with every step small (see
:mod:`~langchain_glimprouter.calibration`)."""

from __future__ import annotations

import argparse
import json
from typing import Any, TextIO

from langchain_glimprouter.backend import Backend
from langchain_glimprouter.calibration import (
    CALIBRATION_QUESTIONS,
    Calibration,
    calibrate,
    load_questions,
)
from langchain_glimprouter.cli.flags import (
    add_router_flags,
    add_server_flags,
    backends,
    build_router,
    messages,
    router_values,
)


def calibration_report(found: Calibration, small: Backend, large: Backend) -> str:
    """What ``glimprouter calibrate`` prints: the threshold, the sample, the router to use."""
    tau = found.rounded_threshold()
    above = round(found.realised_rate * found.n_steps)
    quantiles = "  ".join(f"{q:.0%} {v:.3f}" for q, v in found.quantiles.items())
    return (
        f"Sample: {found.n_questions} questions, {found.n_steps} step starts, every step on the "
        "small model (threshold=inf).\n"
        f"H_init quantiles (nats): {quantiles}\n\n"
        f"Threshold for a large-step rate of {found.target_rate * 100:g}%: {tau} nats\n"
        f"  realised on the sample: {found.realised_rate:.1%} ({above} of {found.n_steps} step "
        "starts above it)\n"
        + (
            f"  bootstrap 95% interval over the questions: {found.threshold_ci[0]:.3f}–"
            f"{found.threshold_ci[1]:.3f} nats (wide: calibrate on more questions)\n\n"
            if found.threshold_ci
            else "\n"
        )
        + "Use it with:\n\n"
        "from langchain_glimprouter import Backend, GlimpRouterChatModel\n\n"
        "router = GlimpRouterChatModel(\n"
        f"    small=Backend(base_url={json.dumps(small.base_url)}, "
        f"model={json.dumps(small.model)}),\n"
        f"    large=Backend(base_url={json.dumps(large.base_url)}, "
        f"model={json.dumps(large.model)}),\n"
        f"    threshold={tau},\n)"
    )


def run(args: argparse.Namespace, out: TextIO) -> int:
    small, large = backends(args)
    texts = load_questions(args.questions) if args.questions else list(CALIBRATION_QUESTIONS)
    questions = [messages(q, args.system) for q in texts]
    found = calibrate(
        build_router(small, large, router_values(args)),
        questions,
        args.target_rate,
        max_concurrency=args.concurrency,
    )
    if args.json:
        print(json.dumps(found.to_dict()), file=out)
    else:
        print(calibration_report(found, small, large), file=out)
    return 0


def add_parser(commands: Any) -> None:
    cal = commands.add_parser(
        "calibrate",
        help="the threshold that sends a wanted share of step starts to the large model",
        description="Route a sample of questions with every step on the small model "
        "(threshold=inf), collect every step's H_init, and print the threshold above which a "
        "share --target-rate of them lies: the smallest observed H_init with at most that share "
        "of the values above it.",
    )
    cal.add_argument(
        "--target-rate",
        type=float,
        required=True,
        help="wanted share of step starts on the large model, in (0, 1), e.g. 0.25",
    )
    cal.add_argument(
        "--questions",
        help='a file of questions: one per line, or JSON lines with a "question" key '
        f"(default: {len(CALIBRATION_QUESTIONS)} built-in arithmetic word questions)",
    )
    cal.add_argument(
        "--concurrency", type=int, default=4, help="questions routed at once (default 4)"
    )
    cal.add_argument("--json", action="store_true", help="print one JSON object")
    add_server_flags(cal)
    # calibrate routes every step small (threshold=inf) and cuts the answer to one token;
    # --target-rate is its own.
    add_router_flags(cal, without=("threshold", "max_tokens", "strategy", "target_rate"))
    cal.set_defaults(run=run)
