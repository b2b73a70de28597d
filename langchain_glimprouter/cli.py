"""The ``glimprouter`` command: ``demo`` (local servers on the tiny model) and ``ask``.

Both print the same view: one line per routed step as it finishes, the answer as it streams,
and a summary of the routing record. They use the public API like any user.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from typing import Any, TextIO

from langchain_core.messages import HumanMessage, SystemMessage

from langchain_glimprouter.backends import Backend
from langchain_glimprouter.chat_models import GlimpRouterChatModel
from langchain_glimprouter.errors import GlimpRouterError

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


def _messages(question: str, system: str | None) -> list[Any]:
    messages: list[Any] = [SystemMessage(system)] if system else []
    return [*messages, HumanMessage(question)]


def print_routed(
    router: GlimpRouterChatModel, question: str, system: str | None, out: TextIO
) -> dict[str, Any]:
    """Stream one routed answer to ``out``; return the routing record."""
    record: dict[str, Any] = {}
    answering = False
    for chunk in router.stream(_messages(question, system)):
        for step in chunk.response_metadata.get("glimprouter_steps", []):
            h = "   -  " if step["h_init"] is None else f"{step['h_init']:6.3f}"
            text = " ".join(step["text"].split())
            text = text if len(text) <= 60 else text[:57] + "..."
            print(
                f"  step {step['index']:>2}  {step['model']:<5}  H_init={h}  "
                f"first={step['first_token']!r:<12} {step['tokens']:>4} tok  {text}",
                file=out,
            )
        if chunk.content:
            if not answering:
                print("\nAnswer (large model): ", end="", file=out)
                answering = True
            print(chunk.content, end="", file=out, flush=True)
        if "glimprouter" in chunk.response_metadata:
            record = chunk.response_metadata["glimprouter"]
    print("\n", file=out)
    print(
        f"Summary: {record['n_steps']} steps, {record['n_large_steps']} by the large model "
        f"(intervention rate {record['intervention_rate']:.0%}), chain ended by "
        f"{record['chain_end']}.\n"
        f"  tokens   small={record['tokens']['small']:<6} large={record['tokens']['large']:<6} "
        f"(wasted small glimpse tokens: {record['wasted_small_tokens']})\n"
        f"  requests small={record['requests']['small']:<6} large={record['requests']['large']}\n"
        f"  latency  {record['latency_s']:.2f} s  (threshold {record['threshold']:.3f} nats, "
        f"{record['estimator']}, probe={record['probe']})",
        file=out,
    )
    return record


def _router(args: argparse.Namespace, small: Backend, large: Backend) -> GlimpRouterChatModel:
    return GlimpRouterChatModel(
        small=small,
        large=large,
        threshold=math.inf if args.threshold is None else args.threshold,
        probe=args.probe,
        entropy_estimator=args.estimator,
        max_reasoning_tokens=args.max_reasoning_tokens,
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        seed=args.seed,
        timeout=args.timeout,
    )


def observe_h_init(router: GlimpRouterChatModel, questions: list[str]) -> list[float]:
    """H_init of every step of ``questions`` routed with every step on the small model."""
    values: list[float] = []
    probe = router.model_copy(update={"threshold": math.inf})
    for question in questions:
        message = probe.invoke(_messages(question, DEMO_SYSTEM))
        steps = message.response_metadata["glimprouter"]["steps"]
        values.extend(s["h_init"] for s in steps if s["h_init"] is not None)
    return values


def quantile(values: list[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (linear interpolation)."""
    if len(values) < 2:
        return values[0] if values else 1.0
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


def _demo(args: argparse.Namespace, out: TextIO) -> int:
    from langchain_glimprouter.servers import start_pair

    print(DEMO_NOTICE, file=out)
    print("Starting two vLLM CPU servers on SmolLM2-135M (about 2 minutes)...", file=out)
    servers = start_pair()
    try:
        small, large = (Backend(base_url=s.base_url, model=s.served_name) for s in servers)
        print(f"  small: {small.base_url}   large: {large.base_url}\n", file=out)
        router = _router(args, small, large)
        if args.threshold is None:
            values = observe_h_init(router, DEMO_QUESTIONS[1:])
            tau = quantile(values, args.quantile)
            above = sum(v > 0.9 for v in values) / max(1, len(values))
            print(
                f"Threshold: the {args.quantile:.0%} quantile of SmolLM2's own first-token "
                f"entropies on a warm-up question ({len(values)} steps, median "
                f"{statistics.median(values) if values else 0:.2f} nats) = {tau:.3f} nats.\n"
                f"  SmolLM2 is no reasoning model: at the paper's 0.9 nats, {above:.0%} of "
                "these steps would go to the large model.\n",
                file=out,
            )
            router = router.model_copy(update={"threshold": tau})
        print(f"Question: {args.question}\n", file=out)
        print_routed(router, args.question, DEMO_SYSTEM, out)
    finally:
        for server in servers:
            server.stop()
    return 0


def _ask(args: argparse.Namespace, out: TextIO) -> int:
    small = Backend(base_url=args.small_url, model=args.small_model)
    large = Backend(base_url=args.large_url, model=args.large_model)
    print_routed(_router(args, small, large), args.question, args.system, out)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="glimprouter", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="local vLLM servers on the tiny model, one question")
    demo.add_argument("--question", default=DEMO_QUESTIONS[0])
    demo.add_argument(
        "--quantile", type=float, default=0.7, help="threshold quantile when none is given"
    )
    ask = commands.add_parser("ask", help="route one question through two running servers")
    ask.add_argument("question")
    ask.add_argument("--small-url", required=True, help="e.g. http://localhost:8001/v1")
    ask.add_argument("--small-model", required=True)
    ask.add_argument("--large-url", required=True)
    ask.add_argument("--large-model", required=True)
    ask.add_argument("--system", default=None, help="optional system message")
    for sub, threshold in ((demo, None), (ask, 0.9)):
        sub.add_argument("--threshold", type=float, default=threshold, help="tau in nats")
        sub.add_argument("--probe", choices=["stream", "separate"], default="stream")
        sub.add_argument(
            "--estimator", choices=["topk_renormalized", "topk_tail"], default="topk_renormalized"
        )
        sub.add_argument("--max-reasoning-tokens", type=int, default=256 if sub is demo else 8192)
        sub.add_argument("--max-tokens", type=int, default=96 if sub is demo else 2048)
        sub.add_argument("--temperature", type=float, default=0.6)
        sub.add_argument("--seed", type=int, default=None)
        sub.add_argument("--timeout", type=float, default=None, help="seconds per read")
    return parser


def main(argv: list[str] | None = None, out: TextIO = sys.stdout) -> int:
    """Entry point of the ``glimprouter`` console script."""
    args = _parser().parse_args(argv)
    try:
        return _demo(args, out) if args.command == "demo" else _ask(args, out)
    except GlimpRouterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
