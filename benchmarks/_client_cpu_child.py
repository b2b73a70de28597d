"""The measuring side of ``client_cpu``: one version's numbers, in a subprocess of their own.

``client_cpu`` runs this file by its path, in the measured checkout with that checkout alone on
``PYTHONPATH``, so it imports only the standard library and that checkout's own code: its
``langchain_glimprouter``, its ``bench_router`` and whatever that imports (``scripted_server/``
and ``benchmarks._common`` now, ``tests/scripted_server.py`` in a checkout from before they
existed). It prints one line ``RESULT <json>``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import importlib
import importlib.util
import inspect
import json
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any


def load_bench_router(package: Path) -> ModuleType:
    """``package``'s benchmarks/bench_router.py: imported as ``benchmarks.bench_router`` where
    benchmarks/ is a package, else (an older checkout: a folder of scripts, each putting the
    checkout on sys.path itself) loaded from its file."""
    path = package / "benchmarks" / "bench_router.py"
    if (package / "benchmarks" / "__init__.py").is_file():
        bench = importlib.import_module("benchmarks.bench_router")
    else:
        spec = importlib.util.spec_from_file_location("bench_router", path)
        assert spec is not None
        assert spec.loader is not None
        bench = importlib.util.module_from_spec(spec)
        sys.modules["bench_router"] = bench
        spec.loader.exec_module(bench)
    assert bench.__file__ is not None
    assert Path(bench.__file__).resolve() == path.resolve(), bench.__file__
    return bench


def measure(
    package: Path, sizes: list[int], calls: int, reps: int, profile: Path | None
) -> dict[str, Any]:
    """The numbers of one run of ``package``'s own bench_router, in this process."""
    bench = load_bench_router(package)
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
                # the floor (a bare client replaying the batch), where this checkout has it
                replay = "replay" in inspect.signature(bench.run_batch).parameters and not profiler
                run = bench.run_batch(emu, cfg, size, rep, **({"replay": True} if replay else {}))
                sample = asyncio.run(run)
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
                        "floor_over_ideal": (
                            sample.ideal_per_question_s / floor
                            if (floor := getattr(sample, "floor_wall_s", None))
                            else None
                        ),
                        "throughput_over_floor": floor / sample.wall_s if floor else None,
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("package", type=Path)
    p.add_argument("--sizes", required=True, help="questions per abatch, comma-separated")
    p.add_argument("--calls", type=int, required=True)
    p.add_argument("--reps", type=int, required=True)
    p.add_argument("--profile", type=Path)
    args = p.parse_args(argv)
    sizes = [int(x) for x in args.sizes.split(",")]
    result = measure(args.package, sizes, args.calls, args.reps, args.profile)
    print("RESULT " + json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
