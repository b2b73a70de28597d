"""``glimprouter ask``: route one question through two running servers, and print each step as
it finishes, the answer as it streams, and a summary of the routing record (:func:`print_routed`,
which ``demo`` shows too). It uses the public API like any user."""

from __future__ import annotations

import argparse
import math
from typing import Any, TextIO

from langchain_glimprouter.backend import Backend
from langchain_glimprouter.chat_models import GlimpRouterChatModel
from langchain_glimprouter.cli.flags import (
    add_router_flags,
    add_server_flags,
    backends,
    build_router,
    messages,
    router_values,
)
from langchain_glimprouter.records import RECORD_KEY, STEPS_KEY
from langchain_glimprouter.telemetry import install_from_env


def print_routed(
    router: GlimpRouterChatModel, question: str, system: str | None, out: TextIO
) -> dict[str, Any]:
    """Stream one routed answer to ``out``; return the routing record."""
    record: dict[str, Any] = {}
    answering = False
    for chunk in router.stream(messages(question, system)):
        for step in chunk.response_metadata.get(STEPS_KEY, []):
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
        if RECORD_KEY in chunk.response_metadata:
            record = chunk.response_metadata[RECORD_KEY]
    print("\n", file=out)
    print(
        f"Summary: {record['n_steps']} steps, {record['n_large_steps']} by the large model "
        f"(intervention rate {record['intervention_rate']:.0%}), chain ended by "
        f"{record['chain_end']}.\n"
        f"  tokens   small={record['tokens']['small']:<6} large={record['tokens']['large']:<6} "
        f"(wasted small glimpse tokens: {record['wasted_small_tokens']})\n"
        f"  requests small={record['requests']['small']:<6} large={record['requests']['large']}\n"
        f"  latency  {record['latency_s']:.2f} s  (threshold {record['threshold']:.3f} nats, "
        f"{record['estimator']}, probe={record['probe']})\n"
        f"  saved    {saved_line(record)}",
        file=out,
    )
    return record


def saved_line(record: dict[str, Any]) -> str:
    """What routing saved on the large model in this call (the record's savings fields)."""
    seconds = record["large_seconds_saved"]
    estimate = (
        "no large decoding observed to time them"
        if seconds is None
        else f"~{seconds:.2f} s of large-model time at its "
        f"{record['large_s_per_token'] * 1000:.1f} ms/token on this call"
    )
    return (
        f"{record['large_tokens_saved']} large-model tokens not generated (small tokenizer), "
        f"large share {record['large_share']:.0%} of the output; {estimate}"
    )


def router(args: argparse.Namespace, small: Backend, large: Backend) -> GlimpRouterChatModel:
    """The router of the flags; without ``--threshold`` every step goes small (calibrate's)."""
    return build_router(small, large, {"threshold": math.inf, **router_values(args)})


def add_parser(commands: Any) -> None:
    ask = commands.add_parser("ask", help="route one question through two running servers")
    ask.add_argument("question")
    add_server_flags(ask)
    add_router_flags(ask)
    ask.set_defaults(run=run)


def run(args: argparse.Namespace, out: TextIO) -> int:
    small, large = backends(args)
    # $OTEL_EXPORTER_OTLP_ENDPOINT: the call's spans (docs/tracing.md#opentelemetry)
    traces = install_from_env(service="glimprouter-ask")
    try:
        print_routed(router(args, small, large), args.question, args.system, out)
    finally:
        if traces is not None:
            traces.shutdown()  # exported before the command ends
    return 0
