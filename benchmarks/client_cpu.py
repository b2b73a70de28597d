"""The router's client cost, two versions side by side: one call's latency / the servers' busy
time, ``abatch`` throughput / ideal at 16 and 64 questions, and client CPU per streamed token.

The same emulated servers as ``bench_router.py`` (scripted vLLM look-alikes in processes of their
own, glimpse 25 %), driven by ``bench_router``'s own functions. Each ``--package`` is a checkout
of this repository (default: this one), old (before ``benchmarks/`` was a package) or new; with
several, each round runs every version in a fresh subprocess (``_client_cpu_child.py``, with
that checkout's own package and ``bench_router``), in rotated order, so drift hits all.
``--profile`` writes a cProfile of the batches of the first version and prints where the
client's CPU goes.

Run from the repository root::

    .venv/bin/python -m benchmarks.client_cpu --package /path/to/old/checkout --package . \\
        --rounds 3

The table goes to stdout, the raw numbers to ``benchmarks/results/client_cpu.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pstats
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks._common import ROOT, med, results_path, table, write_results

RESULTS = results_path("client_cpu")
CHILD = Path(__file__).resolve().parent / "_client_cpu_child.py"


def spread(values: list[float | None]) -> str:
    """Median (min–max) of the values measured; "—" where none was (an older checkout)."""
    xs = [x for x in values if x is not None]
    return f"{med(xs):.3f} ({min(xs):.3f}–{max(xs):.3f})" if xs else "—"


def summarize(runs: list[dict[str, Any]], sizes: list[int]) -> str:
    by_package: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        by_package.setdefault(run["package"], []).append(run)
    header = ["version", "runs", "1 call: latency / busy (median)", "1 call: client CPU ms"]
    for size in sizes:
        header += [f"{size} at once: throughput / ideal", f"{size}: floor / ideal",
                   f"{size}: throughput / floor", f"{size}: CPU µs / streamed token",
                   f"{size}: CPU / wall (client; small, large servers)"]  # fmt: skip
    rows: list[list[str]] = []
    for package, group in by_package.items():
        row = [
            package,
            str(len(group)),
            f"{med([x for r in group for x in r['latency_over_busy']]):.3f}",
            f"{med([x for r in group for x in r['single_cpu_ms_per_call']]):.1f}",
        ]
        for size in sizes:
            bs = [b for r in group for b in r["batches"] if b["size"] == size]
            row += [
                spread([b["throughput_over_ideal"] for b in bs]),
                spread([b.get("floor_over_ideal") for b in bs]),
                spread([b.get("throughput_over_floor") for b in bs]),
                f"{med([b['cpu_us_per_token'] for b in bs]):.0f}",
                f"{med([b['client_cpu_over_wall'] for b in bs]):.2f}; "
                + ", ".join(
                    f"{med([b['server_cpu_over_wall'].get(r, math.nan) for b in bs]):.2f}"
                    for r in ("small", "large")
                ),
            ]
        rows.append(row)
    return table(header, rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--package", type=Path, action="append", help="a checkout (repeatable)")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--sizes", default="16,64", help="questions per abatch, comma-separated")
    p.add_argument("--calls", type=int, default=5, help="single calls per run")
    p.add_argument("--reps", type=int, default=2, help="batches of each size per run")
    p.add_argument("--profile", type=Path, help="cProfile the first version's batches here")
    p.add_argument("--output", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    sizes = [int(x) for x in args.sizes.split(",")]
    packages = [pkg.resolve() for pkg in args.package or [ROOT]]
    runs: list[dict[str, Any]] = []
    started = time.perf_counter()
    for rnd in range(args.rounds):
        order = packages[rnd % len(packages) :] + packages[: rnd % len(packages)]
        for package in order:
            cmd = [sys.executable, str(CHILD), str(package),
                   "--sizes", args.sizes, "--calls", str(args.calls),
                   "--reps", str(args.reps)]  # fmt: skip
            if args.profile and rnd == 0 and package == packages[0]:
                cmd += ["--profile", str(args.profile)]
            env = {**os.environ, "PYTHONPATH": str(package)}
            out = subprocess.run(cmd, env=env, cwd=package, capture_output=True, text=True)
            if out.returncode != 0:
                print(out.stderr, file=sys.stderr)
                return 1
            result = json.loads(out.stdout.split("RESULT ", 1)[1])
            runs.append(result)
            print(f"round {rnd + 1}: {package} done", file=sys.stderr)
    print(summarize(runs, sizes))
    print(f"\n{args.rounds} rounds in {time.perf_counter() - started:.0f} s; "
          f"command: {shlex.join(sys.orig_argv)}")  # fmt: skip
    write_results(args.output, {"runs": runs})
    if args.profile:
        stats = pstats.Stats(str(args.profile))
        stats.sort_stats("tottime").print_stats(25)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
