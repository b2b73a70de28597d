"""How good is the record's estimate of what routing saved on the large model? Each question
is routed twice in one run on the same servers, with the same seed: by the router
(``strategy="glimpse"``) and by the large model alone (``strategy="large_only"``), the order
alternating between repetitions so that drift and cache state hit both.

From the routed call's record: the estimated large-only time is ``large_s +
large_seconds_saved`` (the large backend's stream time on the call, plus the saved tokens at the
decode time per token observed on it), and the estimated saving is ``large_seconds_saved``.
From the large-only call's record: the real large-only time is its ``large_s`` (every step and
the answer on the large backend; its ``latency_s`` is shown beside it), and the real saving is
that minus the routed call's ``large_s``. The error of each is estimate / real - 1, with the
token counts beside (saved + large-written tokens of the routed call against the large-only
call's output tokens), since a large-only chain is a different chain. The decode time per token
the router observed is shown beside vLLM's own for the same call: the change of the large
server's ``vllm:inter_token_latency_seconds`` sum over its count across the routed call.

Run from the repository root (a few minutes, ~100 s of which start the servers; wrap it in
``flock /tmp/glimp-real.lock`` on a shared machine)::

    .venv/bin/python -m benchmarks.savings_estimate
    .venv/bin/python -m benchmarks.savings_estimate --small-url http://127.0.0.1:8001/v1 \\
        --small-model smollm2-small --large-url http://127.0.0.1:8002/v1 \\
        --large-model smollm2-large        # servers already running

A table goes to stdout, the numbers to ``benchmarks/results/savings_estimate.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import Any

import httpx
from langchain_core.messages import HumanMessage, SystemMessage

from benchmarks._common import (
    load_average,
    load_record,
    load_summary,
    med,
    results_path,
    rounded,
    run_header,
    table,
    write_results,
)
from benchmarks.real_overhead import pair_from_args
from langchain_glimprouter import GlimpRouterChatModel
from langchain_glimprouter.cli.servers import stop_all
from langchain_glimprouter.questions import CALIBRATION_QUESTIONS

RESULTS = results_path("savings_estimate")
SYSTEM = "You are a careful math tutor. Reason step by step and put a blank line between steps."
STRATEGIES = ("glimpse", "large_only")


def inter_token(base_url: str) -> tuple[float, float]:
    """The sum and count of a vLLM server's ``vllm:inter_token_latency_seconds``."""
    text = httpx.get(base_url.removesuffix("/v1") + "/metrics", timeout=10).text
    totals = [0.0, 0.0]
    for line in text.splitlines():
        for i, suffix in enumerate(("_sum", "_count")):
            if line.startswith("vllm:inter_token_latency_seconds" + suffix):
                totals[i] += float(line.rsplit(" ", 1)[1])
    return totals[0], totals[1]


def output_tokens(record: dict[str, Any]) -> int:
    """The tokens of the kept steps and the answer, whoever wrote them."""
    return sum(step["tokens"] for step in record["steps"]) + record["answer_tokens"]


def compare(
    routed: dict[str, Any], alone: dict[str, Any], vllm_ms: float | None = None
) -> dict[str, Any]:
    """One question's routed call against its large-only call (see the module docstring);
    ``vllm_ms``: the large server's own inter-token latency over the routed call."""
    saved = routed["large_seconds_saved"]
    estimate = None if saved is None else routed["large_s"] + saved
    real_saving = alone["large_s"] - routed["large_s"]
    return {
        "large_share": routed["large_share"],
        "tokens_saved": routed["large_tokens_saved"],
        "routed_output_tokens": output_tokens(routed),
        "large_only_output_tokens": output_tokens(alone),
        "routed_ms_per_token": None if saved is None else routed["large_s_per_token"] * 1000,
        "large_only_ms_per_token": (alone["large_s_per_token"] or 0) * 1000,
        "vllm_ms_per_token": vllm_ms,
        "routed_large_s": routed["large_s"],
        "routed_latency_s": routed["latency_s"],
        "estimated_large_only_s": estimate,
        "large_only_large_s": alone["large_s"],
        "large_only_latency_s": alone["latency_s"],
        "time_error": None if estimate is None else estimate / alone["large_s"] - 1,
        "estimated_saving_s": saved,
        "real_saving_s": real_saving,
        "saving_error": (None if saved is None or real_saving <= 0 else saved / real_saving - 1),
        "token_ratio": output_tokens(routed) / max(1, output_tokens(alone)),
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--questions", type=int, default=5)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--threshold", type=float, default=1.5)
    p.add_argument("--max-reasoning-tokens", type=int, default=256)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--small-url")
    p.add_argument("--small-model", default="smollm2-small")
    p.add_argument("--large-url")
    p.add_argument("--large-model", default="smollm2-large")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    loads = [load_average()]
    small, large, servers = pair_from_args(args)
    startup = time.perf_counter() - started
    rows: list[dict[str, Any]] = []
    try:
        for q, question in enumerate(CALIBRATION_QUESTIONS[: args.questions]):
            router = GlimpRouterChatModel(
                small=small, large=large, threshold=args.threshold, seed=q + 1,
                max_reasoning_tokens=args.max_reasoning_tokens, max_tokens=args.max_tokens,
            )  # fmt: skip
            messages = [SystemMessage(SYSTEM), HumanMessage(question)]
            for strategy in STRATEGIES:  # untimed: /v1/models, the rendering, warm caches
                router.invoke(messages, strategy=strategy)
            for rep in range(args.reps):
                order = STRATEGIES if rep % 2 == 0 else STRATEGIES[::-1]
                records, vllm_ms = {}, None
                for s in order:
                    before = inter_token(large.base_url)
                    msg = router.invoke(messages, strategy=s)
                    records[s] = msg.response_metadata["glimprouter"]
                    if s == "glimpse":
                        (sum_a, n_a), (sum_b, n_b) = before, inter_token(large.base_url)
                        vllm_ms = (sum_b - sum_a) / (n_b - n_a) * 1000 if n_b > n_a else None
                rows.append(
                    {"question": q, "rep": rep, **compare(records["glimpse"],
                                                          records["large_only"], vllm_ms)}
                )  # fmt: skip
            loads.append(load_average())
            print(f"question {q + 1} done, load {loads[-1]}", file=sys.stderr)
    finally:
        stop_all(servers)
    report(args, rows, startup, time.perf_counter() - started, loads)
    return 0


def summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Medians, and the range of the errors, over every question and repetition."""

    def values(key: str) -> list[float]:
        return [row[key] for row in rows if row[key] is not None]

    out: dict[str, Any] = {"calls": len(rows)}
    for key in ("time_error", "saving_error", "token_ratio", "large_share"):
        got = values(key)
        out[key] = {"median": med(got), "min": min(got), "max": max(got)} if got else None
    abs_time = [abs(v) for v in values("time_error")]
    out["time_error_abs_median"] = med(abs_time) if abs_time else None
    return out


def report(
    args: argparse.Namespace,
    rows: list[dict[str, Any]],
    startup: float,
    elapsed: float,
    loads: list[list[float]],
) -> None:
    header = ["q", "rep", "large share", "saved tok", "routed tok", "alone tok",
              "ms/tok routed", "ms/tok vLLM", "ms/tok alone", "est. large-only s", "large-only s",
              "error", "est. saving s", "real saving s"]  # fmt: skip
    body = [
        [r["question"], r["rep"], r["large_share"], r["tokens_saved"], r["routed_output_tokens"],
         r["large_only_output_tokens"], r["routed_ms_per_token"], r["vllm_ms_per_token"],
         r["large_only_ms_per_token"],
         r["estimated_large_only_s"], r["large_only_large_s"], r["time_error"],
         r["estimated_saving_s"], r["real_saving_s"]]
        for r in rows
    ]  # fmt: skip
    print(table(header, body))
    totals = summary(rows)
    print(f"\n{totals}\nstart-up {startup:.0f} s, run {elapsed:.0f} s, {load_summary(loads)}")
    path = write_results(
        RESULTS,
        rounded(
            {
                **run_header(),
                "settings": vars(args),
                "startup_s": startup,
                "elapsed_s": elapsed,
                **load_record(loads),
                "summary": totals,
                "rows": rows,
            }
        ),
    )
    print(f"numbers: {path}")


if __name__ == "__main__":
    raise SystemExit(main())
