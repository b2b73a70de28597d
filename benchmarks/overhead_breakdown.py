"""Where the router's overhead over the emulated servers goes: the harness or the client.

``bench_router`` runs each scripted server in a process of its own on a steady token clock.
This script measures what those two choices of the harness change, on the same calls: glimpse
25 % and large-only, each against four server pairs (threads of this process or processes of
their own, times a fresh sleep per token or a steady clock), interleaved over repetitions. For
each it gives latency / ideal, latency / the servers' busy time (their own clocks), and the time
per request spent outside the servers (the client and HTTP) and inside them beyond the emulated
cost (the servers' lag).

Run from the repository root::

    .venv/bin/python -m benchmarks.overhead_breakdown              # 5 repetitions: ~6 minutes
    .venv/bin/python -m benchmarks.overhead_breakdown --reps 2     # ~2.5 minutes

A table goes to stdout, the numbers to ``benchmarks/results/overhead_breakdown.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks import bench_router as br
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

RESULTS = results_path("overhead_breakdown")
VARIANTS = (("thread", "sleep"), ("process", "sleep"), ("thread", "steady"), ("process", "steady"))
RATE = 0.25


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--output", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    emu = br.Emulation()
    started = time.perf_counter()
    loads = [load_average()]
    br.warm_up()
    configs: list[tuple[str, str, br.Config]] = []
    servers: list[br.Server] = []
    try:
        for kind, pacing in VARIANTS:
            opts = br.parse_args(["--servers", kind, "--pacing", pacing])
            small, large = br.start_all(
                emu, opts, [(br.scripts(emu, RATE)[0], "small"), (br.scripts(emu, 0.0)[1], "large")]
            )
            servers += [small, large]
            for name, threshold in ((f"glimpse {RATE:.0%}", br.THRESHOLD), ("large-only", 0.0)):
                router = br.make_router(small, large, threshold, "stream")
                cfg = br.Config(name, RATE, threshold, "stream", small, large, router)
                br.run_once(emu, cfg, f"Warm-up {kind} {pacing} {name}")  # first-call costs
                configs.append((kind, pacing, cfg))
        for rep in range(args.reps):
            shift = rep % len(configs)
            for i, (_, _, cfg) in enumerate(configs[shift:] + configs[:shift]):
                cfg.samples.append(br.run_once(emu, cfg, f"Question {rep}.{i}: 6 times 7?"))
            loads.append(load_average())
            print(f"repetition {rep + 1}/{args.reps} done, load {loads[-1]}", file=sys.stderr)
    finally:
        for server in servers:
            server.stop()
    rows: list[dict[str, Any]] = []
    for kind, pacing, cfg in configs:
        s = cfg.samples
        n = [sum(x.server_requests.values()) for x in s]
        rows.append(
            {
                "servers": kind,
                "pacing": pacing,
                "configuration": cfg.name,
                "median_latency_s": med([x.latency_s for x in s]),
                "median_latency_over_ideal": med([x.latency_s / x.ideal_s for x in s]),
                "median_latency_over_busy": med([x.latency_s / x.busy_s for x in s]),
                "median_server_lag_ms_per_request": med(
                    [1000 * (x.busy_s - x.ideal_s) / k for x, k in zip(s, n, strict=True)]
                ),
                "median_client_ms_per_request": med(
                    [1000 * (x.latency_s - x.busy_s) / k for x, k in zip(s, n, strict=True)]
                ),
                "median_between_ms_per_gap": med(
                    [1000 * x.between_s / (k - 1) for x, k in zip(s, n, strict=True)]
                ),
                "median_before_ms": med([1000 * x.before_s for x in s]),
                "median_client_cpu_ms_per_step": med([1000 * x.cpu_s / x.n_steps for x in s]),
                "all_correct": all(x.correct for x in s),
            }
        )
    elapsed = time.perf_counter() - started
    header = [
        "servers",
        "pacing",
        "configuration",
        "latency / ideal",
        "latency / busy",
        "server lag ms / request",
        "client ms / request",
        "between ms / gap",
        "before ms",
        "client CPU ms / step",
    ]
    keys = [
        "servers",
        "pacing",
        "configuration",
        "median_latency_over_ideal",
        "median_latency_over_busy",
        "median_server_lag_ms_per_request",
        "median_client_ms_per_request",
        "median_between_ms_per_gap",
        "median_before_ms",
        "median_client_cpu_ms_per_step",
    ]
    print(f"{args.reps} repetitions (medians), run took {elapsed:.0f} s, {load_summary(loads)}.\n")
    print(table(header, [[row[k] for k in keys] for row in rows]))
    correct = all(row["all_correct"] for row in rows)
    print(f"\nEvery route, request count and answer as scripted: {'yes' if correct else 'NO'}.")
    results = {
        **run_header(),
        "versions": br.versions(),
        "load_average": load_record(loads),
        "elapsed_s": elapsed,
        "repetitions": args.reps,
        "emulation": asdict(emu),
        "rows": rows,
        "samples": {
            f"{kind} {pacing} {cfg.name}": [asdict(x) for x in cfg.samples]
            for kind, pacing, cfg in configs
        },
    }
    print(f"\nRaw numbers: {write_results(args.output, rounded(results))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
