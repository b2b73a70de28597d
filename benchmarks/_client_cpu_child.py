"""The router's client cost, two versions side by side: one call's latency / the servers' busy
time, ``abatch`` throughput / ideal at 16 and 64 questions, and client CPU per streamed token.

The same emulated servers as ``bench_router.py`` (scripted vLLM look-alikes in processes of their
own, glimpse 25 %), driven by ``bench_router``'s own functions. Each ``--package`` is a checkout
of this repository (default: this one); with several, each round runs every version in a fresh
subprocess, in rotated order, so drift hits all. ``--profile`` writes a cProfile of the batches
of the first version and prints where the client's CPU goes.

Run from the repository root::

    .venv/bin/python -m benchmarks.client_cpu --package /path/to/old/checkout --package . \\
        --rounds 3

The table goes to stdout, the raw numbers to ``benchmarks/results/client_cpu.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import importlib.util
import json
import math
import os
import pstats
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "client_cpu.json"


def measure(
    package: Path, sizes: list[int], calls: int, reps: int, profile: Path | None
) -> dict[str, Any]:
    """Run in a subprocess whose sys.path starts with ``package``."""
    spec = importlib.util.spec_from_file_location(
        "bench_router", package / "benchmarks" / "bench_router.py"
    )
    assert spec is not None
    assert spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules["bench_router"] = bench
    spec.loader.exec_module(bench)
    import langchain_glimprouter

    assert Path(langchain_glimprouter.__file__).resolve().is_relative_to(package.resolve())
    emu = bench.Emulation()
    args = argparse.Namespace(servers="process", pacing="steady")
    bench.warm_up()
    rate = bench.CONCURRENCY_RATE
    small_script, large_script = bench.scripts(emu, rate)
    small, large = bench.start_all(emu, args, [(small_script, "small"), (large_script, "large")])
    try:
        router = bench.make_router(small, large, bench.THRESHOLD, "stream")
        cfg = bench.Config(
            f"glimpse {rate:.0%}", rate, bench.THRESHOLD, "stream", small, large, router
        )
        bench.run_once(emu, cfg, "Warm-up question: what is 6 times 7?")
        singles = [
            bench.run_once(emu, cfg, f"Question {i}: what is 6 times 7?") for i in range(calls)
        ]
        asyncio.run(bench.run_batch(emu, cfg, 4, -1))
        batches: list[dict[str, Any]] = []
        profiler = cProfile.Profile() if profile else None
        for rep in range(reps):
            for size in sizes:
                if profiler:
                    profiler.enable()
                sample = asyncio.run(bench.run_batch(emu, cfg, size, rep))
                if profiler:
                    profiler.disable()
                tokens = sum(g.generated_tokens for s in (small, large) for g in bench.logs_of(s))
                batches.append(
                    {
                        "size": size,
                        "throughput_over_ideal": sample.ideal_per_question_s / sample.wall_s,
                        "client_cpu_s": sample.client_cpu_s,
                        "streamed_tokens": tokens,
                        "cpu_us_per_token": 1e6 * sample.client_cpu_s / tokens,
                        "client_cpu_over_wall": sample.client_cpu_s / sample.wall_s,
                        "server_cpu_over_wall": {
                            r: c / sample.wall_s for r, c in (sample.server_cpu_s or {}).items()
                        },
                        "correct": sample.correct,
                    }
                )
        if profiler and profile:
            profiler.dump_stats(str(profile))
    finally:
        small.stop()
        large.stop()
    return {
        "package": str(package),
        "latency_over_busy": [s.latency_s / s.busy_s for s in singles],
        "single_cpu_ms_per_call": [1000 * s.cpu_s for s in singles],
        "singles_correct": all(s.correct for s in singles),
        "batches": batches,
        "load": os.getloadavg(),
    }


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarize(runs: list[dict[str, Any]], sizes: list[int]) -> str:
    by_package: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        by_package.setdefault(run["package"], []).append(run)
    header = ["version", "runs", "1 call: latency / busy (median)", "1 call: client CPU ms"]
    for size in sizes:
        header += [f"{size} at once: throughput / ideal", f"{size}: CPU µs / streamed token",
                   f"{size}: CPU / wall (client; small, large servers)"]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for package, group in by_package.items():
        row = [
            package,
            str(len(group)),
            f"{median([x for r in group for x in r['latency_over_busy']]):.3f}",
            f"{median([x for r in group for x in r['single_cpu_ms_per_call']]):.1f}",
        ]
        for size in sizes:
            bs = [b for r in group for b in r["batches"] if b["size"] == size]
            row += [
                f"{median([b['throughput_over_ideal'] for b in bs]):.3f} "
                f"({min(b['throughput_over_ideal'] for b in bs):.3f}–"
                f"{max(b['throughput_over_ideal'] for b in bs):.3f})",
                f"{median([b['cpu_us_per_token'] for b in bs]):.0f}",
                f"{median([b['client_cpu_over_wall'] for b in bs]):.2f}; "
                + ", ".join(
                    f"{median([b['server_cpu_over_wall'].get(r, math.nan) for b in bs]):.2f}"
                    for r in ("small", "large")
                ),
            ]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--package", type=Path, action="append", help="a checkout (repeatable)")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--sizes", default="16,64", help="questions per abatch, comma-separated")
    p.add_argument("--calls", type=int, default=5, help="single calls per run")
    p.add_argument("--reps", type=int, default=2, help="batches of each size per run")
    p.add_argument("--profile", type=Path, help="cProfile the first version's batches here")
    p.add_argument("--output", type=Path, default=RESULTS)
    p.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    sizes = [int(x) for x in args.sizes.split(",")]
    if args.child is not None:
        result = measure(args.child, sizes, args.calls, args.reps, args.profile)
        print("RESULT " + json.dumps(result))
        return 0
    packages = [pkg.resolve() for pkg in args.package or [ROOT]]
    runs: list[dict[str, Any]] = []
    started = time.perf_counter()
    for rnd in range(args.rounds):
        order = packages[rnd % len(packages) :] + packages[: rnd % len(packages)]
        for package in order:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(package),
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
          f"command: {' '.join(sys.argv)}")  # fmt: skip
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"runs": runs}, indent=1) + "\n")
    if args.profile:
        stats = pstats.Stats(str(args.profile))
        stats.sort_stats("tottime").print_stats(25)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
