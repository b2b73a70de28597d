"""What the proxy adds: the same router in process and behind ``langchain_glimprouter.proxy``.

On ``bench_router``'s emulated servers (glimpse 25 %: 12 steps, 3 of them large; each scripted
server in a process of its own), one run measures side by side, interleaved:

* **in process**: ``router.astream(question)`` in this process;
* **proxy**: the same router served by uvicorn in a process of its own (built by
  ``app_from_env`` from ``router_env``, as ``glimprouter proxy --workers N`` does) on what
  uvicorn picks here (httptools and uvloop, which the test extra installs), read by an httpx2
  client streaming ``/v1/chat/completions`` (SSE) from this process, on the router's own
  asyncio transport: the lightest client at hand, since it shares the cores with what is
  measured (in a deployment it runs elsewhere);
* **proxy_h11**: the same on uvicorn's pure-Python fallbacks (``--http h11 --loop asyncio``),
  what a proxy gets where httptools or uvloop are not installed;

at 1 stream (``--reps`` calls each) and at 64 concurrent streams (``--batch-reps`` batches
each): time to first token (the first reasoning or answer text; median, and proxy minus in
process) and throughput at 64 (streams per second, proxy / in process), with the CPU time of
this process, the proxy's and the servers' during the batches; the sides alternate, who goes
first rotating each repetition. Goals: at most 5 ms added to the
time to first token, throughput at 64 at least 0.9 of in process.

Run from the repository root::

    .venv/bin/python -m benchmarks.proxy_overhead                          # about 4 minutes
    .venv/bin/python -m benchmarks.proxy_overhead --reps 3 --batch-reps 1  # about 1 minute

A table goes to stdout, the numbers to ``benchmarks/results/proxy_overhead.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import httpx2

from benchmarks import bench_router as br
from benchmarks._common import (
    ROOT,
    load_average,
    load_record,
    load_summary,
    med,
    package_versions,
    results_path,
    rounded,
    run_header,
    table,
    write_results,
)
from langchain_glimprouter import GlimpRouterChatModel
from langchain_glimprouter.cli.servers import free_port
from langchain_glimprouter.http.network import async_transport
from langchain_glimprouter.proxy import router_env
from langchain_glimprouter.reasoning_fields import reasoning_of

RESULTS = results_path("proxy_overhead")
RATE = 0.25
SERVED = "glimprouter"
FACTORY = "langchain_glimprouter.proxy:app_from_env"
CONCURRENCY = (1, 64)
PROXIES = {"proxy": [], "proxy_h11": ["--http", "h11", "--loop", "asyncio"]}
"""The proxied sides and their uvicorn flags (none: uvicorn's own choice)."""
GOAL_TTFT_MS, GOAL_THROUGHPUT = 5.0, 0.9


@dataclass
class Stream:
    """One streamed answer."""

    ttft_s: float
    """From sending the request to the first reasoning or answer text."""
    total_s: float
    n_steps: int
    n_large_steps: int
    answer: str


@dataclass
class Batch:
    """``size`` streams at once."""

    size: int
    wall_s: float
    streams: list[Stream]
    client_cpu_s: float
    proxy_cpu_s: float
    server_cpu_s: dict[str, float]


Call = Callable[[str], Awaitable[Stream]]


async def in_process(router: GlimpRouterChatModel, question: str) -> Stream:
    """The router's own ``astream``."""
    t0 = time.perf_counter()
    first: float | None = None
    answer: list[str] = []
    record: dict[str, Any] = {}
    async for chunk in router.astream(question):
        if first is None and (chunk.content or chunk.additional_kwargs.get("reasoning_content")):
            first = time.perf_counter()
        answer.append(str(chunk.content))
        record = chunk.response_metadata.get("glimprouter", record)
    end = time.perf_counter()
    return Stream((first or end) - t0, end - t0, record["n_steps"], record["n_large_steps"],
                  "".join(answer))  # fmt: skip


async def via_proxy(client: httpx2.AsyncClient, url: str, question: str) -> Stream:
    """A streamed ``/v1/chat/completions`` read as raw SSE."""
    body = {"model": SERVED, "messages": [{"role": "user", "content": question}], "stream": True}
    t0 = time.perf_counter()
    first: float | None = None
    answer: list[str] = []
    record: dict[str, Any] = {}
    async with client.stream("POST", url, json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            for choice in event.get("choices", []):
                delta = choice.get("delta", {})
                if first is None and (delta.get("content") or reasoning_of(delta)):
                    first = time.perf_counter()
                answer.append(delta.get("content") or "")
            if "n_steps" in event.get("glimprouter", {}):
                record = event["glimprouter"]
    end = time.perf_counter()
    return Stream((first or end) - t0, end - t0, record["n_steps"], record["n_large_steps"],
                  "".join(answer))  # fmt: skip


def cpu_of(pid: int) -> float:
    """CPU time (user + system, seconds) of process ``pid`` so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proxy_stacks() -> dict[str, str]:
    """The HTTP parser and event loop uvicorn serves each proxied side with here: its
    ``--http``/``--loop`` flags, or "auto", which picks httptools and uvloop if installed."""
    auto = {
        "--http": "httptools" if importlib.util.find_spec("httptools") else "h11",
        "--loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
    }
    stacks = {}
    for side, flags in PROXIES.items():
        chosen = {**auto, **dict(zip(flags[::2], flags[1::2], strict=True))}
        stacks[side] = f"{chosen['--http']}, {chosen['--loop']}"
    return stacks


def start_proxy(
    router: GlimpRouterChatModel, flags: list[str]
) -> tuple[subprocess.Popen[bytes], str]:
    """uvicorn (with ``flags``) serving ``app_from_env`` for ``router`` in a child process; its
    root URL."""
    port = free_port()
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, **router_env(router, SERVED), "PYTHONPATH": path}
    command = [sys.executable, "-m", "uvicorn", "--factory", FACTORY, "--host", "127.0.0.1",
               "--port", str(port), "--log-level", "warning", "--no-access-log"]  # fmt: skip
    command += flags
    process = subprocess.Popen(command, env=env, cwd=ROOT)
    root = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the proxy exited with code {process.returncode}")
        try:
            if httpx.get(f"{root}/health", timeout=1, trust_env=False).status_code == 200:
                return process, root
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError("the proxy did not answer /health in 60 s")


async def batch(
    call: Call, size: int, tag: str, proxy_pid: int | None, servers: dict[br.Role, br.Server]
) -> Batch:
    """``size`` distinct questions streamed at once (``proxy_pid``: the proxy whose CPU time to
    count, None in process)."""

    def proxy_cpu() -> float:
        return 0.0 if proxy_pid is None else cpu_of(proxy_pid)

    br.fresh(*servers.values())
    questions = [f"Question {tag}.{i}: what is 6 times 7?" for i in range(size)]
    cpu0, proxy0, server0 = time.process_time(), proxy_cpu(), br.server_cpu(servers)
    t0 = time.perf_counter()
    streams = await asyncio.gather(*(call(q) for q in questions))
    wall = time.perf_counter() - t0
    cpu, proxy, server1 = (
        time.process_time() - cpu0,
        proxy_cpu() - proxy0,
        br.server_cpu(servers),
    )
    assert server0 is not None
    assert server1 is not None
    return Batch(size, wall, list(streams), cpu, proxy,
                 {r: server1[r] - server0[r] for r in server1})  # fmt: skip


def correct(emu: br.Emulation, stream: Stream) -> bool:
    return (
        stream.answer.startswith("The answer is 42")
        and stream.n_steps == emu.steps
        and stream.n_large_steps == len(br.hard_steps(RATE, emu.steps))
    )


def summary(emu: br.Emulation, batches: dict[str, list[Batch]], size: int) -> dict[str, Any]:
    """Medians at one concurrency, in process against each proxy."""
    row: dict[str, Any] = {"concurrency": size}
    for side, runs in batches.items():
        runs = [b for b in runs if b.size == size]
        streams = [s for b in runs for s in b.streams]
        row[side] = {
            "median_ttft_ms": med([1000 * s.ttft_s for s in streams]),
            "median_latency_s": med([s.total_s for s in streams]),
            "median_wall_s": med([b.wall_s for b in runs]),
            "streams_per_s": med([size / b.wall_s for b in runs]),
            "client_cpu_s_per_stream": med([b.client_cpu_s / size for b in runs]),
            "proxy_cpu_s_per_stream": med([b.proxy_cpu_s / size for b in runs]),
            "servers_cpu_s_per_stream": med([sum(b.server_cpu_s.values()) / size for b in runs]),
            "all_correct": all(correct(emu, s) for s in streams),
            "streams": len(streams),
        }
    inside = row["in_process"]
    row["added_ttft_ms"] = {
        side: row[side]["median_ttft_ms"] - inside["median_ttft_ms"] for side in PROXIES
    }
    row["throughput_ratio"] = {
        side: row[side]["streams_per_s"] / inside["streams_per_s"] for side in PROXIES
    }
    return row


async def measure(
    emu: br.Emulation, args: argparse.Namespace, router: GlimpRouterChatModel,
    proxies: dict[str, tuple[int, str]], servers: dict[br.Role, br.Server],
    loads: list[list[float]],
) -> dict[str, list[Batch]]:  # fmt: skip
    """Warm-ups, then the batches of every concurrency, the sides rotating who goes first.
    ``proxies``: each proxied side's process id and root URL."""
    limits = httpx2.Limits(max_connections=max(CONCURRENCY), max_keepalive_connections=64)
    async with contextlib.AsyncExitStack() as stack:
        sides: dict[str, tuple[Call, int | None]] = {
            "in_process": (functools.partial(in_process, router), None)
        }
        for side, (proxy_pid, root) in proxies.items():
            transport = async_transport(root, limits, verify=False)  # the lightest client
            client = await stack.enter_async_context(
                httpx2.AsyncClient(timeout=120, transport=transport, trust_env=False)
            )
            url = f"{root}/v1/chat/completions"
            sides[side] = (functools.partial(via_proxy, client, url), proxy_pid)
        for side, (call, pid) in sides.items():  # first-call costs (/v1/models), a small batch
            await batch(call, 1, f"warm-{side}", pid, servers)
            await batch(call, 4, f"warm4-{side}", pid, servers)
        runs: dict[str, list[Batch]] = {side: [] for side in sides}
        plan = [(1, rep) for rep in range(args.reps)] + [
            (max(CONCURRENCY), rep) for rep in range(args.batch_reps)
        ]
        names = list(sides)
        for size, rep in plan:
            shift = rep % len(names)
            for side in names[shift:] + names[:shift]:
                call, pid = sides[side]
                runs[side].append(await batch(call, size, f"{size}.{rep}.{side}", pid, servers))
            if size > 1 or rep == args.reps - 1:
                loads.append(load_average())
                print(f"{size} stream(s), repetition {rep + 1} done, load {loads[-1]}",
                      file=sys.stderr)  # fmt: skip
    return runs


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=10, help="single-stream calls per side")
    p.add_argument("--batch-reps", type=int, default=3, help="64-stream batches per side")
    p.add_argument("--output", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    emu = br.Emulation()
    started = time.perf_counter()
    loads = [load_average()]
    br.warm_up()
    opts = br.parse_args([])
    small_script, large_script = br.scripts(emu, RATE)
    small, large = br.start_all(emu, opts, [(small_script, "small"), (large_script, "large")])
    processes: list[subprocess.Popen[bytes]] = []
    try:
        router = br.make_router(small, large, br.THRESHOLD, "stream")
        proxies: dict[str, tuple[int, str]] = {}
        for side, flags in PROXIES.items():
            process, root = start_proxy(router, flags)
            processes.append(process)
            proxies[side] = (process.pid, root)
        servers: dict[br.Role, br.Server] = {"small": small, "large": large}
        runs = asyncio.run(measure(emu, args, router, proxies, servers, loads))
    finally:
        for process in processes:
            process.terminate()
            process.wait(10)
        small.stop()
        large.stop()
    elapsed = time.perf_counter() - started
    rows = [summary(emu, runs, size) for size in CONCURRENCY]
    report(rows, args, elapsed, loads)
    results = {
        **run_header(),
        "versions": {
            **br.versions(),
            **package_versions(("starlette", "prometheus-client", "httptools", "uvloop")),
        },
        "proxy_servers": {
            side: f"uvicorn, one worker, {stack}" for side, stack in proxy_stacks().items()
        },
        "load_average": load_record(loads),
        "elapsed_s": elapsed,
        "repetitions": {"single": args.reps, "batches": args.batch_reps},
        "emulation": asdict(emu),
        "rate": RATE,
        "threshold": br.THRESHOLD,
        "goals": {"added_ttft_ms": GOAL_TTFT_MS, "throughput_ratio_at_64": GOAL_THROUGHPUT},
        "rows": rows,
        "batches": {side: [asdict(b) for b in batches] for side, batches in runs.items()},
    }
    print(f"\nRaw numbers: {write_results(args.output, rounded(results))}")
    return 0


def report(
    rows: list[dict[str, Any]], args: argparse.Namespace, elapsed: float, loads: list[list[float]]
) -> None:
    print(
        f"glimpse {RATE:.0%}, {args.reps} single calls and {args.batch_reps} batches of "
        f"{max(CONCURRENCY)} per side (medians); run took {elapsed:.0f} s, {load_summary(loads)}.\n"
    )
    stacks = proxy_stacks()
    header = ["streams", "proxy", "TTFT in process (ms)", "TTFT proxy (ms)", "added (ms)",
              "latency in process (s)", "latency proxy (s)", "streams/s in process",
              "streams/s proxy", "proxy / in process", "CPU ms/stream in process",
              "CPU ms/stream proxy: client + proxy"]  # fmt: skip
    lines = []
    for row in rows:
        inside = row["in_process"]
        for side in PROXIES:
            proxied = row[side]
            lines.append([row["concurrency"], stacks[side],
                          inside["median_ttft_ms"], proxied["median_ttft_ms"],
                          row["added_ttft_ms"][side], inside["median_latency_s"],
                          proxied["median_latency_s"], inside["streams_per_s"],
                          proxied["streams_per_s"], row["throughput_ratio"][side],
                          1000 * inside["client_cpu_s_per_stream"],
                          f"{1000 * proxied['client_cpu_s_per_stream']:.1f} + "
                          f"{1000 * proxied['proxy_cpu_s_per_stream']:.1f}"])  # fmt: skip
    print(table(header, lines))
    single, many = rows[0], rows[-1]
    ok = all(row[side]["all_correct"] for row in rows for side in ("in_process", *PROXIES))
    for side in PROXIES:
        print(
            f"\nuvicorn, one worker, {stacks[side]}: added time to first token "
            f"{single['added_ttft_ms'][side]:.2f} ms "
            f"at 1 stream, {many['added_ttft_ms'][side]:.2f} ms at {many['concurrency']} (goal "
            f"<= {GOAL_TTFT_MS:g} ms); throughput at {many['concurrency']}: "
            f"{many['throughput_ratio'][side]:.3f} of in process (goal >= {GOAL_THROUGHPUT})."
        )
    print(f"Every answer and route as scripted: {'yes' if ok else 'NO'}.")


if __name__ == "__main__":
    raise SystemExit(main())
