"""The router's overhead on a real engine: two vLLM CPU servers on SmolLM2-135M.

For a few sample questions the router runs at a threshold that mixes small and large steps on
this model (1.5 nats); every completions request it makes is recorded (server, body, tokens it
read). The same requests are then replayed directly on the same servers, one after another,
streamed, by a bare httpx client: the same prompt and sampling parameters, ``max_tokens =
min_tokens = n`` (the tokens the router read from that request), ``ignore_eos`` and no stop
strings, so that the server generates exactly the same number of tokens. An aborted glimpse (the
router read one token and closed the stream) is replayed as a 1-token request. The replay is the
ideal: the same requests, prompts (prefix caching on), and token counts, without the router.

Each question first gets untimed calls (warm-up: the first call also fetches /v1/models and
renders the prompts; a seed is looked for that gives a chain with both kinds of step) and an
untimed replay (without it, a run's first replay took 7.3 s where the others took 4.2-5.5).
Then, per repetition, the router's call and the replay of its requests alternate in order
(router first on even repetitions; replay first on odd ones, replaying the previous call's
requests, when the router then makes exactly the same requests again: same prompts and token
counts, which the first chunk of a glimpse, one token or a few, does not always allow), so
drift and cache state hit both. The reported ratio is router wall time / replay wall time,
median over questions and repetitions; the per-request client overhead is (router - replay) /
completions requests, and the part of it with no stream open is measured on its own (it does
not depend on how fast the servers happened to be).

Run from the repository root (about 5 minutes: ~100 s to start the servers)::

    .venv/bin/python -m benchmarks.real_overhead
    .venv/bin/python -m benchmarks.real_overhead --small-url http://127.0.0.1:8001/v1 \\
        --small-model smollm2-small --large-url http://127.0.0.1:8002/v1 \\
        --large-model smollm2-large        # servers already running

It needs the cached vLLM environment (``make vllm-env``). A table goes to stdout, the numbers to
``benchmarks/results/real_overhead.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from langchain_core.messages import HumanMessage, SystemMessage

from benchmarks._common import (
    CLIENT_PACKAGES,
    load_average,
    load_record,
    load_summary,
    package_versions,
    results_path,
    run_header,
    table,
    write_results,
)
from langchain_glimprouter import Backend, GlimpRouterChatModel
from langchain_glimprouter.cli.servers import (
    LocalServer,
    start_pair,
    stop_all,
    tiny_model_dir,
    vllm_python,
)
from langchain_glimprouter.core.wire import Chunk
from langchain_glimprouter.http.client import BackendClient
from langchain_glimprouter.questions import CALIBRATION_QUESTIONS

RESULTS = results_path("real_overhead")
SYSTEM = "You are a careful math tutor. Reason step by step and put a blank line between steps."


# -- recording what the router asks of the servers -------------------------------------------------


@dataclass
class Recorded:
    """One completions request of a routed call."""

    role: str
    url: str
    body: dict[str, Any]
    tokens: int = 0
    """Tokens the router read from this stream (what it waited for)."""
    finish_reason: str | None = None
    seconds: float = 0.0
    """From opening the stream to closing it."""


@dataclass
class Recorder:
    """Wraps ``BackendClient.stream`` and ``request_json`` to log a call's requests."""

    completions: list[Recorded] = field(default_factory=list)
    json_seconds: float = 0.0
    """Time in JSON requests (/tokenize and /detokenize for the renders, /v1/models)."""
    json_requests: int = 0

    def reset(self) -> None:
        self.completions, self.json_seconds, self.json_requests = [], 0.0, 0

    @contextmanager
    def installed(self) -> Iterator[None]:
        stream, request_json = BackendClient.stream, BackendClient.request_json
        recorder = self

        @contextmanager
        def recording_stream(client: BackendClient, body: dict[str, Any]) -> Iterator[Any]:
            rec = Recorded(client.role, client.base_url, body)
            recorder.completions.append(rec)
            t0 = time.perf_counter()
            try:
                with stream(client, body) as chunks:

                    def counted() -> Iterator[Chunk]:
                        for chunk in chunks:
                            rec.tokens += chunk.n_tokens
                            rec.finish_reason = chunk.finish_reason or rec.finish_reason
                            yield chunk

                    yield counted()
            finally:
                rec.seconds = time.perf_counter() - t0

        def timed_request_json(
            client: BackendClient, method: str, path: str, body: dict[str, Any] | None
        ) -> dict[str, Any]:
            t0 = time.perf_counter()
            try:
                return request_json(client, method, path, body)
            finally:
                recorder.json_seconds += time.perf_counter() - t0
                recorder.json_requests += 1

        BackendClient.stream = recording_stream  # type: ignore[method-assign,assignment]
        BackendClient.request_json = timed_request_json  # type: ignore[method-assign,assignment]
        try:
            yield
        finally:
            BackendClient.stream = stream  # type: ignore[method-assign]
            BackendClient.request_json = request_json  # type: ignore[method-assign]


def shape(requests: Sequence[Recorded]) -> list[tuple[str, int, str]]:
    """What a replay depends on: server, tokens and prompt of each request, in order."""
    return [(r.role, r.tokens, r.body["prompt"]) for r in requests]


# -- the direct replay -----------------------------------------------------------------------------


def replay_body(rec: Recorded) -> dict[str, Any]:
    """The recorded request, made to generate exactly the tokens the router read."""
    body = {k: v for k, v in rec.body.items() if k != "stop"}
    n = max(rec.tokens, 1)
    body.update(max_tokens=n, min_tokens=n, ignore_eos=True)
    return body


def replay(client: httpx.Client, requests: Sequence[Recorded]) -> tuple[float, float, int]:
    """Wall time of the requests sent one after another, each read to its end; the part of it
    spent outside the requests; and the number of requests whose generated token count differs
    from the router's."""
    mismatches = 0
    inside = 0.0
    t0 = time.perf_counter()
    for rec in requests:
        body = replay_body(rec)
        generated = -1
        t1 = time.perf_counter()
        with client.stream("POST", f"{rec.url}/completions", json=body) as response:
            if response.status_code >= 400:
                response.read()
                raise RuntimeError(f"replay failed: HTTP {response.status_code}: {response.text}")
            for line in response.iter_lines():
                if line.startswith("data: {"):
                    usage = json.loads(line[len("data: ") :]).get("usage")
                    if usage:
                        generated = usage["completion_tokens"]
        inside += time.perf_counter() - t1
        mismatches += generated != body["max_tokens"]
    wall = time.perf_counter() - t0
    return wall, wall - inside, mismatches


# -- one question ----------------------------------------------------------------------------------


@dataclass
class Sample:
    """One repetition of one question: the router's call and the replay of its requests."""

    question: int
    rep: int
    order: str
    """"router first" or "replay first"."""
    router_s: float
    replay_s: float
    router_outside_s: float
    """The part of ``router_s`` with no completions stream open: LangChain, the prompt renders
    (none after a question's first call) and the router's work between two requests."""
    replay_outside_s: float
    """The same for the replay (the bare client's loop between two requests)."""
    requests: dict[str, int]
    tokens: dict[str, int]
    n_steps: int
    n_large_steps: int
    json_requests: int
    json_s: float
    """Time of the call's JSON requests (prompt renders), part of ``router_s``."""
    replay_token_mismatches: int
    record_latency_s: float


def routed(
    router: GlimpRouterChatModel, recorder: Recorder, messages: list[Any]
) -> tuple[float, list[Recorded], dict[str, Any], float, int]:
    recorder.reset()
    t0 = time.perf_counter()
    msg = router.invoke(messages)
    wall = time.perf_counter() - t0
    record = msg.response_metadata["glimprouter"]
    return wall, list(recorder.completions), record, recorder.json_seconds, recorder.json_requests


def find_seed(
    make: Any, recorder: Recorder, messages: list[Any], seeds: Sequence[int]
) -> tuple[int, tuple[float, int]]:
    """The first seed whose chain has both small and large steps (the last one otherwise), and
    the time and count of the JSON requests of the first call (a new router: /v1/models and
    the prompt renders)."""
    first: tuple[float, int] | None = None
    for seed in seeds:
        _, _, record, json_s, json_n = routed(make(seed), recorder, messages)
        first = first or (json_s, json_n)
        if 0 < record["n_large_steps"] < record["n_steps"]:
            return seed, first
    assert first is not None
    return seeds[-1], first


# -- main ------------------------------------------------------------------------------------------


VERSIONS = "import vllm, torch; print(vllm.__version__, torch.__version__)"


def versions(probe: subprocess.Popen[str] | None) -> dict[str, str]:
    """Package versions; ``probe`` is the vLLM environment's Python printing its own."""
    out = package_versions((*CLIENT_PACKAGES, "httpx"))  # httpx: the bare replay
    try:
        assert probe is not None
        stdout, _ = probe.communicate(timeout=120)
        out["vllm"], out["torch"] = stdout.split()[-2:]
    except (AssertionError, ValueError, subprocess.SubprocessError):
        out["vllm"] = "unknown"
    return out


def pair_from_args(args: argparse.Namespace) -> tuple[Backend, Backend, list[LocalServer]]:
    """The servers ``--small-url``/``--large-url`` name, or a local pair started on the tiny
    model (returned, for the caller to stop)."""
    if args.small_url and args.large_url:
        small = Backend(base_url=args.small_url, model=args.small_model)
        return small, Backend(base_url=args.large_url, model=args.large_model), []
    servers = start_pair()
    small, large = (Backend(base_url=s.base_url, model=s.served_name) for s in servers)
    return small, large, servers


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Router overhead against direct requests on vLLM.")
    p.add_argument("--questions", type=int, default=3, help="sample questions (default 3)")
    p.add_argument("--reps", type=int, default=3, help="repetitions per question (default 3)")
    p.add_argument("--threshold", type=float, default=1.5)
    p.add_argument("--max-reasoning-tokens", type=int, default=96)
    p.add_argument("--max-tokens", type=int, default=24)
    p.add_argument("--seeds", type=int, default=6, help="seeds tried per question for a mix")
    p.add_argument("--small-url", default=None, help="a running small server (else start both)")
    p.add_argument("--small-model", default="smollm2-small")
    p.add_argument("--large-url", default=None)
    p.add_argument("--large-model", default="smollm2-large")
    p.add_argument("--output", type=Path, default=RESULTS)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    loads = [load_average()]
    try:  # in the background, while the servers start
        probe: subprocess.Popen[str] | None = subprocess.Popen(
            [str(vllm_python()), "-c", VERSIONS], stdout=subprocess.PIPE, text=True
        )
    except OSError:
        probe = None
    small, large, servers = pair_from_args(args)
    startup = time.perf_counter() - started
    loads.append(load_average())
    print(f"servers ready after {startup:.0f} s, load {loads[-1]}", file=sys.stderr)
    recorder = Recorder()
    samples: list[Sample] = []
    seeds: dict[int, int] = {}
    first_calls: dict[int, tuple[float, int]] = {}
    try:

        def make(seed: int) -> GlimpRouterChatModel:
            return GlimpRouterChatModel(
                small=small,
                large=large,
                threshold=args.threshold,
                seed=seed,
                max_reasoning_tokens=args.max_reasoning_tokens,
                max_tokens=args.max_tokens,
            )

        with recorder.installed(), httpx.Client(timeout=300, trust_env=False) as client:
            for q, question in enumerate(CALIBRATION_QUESTIONS[: args.questions]):
                messages = [SystemMessage(SYSTEM), HumanMessage(question)]
                seed, first = find_seed(make, recorder, messages, range(1, args.seeds + 1))
                seeds[q], first_calls[q] = seed, first
                router = make(seed)
                _, last, _, _, _ = routed(router, recorder, messages)  # warm: seed found, cached
                replay(client, last)  # warm: a run's first replay was once 1.5 s slower
                for rep in range(args.reps):
                    router_first = rep % 2 == 0
                    replay_s, replay_outside, mismatches = 0.0, 0.0, 0
                    if not router_first:
                        replay_s, replay_outside, mismatches = replay(client, last)
                    wall, requests, record, json_s, json_n = routed(router, recorder, messages)
                    same = shape(requests) == shape(last)
                    if router_first or not same:
                        replay_s, replay_outside, mismatches = replay(client, requests)
                    last = requests
                    samples.append(
                        Sample(
                            question=q,
                            rep=rep,
                            order="router first" if router_first or not same else "replay first",
                            router_s=wall,
                            replay_s=replay_s,
                            router_outside_s=wall - sum(r.seconds for r in requests),
                            replay_outside_s=replay_outside,
                            requests=dict(record["requests"]),
                            tokens=dict(record["tokens"]),
                            n_steps=record["n_steps"],
                            n_large_steps=record["n_large_steps"],
                            json_requests=json_n,
                            json_s=json_s,
                            replay_token_mismatches=mismatches,
                            record_latency_s=record["latency_s"],
                        )
                    )
                loads.append(load_average())
                print(f"question {q + 1} done (seed {seed}), load {loads[-1]}", file=sys.stderr)
    finally:
        stop_all(servers)
    elapsed = time.perf_counter() - started
    found = versions(probe)
    report(args, samples, seeds, first_calls, startup, elapsed, loads, bool(servers), found)
    return 0


def report(
    args: argparse.Namespace,
    samples: list[Sample],
    seeds: dict[int, int],
    first_calls: dict[int, tuple[float, int]],
    startup: float,
    elapsed: float,
    loads: list[list[float]],
    started_servers: bool,
    found_versions: dict[str, str],
) -> None:
    def n_requests(s: Sample) -> int:
        return sum(s.requests.values())

    ratios = [s.router_s / s.replay_s for s in samples]
    per_request = [1000 * (s.router_s - s.replay_s) / n_requests(s) for s in samples]
    json_ms = [1000 * s.json_s for s in samples]
    outside = [1000 * (s.router_outside_s - s.replay_outside_s) / n_requests(s) for s in samples]
    first_ms = [1000 * t for t, _ in first_calls.values()]
    rows = []
    for q in sorted(seeds):
        mine = [s for s in samples if s.question == q]
        rows.append(
            [
                q + 1,
                seeds[q],
                f"{statistics.median(s.n_large_steps for s in mine):g}/"
                f"{statistics.median(s.n_steps for s in mine):g}",
                f"{statistics.median(n_requests(s) for s in mine):g}",
                f"{statistics.median(sum(s.tokens.values()) for s in mine):g}",
                f"{statistics.median(s.router_s for s in mine):.3f}",
                f"{statistics.median(s.replay_s for s in mine):.3f}",
                f"{statistics.median(s.router_s / s.replay_s for s in mine):.3f}",
                f"{statistics.median(1000 * (s.router_s - s.replay_s) / n_requests(s) for s in mine):.1f}",  # noqa: E501
                f"{statistics.median(1000 * (s.router_outside_s - s.replay_outside_s) / n_requests(s) for s in mine):.2f}",  # noqa: E501
                f"{1000 * first_calls[q][0]:.1f} ({first_calls[q][1]})",
            ]
        )
    header = [
        "question",
        "seed",
        "large / steps",
        "requests",
        "tokens",
        "router (s)",
        "direct replay (s)",
        "router / direct",
        "client ms / request",
        "outside streams ms / request",
        "JSON requests ms (count), first call",
    ]
    out = [
        f"SmolLM2-135M on two vLLM CPU servers (one core each), threshold {args.threshold}, "
        f"max_reasoning_tokens {args.max_reasoning_tokens}, max_tokens {args.max_tokens}; "
        f"{args.reps} repetitions per question; servers "
        f"{'started here in ' + format(startup, '.0f') + ' s' if started_servers else 'reused'};"
        f" run took {elapsed:.0f} s; {load_summary(loads)}.\n",
        table(header, rows),
        "",
        f"All: router / direct median **{statistics.median(ratios):.3f}** (min "
        f"{min(ratios):.3f}, max {max(ratios):.3f}, n = {len(ratios)}); client overhead "
        f"{statistics.median(per_request):.1f} ms per completions request (median); of which "
        f"with no stream open (the router's serial work, minus the bare client's) "
        f"{statistics.median(outside):.2f} ms. A "
        f"router's first call of a question also asks /v1/models and renders the prompts "
        f"(/tokenize + /detokenize per server): {statistics.median(first_ms):.1f} ms (median); "
        f"later calls of the same question find them cached ({statistics.median(json_ms):.1f} "
        f"ms). Replayed requests that generated another token count than the router read: "
        f"{sum(s.replay_token_mismatches for s in samples)}.",
    ]
    print("\n".join(out))
    results = {
        **run_header(),
        "cpus": os.cpu_count(),
        "versions": found_versions,
        "model": str(tiny_model_dir()),
        "load_average": load_record(loads),
        "startup_s": startup,
        "elapsed_s": elapsed,
        "settings": {
            "threshold": args.threshold,
            "max_reasoning_tokens": args.max_reasoning_tokens,
            "max_tokens": args.max_tokens,
            "repetitions": args.reps,
            "system": SYSTEM,
            "questions": list(CALIBRATION_QUESTIONS[: args.questions]),
            "seeds": seeds,
        },
        "median_router_over_direct": statistics.median(ratios),
        "median_client_ms_per_request": statistics.median(per_request),
        "median_outside_streams_ms_per_request": statistics.median(outside),
        "median_json_ms_per_call": statistics.median(json_ms),
        "first_call_json": {
            q: {"ms": 1000 * t, "requests": n} for q, (t, n) in first_calls.items()
        },
        "samples": [asdict(s) for s in samples],
    }
    print(f"\nRaw numbers: {write_results(args.output, results)}")


if __name__ == "__main__":
    raise SystemExit(main())
