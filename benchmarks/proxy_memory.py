"""The proxy's memory under large prompts (issue 27: 50 distinct 2 MB prompts took it from 116
to 623 MB, the render cache keeping them all, refused ones included).

``glimprouter proxy`` runs as its own process (the command an operator runs) in front of two
scripted servers on loopback, and gets ``--prompts`` distinct prompts of ``--megabytes`` MB
each, one at a time, twice, each time from a fresh proxy:

* **refused**: the servers' context (``max_model_len`` 100,000 tokens) is far smaller than a
  prompt, so each is rendered and then refused with a 400 ``context_length_exceeded``;
* **accepted**: the servers' context fits the prompts, so each is routed and answered (200).

The proxy's resident memory (``VmRSS`` of ``/proc/<pid>/status``) is read after one small
warm-up request, after the prompts, and its peak (``VmHWM``). Written to
``benchmarks/results/proxy_memory.json`` with the command, commit and date.

Run: .venv/bin/python -m benchmarks.proxy_memory [--prompts 50] [--megabytes 2]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from benchmarks._common import results_path, run_header, table, write_results
from scripted_server import Script, ScriptedServer

STEPS = ["small step one", "small step two"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def memory_mb(pid: int) -> dict[str, float]:
    """The process's resident memory and its peak, in MB."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return {name: int(fields[key].split()[0]) / 1024 for name, key in
            (("rss", "VmRSS"), ("peak", "VmHWM"))}  # fmt: skip


@contextmanager
def proxy(max_model_len: int) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``glimprouter proxy`` in front of a scripted pair with this context length."""
    small = ScriptedServer(Script(steps=STEPS, h_init=[0.2, 0.0]), model="small-m",
                           max_model_len=max_model_len).start()  # fmt: skip
    large = ScriptedServer(Script(steps=STEPS, answer="Done."), model="large-m",
                           max_model_len=max_model_len).start()  # fmt: skip
    port = free_port()
    command = [
        sys.executable, "-m", "langchain_glimprouter.cli", "proxy",
        "--small-url", small.base_url, "--small-model", "small-m",
        "--large-url", large.base_url, "--large-model", "large-m",
        "--port", str(port), "--threshold", "1.0", "--no-access-log",
        "--max-reasoning-tokens", "64", "--max-tokens", "16",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{url}/v1/models", timeout=1, trust_env=False)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("the proxy did not start") from None
                time.sleep(0.1)
        yield process, url
    finally:
        process.terminate()
        process.wait(timeout=30)
        small.stop()
        large.stop()


def run_phase(name: str, max_model_len: int, prompts: int, megabytes: float) -> dict[str, Any]:
    size = int(megabytes * 1_000_000)
    with proxy(max_model_len) as (process, url), httpx.Client(timeout=300, trust_env=False) as c:

        def ask(text: str) -> int:
            body = {"model": "glimprouter", "messages": [{"role": "user", "content": text}]}
            return c.post(f"{url}/v1/chat/completions", json=body).status_code

        assert ask("warm up") == 200
        before = memory_mb(process.pid)
        statuses: Counter[int] = Counter()
        started = time.perf_counter()
        for i in range(prompts):
            head = f"prompt {i}: "
            statuses[ask(head + "w" * (size - len(head)))] += 1
        seconds = time.perf_counter() - started
        after = memory_mb(process.pid)
    return {
        "phase": name,
        "max_model_len": max_model_len,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "rss_before_mb": round(before["rss"], 1),
        "rss_after_mb": round(after["rss"], 1),
        "growth_mb": round(after["rss"] - before["rss"], 1),
        "peak_mb": round(after["peak"], 1),
        "seconds": round(seconds, 1),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=50)
    parser.add_argument("--megabytes", type=float, default=2.0)
    parser.add_argument("--out", type=Path, default=results_path("proxy_memory"))
    args = parser.parse_args(argv)
    os.environ.pop("GLIMPROUTER_PROXY_API_KEY", None)
    phases = [
        run_phase("refused", 100_000, args.prompts, args.megabytes),
        run_phase("accepted", int(args.megabytes * 1_000_000) + 10_000, args.prompts,
                  args.megabytes),
    ]  # fmt: skip
    header = ["phase", "statuses", "RSS before MB", "RSS after MB", "growth MB", "peak MB", "s"]
    rows = [[p["phase"], p["statuses"], p["rss_before_mb"], p["rss_after_mb"], p["growth_mb"],
             p["peak_mb"], p["seconds"]] for p in phases]  # fmt: skip
    print(table(header, rows))
    run = {"prompts": args.prompts, "megabytes": args.megabytes, "phases": phases}
    write_results(args.out, run_header() | run)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
