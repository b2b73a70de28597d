"""What importing OpenTelemetry's API would add to a process that uses the package: the time of
``import opentelemetry.trace, opentelemetry.propagate`` in a fresh interpreter that has already
imported the Router and the proxy app (so their shared imports are not counted twice), over
``--runs`` processes. It decided that OpenTelemetry is the ``otel`` extra, not a dependency
(docs/tracing.md#opentelemetry). Note that langsmith imports ``opentelemetry.sdk`` itself
whenever it is installed: run it in an environment without the SDK for the API's own cost.

Run: .venv/bin/python -m benchmarks.otel_import [--runs 21]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

CHILD = """
import sys, time
import langchain_glimprouter.router, langchain_glimprouter.proxy.app
already = "opentelemetry.trace" in sys.modules
started = time.perf_counter()
import opentelemetry.propagate, opentelemetry.trace
print(time.perf_counter() - started, already)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    runs = parser.parse_args().runs
    seconds, already = [], set()
    for _ in range(runs):
        took, was = subprocess.check_output([sys.executable, "-c", CHILD], text=True).split()
        seconds.append(float(took))
        already.add(was)
    ms = sorted(s * 1000 for s in seconds)
    print(
        f"import opentelemetry.trace + propagate after the package, {runs} processes: "
        f"median {statistics.median(ms):.1f} ms, min {ms[0]:.1f}, max {ms[-1]:.1f} "
        f"(already imported by a dependency: {sorted(already)})"
    )


if __name__ == "__main__":
    main()
