"""How fast ``core/entropy.py`` computes a glimpse's entropy, in plain Python and with numpy.

The estimators run on the dict of top logprobs a server sends (``tops.values()``, as the router
calls them): a glimpse's 20 (``--top-logprobs``) and a ``topk_bounds`` escalation probe's 1,000.
The logprobs are real-shaped: the most probable tokens of a Zipf distribution (exponent 1.1)
over SmolLM2's 49,152-token vocabulary, most probable first, as vLLM lists them. Each case runs
the module's own code two ways, alternately: with
:data:`~langchain_glimprouter.core.entropy.NUMPY_FROM` set so that it sorts and sums in plain
Python, and so that it does with numpy (the module itself uses numpy from ``NUMPY_FROM``
logprobs on). A time is the best of ``--repeat`` timeit runs, per call.

Run: .venv/bin/python -m benchmarks.entropy_speed   (about a minute; writes
benchmarks/results/entropy_speed.json)
"""

from __future__ import annotations

import argparse
import math
import timeit
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks._common import (
    load_average,
    load_record,
    load_summary,
    package_versions,
    results_path,
    rounded,
    run_header,
    table,
    write_results,
)
from langchain_glimprouter.core import entropy

VOCABULARY = 49_152  # SmolLM2's
ZIPF = 1.1


def glimpse(n: int) -> dict[str, float]:
    """The top ``n`` logprobs of the Zipf distribution, as a server's ``top_logprobs`` dict."""
    weights = [1 / (rank + 1) ** ZIPF for rank in range(VOCABULARY)]
    log_total = math.log(math.fsum(weights))
    return {f"token{rank}": math.log(weights[rank]) - log_total for rank in range(n)}


def cases(top_logprobs: int, probe: int) -> dict[str, Callable[[], Any]]:
    """The calls the router makes: each estimator on a glimpse, the bounds on a probe."""
    small, wide = glimpse(top_logprobs), glimpse(probe)
    calls: dict[str, Callable[[], Any]] = {
        f"{name}, {top_logprobs}": (
            lambda name=name: entropy.first_token_entropy(small.values(), name, k=top_logprobs)
        )
        for name in entropy.ESTIMATORS
    }
    calls[f"topk_bounds, {probe} (escalation probe)"] = lambda: entropy.entropy_bounds(
        wide.values(), k=probe
    )
    return calls


def best_us(call: Callable[[], Any], repeat: int) -> tuple[float, float]:
    """The best of ``repeat`` timeit runs of ``call`` in plain Python and with numpy,
    alternated (so that a busy moment of the machine hits both), in µs per call."""
    default, best = entropy.NUMPY_FROM, [math.inf, math.inf]
    number, _ = timeit.Timer(call).autorange()
    try:
        for _ in range(repeat):
            for path, numpy_from in enumerate((math.inf, 0)):
                entropy.NUMPY_FROM = numpy_from  # type: ignore[assignment]
                best[path] = min(best[path], timeit.timeit(call, number=number) / number * 1e6)
    finally:
        entropy.NUMPY_FROM = default
    return best[0], best[1]


def measure(top_logprobs: int, probe: int, repeat: int) -> list[dict[str, Any]]:
    rows = []
    for name, call in cases(top_logprobs, probe).items():
        plain, numpy = best_us(call, repeat)
        row = {"case": name, "plain_us": plain, "numpy_us": numpy}
        rows.append({**row, "numpy_over_plain": numpy / plain})
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top-logprobs", type=int, default=20)
    parser.add_argument("--probe", type=int, default=1000, help="logprobs of an escalation")
    parser.add_argument("--repeat", type=int, default=15, help="timeit runs; the best counts")
    parser.add_argument("--out", type=Path, default=results_path("entropy_speed"))
    args = parser.parse_args(argv)
    loads = [load_average()]
    rows = measure(args.top_logprobs, args.probe, args.repeat)
    loads.append(load_average())
    header = ["estimator, logprobs", "plain Python µs", "numpy µs", "numpy / plain"]
    print(table(header, [list(row.values()) for row in rows]))
    print(f"\nthe module uses numpy from {entropy.NUMPY_FROM} logprobs on; {load_summary(loads)}")
    results = {
        **run_header(),
        "versions": package_versions(("numpy",)),
        "numpy_from": entropy.NUMPY_FROM,
        "load_average": load_record(loads),
        "rows": rounded(rows),
    }
    print(f"wrote {write_results(args.out, results)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
