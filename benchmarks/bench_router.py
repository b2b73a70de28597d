"""Benchmark of GlimpRouterChatModel against two scripted, latency-emulating vLLM look-alikes.

What it measures, all in one run and one process (medians over repetitions, and ratios):

1. requests per delegated step and wasted small-model tokens per intervention, from the routing
   record and from the servers' own request logs, at intervention rates 10, 20, 25, 30 and 50 %;
2. router overhead: end-to-end latency / ideal, where the ideal is the emulated server time of
   every completions request the call made; / the servers' own busy time (what the servers'
   clocks say they spent generating, ideal plus their lag); / the "floor" (the ideal plus the lag
   that a bare HTTP client also sees on these servers); where the rest goes (before the first
   request, between requests, after the last); and the client CPU time per step;
3. speedup of the glimpse router (threshold 0.9) over the large-only baseline (threshold 0) at
   each intervention rate, next to the arithmetic ideal speedup of the emulated costs;
4. the streamed glimpse (``probe="stream"``) against a separate 1-token probe
   (``probe="separate"``) at 25 %;
5. throughput of ``abatch`` with 16 and 64 questions at once against the one-question ideal.

The servers are ``scripted_server/server.py`` (real HTTP on loopback), each in a process of its
own (``--servers process``, the default; ``--servers thread`` puts them in threads of this
process, sharing its GIL with the client, as before). They wait ``prefill`` before the first
token and ``decode`` between tokens, on a steady clock (``--pacing steady``, the default: token i
is due prefill + i * decode after the request, as a GPU decodes whatever the HTTP layer does;
``--pacing sleep``: a fresh sleep per token, so timer overshoot adds up); the defaults mimic a
4B small model and a 32B large model on one GPU. Nothing here runs a model. The configurations of
1-4 run interleaved (round-robin over repetitions, order rotated each time) so drift hits all,
after one untimed call each (a router's first call also asks each server for /v1/models).

Run from the repository root::

    .venv/bin/python -m benchmarks.bench_router            # 5 repetitions: about 5 minutes
    .venv/bin/python -m benchmarks.bench_router --quick    # 2 repetitions, 8 at once: 2.5 min

Markdown tables go to stdout, the raw numbers to ``benchmarks/results/bench_router.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
from langchain_core.language_models import LanguageModelInput

from benchmarks._common import (
    CLIENT_PACKAGES,
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
from langchain_glimprouter import Backend, GlimpRouterChatModel
from scripted_server import RequestLog, Script, ScriptedServer, ScriptedServerProcess

RESULTS = results_path("bench_router")
DELIMITER = "\n\n"
RATES = (0.10, 0.20, 0.25, 0.30, 0.50)
SEPARATE_RATE = 0.25
CONCURRENCY_RATE = 0.25
H_EASY, H_HARD = 0.3, 1.5
THRESHOLD = 0.9
TOP_LOGPROBS = 20  # the router's default k, asked of the small server
ABORT_WINDOW_S = 0.001  # the scripted server's least pause between streamed tokens

Probe = Literal["stream", "separate"]
Role = Literal["small", "large"]
Server = ScriptedServer | ScriptedServerProcess
ROLES: tuple[Role, Role] = ("small", "large")


# -- emulation ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Emulation:
    """Emulated server costs and the shape of the synthetic chain."""

    small_decode_s: float = 0.008
    small_prefill_s: float = 0.020
    large_decode_s: float = 0.030
    large_prefill_s: float = 0.060
    steps: int = 12
    step_tokens: int = 24
    """Tokens a step request generates: the step's words plus the delimiter token."""
    answer_tokens: int = 12

    def prefill(self, role: Role) -> float:
        return self.small_prefill_s if role == "small" else self.large_prefill_s

    def decode(self, role: Role) -> float:
        return max(self.small_decode_s if role == "small" else self.large_decode_s, ABORT_WINDOW_S)

    def cost(self, role: Role, tokens: int, aborted: bool = False) -> float:
        """Server time the client waits for: prefill, then one decode gap per token after the first.

        The scripted server sends the first token right after the prefill; a request the client
        aborts (after its first token: a glimpse, or the step that starts with ``</think>``) costs
        the client only the prefill.
        """
        return self.prefill(role) + decode_gaps(tokens, aborted) * self.decode(role)

    def ideal(self, n_hard: int, threshold: float, probe: Probe) -> float:
        """Arithmetic ideal latency of one call: the sum of its requests' emulated costs."""
        t, n_easy = self.step_tokens, self.steps - n_hard
        answer = self.cost("large", self.answer_tokens)
        if threshold == 0:  # large-only: every step, then the "</think>" step, then the answer
            return self.steps * self.cost("large", t) + self.cost("large", 1) + answer
        glimpse = self.cost("small", 1)
        hard = glimpse + self.cost("large", t)
        if probe == "stream":
            easy, end = self.cost("small", t), glimpse
        else:  # a finished 1-token probe, then the step request
            easy, end = glimpse + self.cost("small", t), glimpse + self.cost("small", 1)
        return n_easy * easy + n_hard * hard + end + answer


def decode_gaps(tokens: int, aborted: bool) -> int:
    """Decode gaps the client waits through for a request that generated ``tokens``."""
    return 0 if aborted else max(tokens - 1, 0)


def hard_steps(rate: float, steps: int) -> list[int]:
    """round(rate * steps) step indices spread evenly over the chain (deterministic)."""
    n = round(rate * steps)
    return sorted({math.floor((i + 0.5) * steps / n) for i in range(n)}) if n else []


def step_text(role: Role, k: int, tokens: int) -> str:
    """A step of ``tokens - 1`` words (the delimiter is the last generated token)."""
    return " ".join([role] + [f"s{k}w{j}" for j in range(1, tokens - 1)])


def scripts(emu: Emulation, rate: float) -> tuple[Script, Script]:
    """Small and large scripts: different step texts of equal length, hard steps per ``rate``."""
    words = ["The", "answer", "is", "42"] + [f"a{j}" for j in range(emu.answer_tokens - 4)]
    hard = set(hard_steps(rate, emu.steps))
    h_init = [H_HARD if k in hard else H_EASY for k in range(emu.steps)] + [0.0]
    small = Script(
        steps=[step_text("small", k, emu.step_tokens) for k in range(emu.steps)],
        h_init=h_init,
        answer=" ".join(words),
        delimiter=DELIMITER,
    )
    large = Script(
        steps=[step_text("large", k, emu.step_tokens) for k in range(emu.steps)],
        h_init=H_EASY,
        answer=" ".join(words),
        delimiter=DELIMITER,
    )
    return small, large


# -- measuring one call ------------------------------------------------------------------------


def request_kind(prompt: str, n_steps: int) -> str:
    """'answer', 'end' (the request that finds ``</think>``) or 'step<k>', from the prompt."""
    _, think, body = prompt.rpartition("<think>\n")
    body = body if think else ""
    if "</think>" in body:
        return "answer"
    k = body.count(DELIMITER)
    return "end" if k >= n_steps else f"step{k}"


@dataclass
class Sample:
    """One measured call."""

    latency_s: float
    """Wall time around ``invoke``."""
    ideal_s: float
    """Sum of the emulated costs of the call's completions requests, from the server logs."""
    cpu_s: float
    """``time.thread_time()`` of the calling thread around ``invoke``."""
    busy_s: float
    """The servers' own busy time: the sum, over the call's completions requests, of the time
    from the start of the generation (before the prefill) to the last token, by the servers'
    clocks. Requests never overlap within one call."""
    before_s: float
    """From the start of ``invoke`` to the start of the first completions request (LangChain,
    the prompt renders: /tokenize and /detokenize on each server, the first request)."""
    between_s: float
    """The sum of the pauses between one request's last token and the next one's start: the
    client's critical path (read the last events, decide, build and send the next request)."""
    after_s: float
    """From the last token of the last request to the return of ``invoke``."""
    record_latency_s: float
    n_steps: int
    n_large_steps: int
    record_requests: dict[str, int]
    server_requests: dict[str, int]
    decode_gaps: dict[str, int]
    """Decode gaps the client waited through, per server (for the floor)."""
    step_requests_delegated: int
    step_requests_intervened: int
    record_wasted: int
    server_wasted: int
    """Server side: generated tokens of the aborted small glimpses of intervened steps and of the
    1-token probes (``probe="separate"``)."""
    aborted_small: int
    correct: bool


def logs_of(server: Server) -> list[RequestLog]:
    if not server.wait_idle(10.0):
        raise RuntimeError(f"server {server.model!r} did not go idle")
    return list(server.requests)


def timeline(logs: dict[Role, list[RequestLog]], t0: float, t1: float) -> tuple[float, ...]:
    """(busy, before, between, after) of one call that ran from ``t0`` to ``t1`` (seconds)."""
    spans = sorted(
        (g.started_s, g.last_token_s or g.started_s)
        for role in ROLES
        for g in logs[role]
        if g.started_s is not None
    )
    if not spans:
        return 0.0, t1 - t0, 0.0, 0.0
    busy = sum(end - start for start, end in spans)
    between = sum(nxt[0] - cur[1] for cur, nxt in itertools.pairwise(spans))
    return busy, spans[0][0] - t0, between, t1 - spans[-1][1]


def sample_from(
    emu: Emulation,
    record: dict[str, Any],
    logs: dict[Role, list[RequestLog]],
    times: tuple[float, float, float],
    correct: bool,
) -> Sample:
    t0, t1, cpu = times
    busy, before, between, after = timeline(logs, t0, t1)
    writers = {f"step{s['index']}": s["model"] for s in record["steps"]}
    ideal = 0.0
    per_writer = {"small": 0, "large": 0}
    gaps = {"small": 0, "large": 0}
    aborted = wasted = 0
    for role in ROLES:
        for log in logs[role]:
            ideal += emu.cost(role, log.generated_tokens, aborted=not log.finished)
            gaps[role] += decode_gaps(log.generated_tokens, not log.finished)
            kind = request_kind(log.prompt, emu.steps)
            if kind in writers:
                per_writer[writers[kind]] += 1
            if role == "small" and not log.finished:
                aborted += 1
            glimpse = not log.finished and writers.get(kind) == "large"
            if role == "small" and (glimpse or log.params.get("max_tokens") == 1):
                wasted += log.generated_tokens
    return Sample(
        latency_s=t1 - t0,
        ideal_s=ideal,
        cpu_s=cpu,
        busy_s=busy,
        before_s=before,
        between_s=between,
        after_s=after,
        record_latency_s=record["latency_s"],
        n_steps=record["n_steps"],
        n_large_steps=record["n_large_steps"],
        record_requests=dict(record["requests"]),
        server_requests={role: len(logs[role]) for role in ROLES},
        decode_gaps=gaps,
        step_requests_delegated=per_writer["small"],
        step_requests_intervened=per_writer["large"],
        record_wasted=record["wasted_small_tokens"],
        server_wasted=wasted,
        aborted_small=aborted,
        correct=correct,
    )


@dataclass
class Config:
    """One router configuration, measured once per repetition."""

    name: str
    rate: float
    threshold: float
    probe: Probe
    small: Server
    large: Server
    router: GlimpRouterChatModel
    samples: list[Sample] = field(default_factory=list)

    def expected_large(self, steps: int) -> int:
        return steps if self.threshold == 0 else len(hard_steps(self.rate, steps))


def make_router(
    small: Server, large: Server, threshold: float, probe: Probe
) -> GlimpRouterChatModel:
    return GlimpRouterChatModel(
        small=Backend(base_url=small.base_url, model=small.model),
        large=Backend(base_url=large.base_url, model=large.model),
        threshold=threshold,
        probe=probe,
    )


def fresh(*servers: Server) -> None:
    for server in servers:
        server.wait_idle(10.0)
        server.reset()


def run_once(emu: Emulation, cfg: Config, question: str) -> Sample:
    fresh(cfg.small, cfg.large)
    cpu0, t0 = time.thread_time(), time.perf_counter()
    msg = cfg.router.invoke(question)
    t1, cpu = time.perf_counter(), time.thread_time() - cpu0
    record = msg.response_metadata["glimprouter"]
    correct = (
        str(msg.content).startswith("The answer is 42")
        and record["n_steps"] == emu.steps
        and record["n_large_steps"] == cfg.expected_large(emu.steps)
    )
    logs: dict[Role, list[RequestLog]] = {"small": logs_of(cfg.small), "large": logs_of(cfg.large)}
    return sample_from(emu, record, logs, (t0, t1, cpu), correct)


# -- the floor: what a bare HTTP client sees on the same servers --------------------------------


@dataclass
class Calibration:
    """Direct requests, no router: lag over the emulated cost per request and per decode gap."""

    short_lag_s: dict[str, list[float]] = field(default_factory=lambda: {r: [] for r in ROLES})
    """A 1-token request: wall time - prefill."""
    gap_lag_s: dict[str, list[float]] = field(default_factory=lambda: {r: [] for r in ROLES})
    """A whole step: (wall time - emulated cost - short lag) / decode gaps."""

    def per_request(self, role: Role) -> float:
        return statistics.median(self.short_lag_s[role])

    def per_gap(self, role: Role) -> float:
        return statistics.median(self.gap_lag_s[role])

    def floor(self, sample: Sample) -> float:
        """The sample's ideal plus the lag a bare client would have seen on its requests."""
        return sample.ideal_s + sum(
            sample.server_requests[r] * self.per_request(r)
            + sample.decode_gaps[r] * self.per_gap(r)
            for r in ROLES
        )


def direct(client: httpx.Client, server: Server, role: Role, prompt: str, n: int) -> float:
    """Wall time of one streamed step request, shaped like the router's, read to its end."""
    body: dict[str, Any] = {
        "model": server.model,
        "prompt": prompt,
        "max_tokens": n,
        "stream": True,
        "stream_options": {"include_usage": True, "continuous_usage_stats": True},
        "add_special_tokens": False,
        "stop": [DELIMITER],
        "temperature": 0.6,
        "top_p": 0.95,
    }
    if role == "small":
        body["logprobs"] = TOP_LOGPROBS
    t0 = time.perf_counter()
    with client.stream("POST", f"{server.base_url}/completions", json=body) as response:
        for _ in response.iter_lines():
            pass
    return time.perf_counter() - t0


def calibrate(emu: Emulation, cal: Calibration, servers: dict[Role, Server], rep: int) -> None:
    with httpx.Client(timeout=60, trust_env=False) as client:
        for role in ROLES:
            server = servers[role]
            prompt = f"calibration {rep}<think>\n"
            fresh(server)
            short = direct(client, server, role, prompt, 1) - emu.cost(role, 1)
            full = direct(client, server, role, prompt, 10 * emu.step_tokens)
            n = logs_of(server)[-1].generated_tokens
            cal.short_lag_s[role].append(short)
            gaps = decode_gaps(n, False)
            cal.gap_lag_s[role].append((full - emu.cost(role, n) - short) / max(gaps, 1))


# -- concurrency -------------------------------------------------------------------------------


@dataclass
class BatchSample:
    """One timed ``abatch``."""

    size: int
    wall_s: float
    ideal_per_question_s: float
    median_question_latency_s: float
    max_question_latency_s: float
    client_cpu_s: float
    """CPU time of this process during the batch: the router alone with ``--servers process``,
    the router and both servers (sharing one GIL) with ``--servers thread``."""
    server_cpu_s: dict[str, float] | None
    """CPU time of each server's process during the batch (``--servers process`` only)."""
    median_server_lag_ms: float
    """Median over the batch's requests of the server's own time minus the emulated cost."""
    server_requests: dict[str, int]
    correct: bool
    floor_wall_s: float | None = None
    """Wall time of the same batch replayed by a bare client (:func:`replay_batch`), if asked."""


def server_cpu(servers: dict[Role, Server]) -> dict[str, float] | None:
    cpus: dict[str, float] = {
        r: s.cpu_s for r, s in servers.items() if isinstance(s, ScriptedServerProcess)
    }
    return cpus if len(cpus) == len(servers) else None


class _Connection:
    """A minimal HTTP/1.1 client on one kept-alive connection (asyncio streams, no parsing
    beyond finding where an answer ends): the least CPU a client can spend on these requests."""

    def __init__(self, server: Server) -> None:
        self.host, port = server.root_url.removeprefix("http://").split(":")
        self.port = int(port)
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def send(self, path: str, body: dict[str, Any]) -> asyncio.StreamReader:
        if self.streams is None:
            self.streams = await asyncio.open_connection(self.host, self.port)
        reader, writer = self.streams
        data = json.dumps(body).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n"
        )
        writer.write(head.encode() + data)
        return reader

    async def json(self, path: str, body: dict[str, Any]) -> Any:
        """A JSON answer (uvicorn sends it with a Content-Length)."""
        reader = await self.send(path, body)
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        return json.loads(await reader.readexactly(length))

    async def stream(self, path: str, body: dict[str, Any], abort: bool) -> None:
        """A streamed answer (chunked) read to its last chunk, or up to its first event and
        then the connection closed (the server aborts the request)."""
        reader = await self.send(path, body)
        read = b""
        while not read.endswith(b"\r\n0\r\n\r\n"):
            read += await reader.read(65536)
            if abort and b"data:" in read:
                await self.close()
                return

    async def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            self.streams = None


async def _replay_question(
    servers: dict[Role, Server], question: str, requests: list[tuple[Role, RequestLog]]
) -> None:
    """One question's HTTP work with no router: the prompt rendered on both servers at once
    (``/tokenize`` then ``/detokenize``), then its completions requests in order, each as the
    router sent it; a request the router aborted is closed after its first token."""
    connections = {role: _Connection(servers[role]) for role in ROLES}

    async def render(role: Role) -> None:
        server, connection = servers[role], connections[role]
        messages = [{"role": "user", "content": question}]
        body = {"model": server.model, "messages": messages, "add_generation_prompt": True}
        ids = await connection.json("/tokenize", body)
        await connection.json("/detokenize", {"model": server.model, "tokens": ids["tokens"]})

    try:
        await asyncio.gather(*(render(role) for role in ROLES))
        for role, log in requests:
            body = {**log.params, "prompt": log.prompt, "stream": True}
            await connections[role].stream("/v1/completions", body, abort=not log.finished)
    finally:
        for connection in connections.values():
            await connection.close()


async def replay_batch(
    servers: dict[Role, Server], questions: Sequence[str], logs: dict[Role, list[RequestLog]]
) -> float:
    """Wall time of a batch's requests (``logs``, from the servers) replayed by a minimal
    client (:class:`_Connection`, two connections per question), all questions at once: the
    floor of the batch, what the servers and HTTP cost with no router and next to no client
    (the logs must come from the batch of ``questions``)."""
    per_question: dict[str, list[tuple[Role, RequestLog]]] = {q: [] for q in questions}
    for role in ROLES:
        for log in logs[role]:
            question = next(q for q in questions if q in log.prompt)
            per_question[question].append((role, log))
    for requests in per_question.values():
        requests.sort(key=lambda item: item[1].received_s or 0.0)
    fresh(*servers.values())
    t0 = time.perf_counter()
    await asyncio.gather(*(_replay_question(servers, q, r) for q, r in per_question.items()))
    return time.perf_counter() - t0


async def run_batch(
    emu: Emulation, cfg: Config, size: int, rep: int, replay: bool = False
) -> BatchSample:
    """One ``abatch`` of ``size`` questions, timed; with ``replay``, also its floor."""
    servers: dict[Role, Server] = {"small": cfg.small, "large": cfg.large}
    fresh(cfg.small, cfg.large)
    questions = [f"Batch question {size}.{rep}.{i}: what is 6 times 7?" for i in range(size)]
    inputs: list[LanguageModelInput] = list(questions)
    cpu0, server0, t0 = time.process_time(), server_cpu(servers), time.perf_counter()
    msgs = await cfg.router.abatch(inputs, config={"max_concurrency": size})
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    server1 = server_cpu(servers)
    logs: dict[Role, list[RequestLog]] = {r: logs_of(s) for r, s in servers.items()}
    records = [m.response_metadata["glimprouter"] for m in msgs]
    costs = [
        (role, g, emu.cost(role, g.generated_tokens, not g.finished))
        for role in ROLES
        for g in logs[role]
    ]
    lags = [
        1000 * ((g.last_token_s or g.started_s) - g.started_s - cost)
        for _, g, cost in costs
        if g.started_s is not None
    ]
    floor = await replay_batch(servers, questions, logs) if replay else None
    return BatchSample(
        floor_wall_s=floor,
        size=size,
        wall_s=wall,
        ideal_per_question_s=sum(cost for _, _, cost in costs) / size,
        median_question_latency_s=statistics.median(r["latency_s"] for r in records),
        max_question_latency_s=max(r["latency_s"] for r in records),
        client_cpu_s=cpu,
        server_cpu_s=(
            {r: server1[r] - server0[r] for r in server1} if server0 and server1 else None
        ),
        median_server_lag_ms=med(lags),
        server_requests={role: len(logs[role]) for role in ROLES},
        correct=all(
            str(m.content).startswith("The answer is 42")
            and r["n_large_steps"] == cfg.expected_large(emu.steps)
            for m, r in zip(msgs, records, strict=True)
        ),
    )


async def run_batches(
    emu: Emulation, cfg: Config, sizes: Sequence[int], reps: int
) -> list[BatchSample]:
    """``reps`` batches of each size, the sizes interleaved, after an untimed one of 4."""
    await run_batch(emu, cfg, 4, -1)
    return [await run_batch(emu, cfg, size, rep) for rep in range(reps) for size in sizes]


def warm_up() -> None:
    """A routed call, sync and async, on tiny instant servers: LangChain's lazy imports."""
    small_script = Script(steps=["small a", "small b"], h_init=[0.1, 2.0, 0.0])
    with (
        ScriptedServer(small_script, model="warm-small") as small,
        ScriptedServer(Script(steps=["large a", "large b"]), model="warm-large") as large,
    ):
        make_router(small, large, THRESHOLD, "stream").invoke("warm up")

        async def once() -> None:
            await make_router(small, large, THRESHOLD, "stream").abatch(["a", "b"])

        asyncio.run(once())


# -- statistics and tables ---------------------------------------------------------------------


def summarize(emu: Emulation, cfg: Config, cal: Calibration) -> dict[str, Any]:
    s = cfg.samples
    n_hard = cfg.expected_large(emu.steps)
    n_easy = emu.steps - n_hard
    glimpsed = n_hard and cfg.threshold > 0
    ratios = [x.latency_s / x.ideal_s for x in s]
    return {
        "name": cfg.name,
        "target_rate": cfg.rate,
        "threshold": cfg.threshold,
        "probe": cfg.probe,
        "hard_steps": n_hard,
        "actual_rate": med([x.n_large_steps / x.n_steps for x in s]),
        "median_latency_s": med([x.latency_s for x in s]),
        "median_record_latency_s": med([x.record_latency_s for x in s]),
        "median_ideal_s": med([x.ideal_s for x in s]),
        "arithmetic_ideal_s": emu.ideal(n_hard, cfg.threshold, cfg.probe),
        "median_overhead": med(ratios),
        "min_overhead": min(ratios),
        "max_overhead": max(ratios),
        "median_busy_s": med([x.busy_s for x in s]),
        "median_latency_over_busy": med([x.latency_s / x.busy_s for x in s]),
        "median_busy_over_ideal": med([x.busy_s / x.ideal_s for x in s]),
        "median_server_lag_ms_per_request": med(
            [1000 * (x.busy_s - x.ideal_s) / sum(x.server_requests.values()) for x in s]
        ),
        "median_client_ms_per_request": med(
            [1000 * (x.latency_s - x.busy_s) / sum(x.server_requests.values()) for x in s]
        ),
        "median_before_ms": med([1000 * x.before_s for x in s]),
        "median_between_ms": med([1000 * x.between_s for x in s]),
        "median_between_ms_per_gap": med(
            [1000 * x.between_s / max(sum(x.server_requests.values()) - 1, 1) for x in s]
        ),
        "median_after_ms": med([1000 * x.after_s for x in s]),
        "median_floor_s": med([cal.floor(x) for x in s]),
        "median_latency_over_floor": med([x.latency_s / cal.floor(x) for x in s]),
        "median_cpu_ms_per_step": med([1000 * x.cpu_s / x.n_steps for x in s]),
        "requests_per_delegated_step": (
            med([x.step_requests_delegated / n_easy for x in s]) if n_easy else None
        ),
        "requests_per_intervened_step": (
            med([x.step_requests_intervened / n_hard for x in s]) if n_hard else None
        ),
        "step_requests_per_step": med(
            [(x.step_requests_delegated + x.step_requests_intervened) / x.n_steps for x in s]
        ),
        "requests_per_call": med([sum(x.server_requests.values()) for x in s]),
        "record_requests_match_server": all(x.record_requests == x.server_requests for x in s),
        "wasted_per_intervention_record": (
            med([x.record_wasted / x.n_large_steps for x in s]) if glimpsed else None
        ),
        "wasted_per_intervention_server": (
            med([x.server_wasted / x.n_large_steps for x in s]) if glimpsed else None
        ),
        "wasted_per_call_record": med([x.record_wasted for x in s]),
        "wasted_per_call_server": med([x.server_wasted for x in s]),
        "median_aborted_small_per_call": med([x.aborted_small for x in s]),
        "all_correct": all(x.correct for x in s),
    }


# -- main --------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Benchmark the glimpse router on emulated servers.")
    p.add_argument("--reps", type=int, default=None, help="repetitions (default 5; 2 with --quick)")
    p.add_argument("--quick", action="store_true", help="2 repetitions, 8-question concurrency")
    p.add_argument(
        "--concurrency",
        type=lambda text: [int(x) for x in text.split(",")],
        default=None,
        help="questions per abatch, comma-separated (16,64; 8 with --quick)",
    )
    p.add_argument(
        "--servers",
        choices=("process", "thread"),
        default="process",
        help="each scripted server in a process of its own (default) or in a thread of this one",
    )
    p.add_argument(
        "--pacing",
        choices=("steady", "sleep"),
        default="steady",
        help="the servers' token clock: steady (default) or a fresh sleep per token",
    )
    p.add_argument("--small-decode-ms", type=float, default=8.0)
    p.add_argument("--small-prefill-ms", type=float, default=20.0)
    p.add_argument("--large-decode-ms", type=float, default=30.0)
    p.add_argument("--large-prefill-ms", type=float, default=60.0)
    p.add_argument("--steps", type=int, default=12, help="reasoning steps per chain")
    p.add_argument("--step-tokens", type=int, default=24, help="tokens per step (>= 3)")
    p.add_argument("--answer-tokens", type=int, default=12, help="tokens of the answer (>= 5)")
    p.add_argument("--output", type=Path, default=RESULTS, help="where the JSON goes")
    args = p.parse_args(argv)
    if args.reps is None:
        args.reps = 2 if args.quick else 5
    if args.concurrency is None:
        args.concurrency = [8] if args.quick else [16, 64]
    if args.reps < 1 or min(args.concurrency) < 1 or args.steps < 2:
        p.error("--reps and --concurrency must be >= 1, --steps >= 2")
    if args.step_tokens < 3 or args.answer_tokens < 5:
        p.error("--step-tokens must be >= 3, --answer-tokens >= 5")
    return args


def start_all(
    emu: Emulation, args: argparse.Namespace, scripts: Sequence[tuple[Script, Role]]
) -> list[Server]:
    """One server per (script, role), all started before the first is waited for."""
    servers: list[Server] = []
    try:
        for script, role in scripts:
            model = "small-4b" if role == "small" else "large-32b"
            options: dict[str, Any] = {
                "model": model,
                "decode_s": emu.decode(role),
                "prefill_s": emu.prefill(role),
                "steady": args.pacing == "steady",
            }
            if args.servers == "process":
                servers.append(ScriptedServerProcess(script, **options).launch())
            else:
                servers.append(ScriptedServer(script, **options))
        for server in servers:
            server.start()
    except BaseException:
        for server in servers:
            server.stop()
        raise
    return servers


def versions() -> dict[str, str]:
    """Versions of the packages the measurement depends on."""
    return package_versions((*CLIENT_PACKAGES, "uvicorn"))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    emu = Emulation(
        small_decode_s=args.small_decode_ms / 1000,
        small_prefill_s=args.small_prefill_ms / 1000,
        large_decode_s=args.large_decode_ms / 1000,
        large_prefill_s=args.large_prefill_ms / 1000,
        steps=args.steps,
        step_tokens=args.step_tokens,
        answer_tokens=args.answer_tokens,
    )
    started = time.perf_counter()
    loads = [load_average()]
    warm_up()
    roles: list[tuple[Script, Role]] = [(scripts(emu, 0.0)[1], "large")]
    roles += [(scripts(emu, r)[0], "small") for r in RATES]
    large, *small_list = start_all(emu, args, roles)
    smalls = dict(zip(RATES, small_list, strict=True))
    try:
        configs = [
            Config(f"glimpse {r:.0%}", r, THRESHOLD, "stream", smalls[r], large,
                   make_router(smalls[r], large, THRESHOLD, "stream"))
            for r in RATES
        ]  # fmt: skip
        sep = smalls[SEPARATE_RATE]
        configs += [
            Config(f"separate probe {SEPARATE_RATE:.0%}", SEPARATE_RATE, THRESHOLD, "separate",
                   sep, large, make_router(sep, large, THRESHOLD, "separate")),
            Config("large-only", 1.0, 0.0, "stream", sep, large,
                   make_router(sep, large, 0.0, "stream")),
        ]  # fmt: skip
        for warm in configs:  # a router's first call also fetches /v1/models: not timed
            run_once(emu, warm, f"Warm-up question for {warm.name}: what is 6 times 7?")
        cal = Calibration()
        n = len(configs) + 1  # the calibration takes a turn in the round-robin too
        for rep in range(args.reps):
            turns: list[Config | None] = [*configs, None]
            shift = rep % n
            for i, cfg in enumerate(turns[shift:] + turns[:shift]):
                if cfg is None:
                    calibrate(emu, cal, {"small": sep, "large": large}, rep)
                else:
                    question = f"Question {rep}.{i}: what is 6 times 7?"
                    cfg.samples.append(run_once(emu, cfg, question))
            loads.append(load_average())
            print(f"repetition {rep + 1}/{args.reps} done, load {loads[-1]}", file=sys.stderr)
        conc_small = smalls[CONCURRENCY_RATE]
        conc = Config(
            f"abatch glimpse {CONCURRENCY_RATE:.0%}", CONCURRENCY_RATE, THRESHOLD, "stream",
            conc_small, large, make_router(conc_small, large, THRESHOLD, "stream"),
        )  # fmt: skip
        batch_reps = min(args.reps, 3)
        batches = asyncio.run(run_batches(emu, conc, args.concurrency, batch_reps))
        loads.append(load_average())
    finally:
        for server in [large, *smalls.values()]:
            server.stop()
    elapsed = time.perf_counter() - started
    report(emu, args, configs, cal, batches, elapsed, loads)
    return 0


def report(
    emu: Emulation,
    args: argparse.Namespace,
    configs: list[Config],
    cal: Calibration,
    batches: list[BatchSample],
    elapsed: float,
    loads: list[list[float]],
) -> None:
    summaries = {cfg.name: summarize(emu, cfg, cal) for cfg in configs}
    routed = [summaries[c.name] for c in configs if c.probe == "stream" and c.threshold > 0]
    base = summaries["large-only"]
    stream = summaries[f"glimpse {SEPARATE_RATE:.0%}"]
    separate = summaries[f"separate probe {SEPARATE_RATE:.0%}"]
    out: list[str] = [
        f"Emulated servers: small prefill {emu.small_prefill_s * 1000:g} ms + "
        f"{emu.small_decode_s * 1000:g} ms/token, large prefill {emu.large_prefill_s * 1000:g} "
        f"ms + {emu.large_decode_s * 1000:g} ms/token; {emu.steps} steps x {emu.step_tokens} "
        f"tokens, answer {emu.answer_tokens} tokens; threshold {THRESHOLD}; "
        f"{args.reps} repetitions; servers: {args.servers}, pacing: {args.pacing}; "
        f"run took {elapsed:.0f} s; {load_summary(loads)}."
    ]

    out.append("\n### 1. Requests per step and wasted small tokens (probe=stream)\n")
    out.append(
        table(
            [
                "target rate",
                "hard steps",
                "actual rate",
                "requests / delegated step",
                "requests / intervened step",
                "wasted tokens / intervention (record)",
                "(server log)",
                "aborted small requests / call",
                "record = server counts",
            ],
            [
                [
                    f"{s['target_rate']:.0%}",
                    f"{s['hard_steps']}/{emu.steps}",
                    f"{s['actual_rate']:.1%}",
                    s["requests_per_delegated_step"],
                    s["requests_per_intervened_step"],
                    s["wasted_per_intervention_record"],
                    s["wasted_per_intervention_server"],
                    s["median_aborted_small_per_call"],
                    "yes" if s["record_requests_match_server"] else "NO",
                ]
                for s in routed
            ],
        )
    )

    out.append("\n### 2. Router overhead (end-to-end latency / ideal server time)\n")
    out.append(
        table(
            [
                "configuration",
                "median latency (s)",
                "median ideal (s)",
                "latency / ideal (median)",
                "min – max",
                "latency / servers' busy time",
                "latency / floor",
                "server lag ms / request",
                "client ms / request",
                "client CPU ms / step",
                "requests / call",
            ],
            [
                [
                    s["name"],
                    s["median_latency_s"],
                    s["median_ideal_s"],
                    s["median_overhead"],
                    f"{s['min_overhead']:.3f} – {s['max_overhead']:.3f}",
                    s["median_latency_over_busy"],
                    s["median_latency_over_floor"],
                    s["median_server_lag_ms_per_request"],
                    s["median_client_ms_per_request"],
                    s["median_cpu_ms_per_step"],
                    s["requests_per_call"],
                ]
                for s in summaries.values()
            ],
        )
    )
    out.append(
        "\nWhere the time outside the servers goes (medians, ms per call): before the first "
        "completions request, between requests (all gaps, and per gap), after the last token.\n"
    )
    out.append(
        table(
            ["configuration", "before", "between", "per gap", "after", "servers' lag"],
            [
                [
                    s["name"],
                    s["median_before_ms"],
                    s["median_between_ms"],
                    s["median_between_ms_per_gap"],
                    s["median_after_ms"],
                    1000 * (s["median_busy_s"] - s["median_ideal_s"]),
                ]
                for s in summaries.values()
            ],
        )
    )
    floor = {
        role: {
            "per_request_ms": 1000 * cal.per_request(role),
            "per_decode_gap_ms": 1000 * cal.per_gap(role),
        }
        for role in ROLES
    }
    out.append(
        "\nFloor = ideal + the lag a bare httpx client sees on the same servers (median of "
        f"{args.reps} direct requests each): small {floor['small']['per_request_ms']:.2f} ms "
        f"per request + {floor['small']['per_decode_gap_ms']:.3f} ms per decode gap, large "
        f"{floor['large']['per_request_ms']:.2f} ms + {floor['large']['per_decode_gap_ms']:.3f}"
        " ms."
    )

    speedups: list[dict[str, Any]] = []
    for s in routed:
        measured = base["median_latency_s"] / s["median_latency_s"]
        ideal = base["arithmetic_ideal_s"] / s["arithmetic_ideal_s"]
        floor_speedup = base["median_floor_s"] / s["median_floor_s"]
        speedups.append(
            {"target_rate": s["target_rate"], "actual_rate": s["actual_rate"],
             "large_only_s": base["median_latency_s"], "routed_s": s["median_latency_s"],
             "measured": measured, "ideal": ideal, "measured_over_ideal": measured / ideal,
             "floor": floor_speedup}
        )  # fmt: skip
    out.append("\n### 3. Speedup over large-only (threshold 0 vs 0.9)\n")
    out.append(
        table(
            [
                "target rate",
                "actual rate",
                "large-only median (s)",
                "glimpse median (s)",
                "measured speedup",
                "ideal speedup",
                "measured / ideal",
                "floor speedup",
            ],
            [
                [
                    f"{x['target_rate']:.0%}",
                    f"{x['actual_rate']:.1%}",
                    x["large_only_s"],
                    x["routed_s"],
                    f"{x['measured']:.2f}x",
                    f"{x['ideal']:.2f}x",
                    x["measured_over_ideal"],
                    f"{x['floor']:.2f}x",
                ]
                for x in speedups
            ],
        )
    )

    sep_ratio = separate["median_latency_s"] / stream["median_latency_s"]
    sep_ideal = separate["arithmetic_ideal_s"] / stream["arithmetic_ideal_s"]
    out.append(f"\n### 4. Streamed glimpse vs separate probe ({SEPARATE_RATE:.0%} intervention)\n")
    out.append(
        table(
            [
                "probe",
                "median latency (s)",
                "latency / ideal",
                "requests / step",
                "requests / delegated step",
                "requests / intervened step",
                "requests / call",
                "wasted small tokens / call (record / server)",
            ],
            [
                [
                    s["probe"],
                    s["median_latency_s"],
                    s["median_overhead"],
                    s["step_requests_per_step"],
                    s["requests_per_delegated_step"],
                    s["requests_per_intervened_step"],
                    s["requests_per_call"],
                    f"{s['wasted_per_call_record']:g} / {s['wasted_per_call_server']:g}",
                ]
                for s in (stream, separate)
            ],
        )
    )
    out.append(
        f"\nseparate / stream latency: {sep_ratio:.3f} measured, {sep_ideal:.3f} arithmetic ideal."
    )

    one_ideal = emu.ideal(len(hard_steps(CONCURRENCY_RATE, emu.steps)), THRESHOLD, "stream")
    concurrency: list[dict[str, Any]] = []
    for size in args.concurrency:
        runs = [b for b in batches if b.size == size]
        wall = med([b.wall_s for b in runs])
        server_cpus = [b.server_cpu_s for b in runs if b.server_cpu_s is not None]
        concurrency.append(
            {
                "concurrency": size,
                "repetitions": len(runs),
                "median_wall_s": wall,
                "throughput_qps": size / wall,
                "ideal_throughput_qps": size / one_ideal,
                "throughput_over_ideal": one_ideal / wall,
                "one_question_ideal_s": one_ideal,
                "wall_over_one_question_ideal": wall / one_ideal,
                "one_at_a_time_latency_s": stream["median_latency_s"],
                "speedup_over_one_at_a_time": size * stream["median_latency_s"] / wall,
                "median_question_latency_s": med([b.median_question_latency_s for b in runs]),
                "max_question_latency_s": med([b.max_question_latency_s for b in runs]),
                "client_cpu_over_wall": med([b.client_cpu_s / b.wall_s for b in runs]),
                "client_cpu_ms_per_question": med([1000 * b.client_cpu_s / size for b in runs]),
                "server_cpu_over_wall": (
                    {
                        r: med([c[r] / b.wall_s for b, c in zip(runs, server_cpus, strict=True)])
                        for r in ROLES
                    }
                    if len(server_cpus) == len(runs) and runs
                    else None
                ),
                "median_server_lag_ms_per_request": med([b.median_server_lag_ms for b in runs]),
                "all_correct": all(b.correct for b in runs),
            }
        )
    out.append(
        f"\n### 5. Concurrency: {', '.join(map(str, args.concurrency))} questions at once "
        f"(abatch, glimpse {CONCURRENCY_RATE:.0%}, median of {min(args.reps, 3)} batches each)\n"
    )
    out.append(
        table(
            [
                "questions",
                "median wall (s)",
                "throughput (q/s)",
                "ideal throughput (q/s)",
                "throughput / ideal",
                "median question latency (s)",
                "client CPU / wall",
                "server CPU / wall (small, large)",
                "server lag ms / request",
                "vs one at a time",
            ],
            [
                [
                    c["concurrency"],
                    c["median_wall_s"],
                    c["throughput_qps"],
                    c["ideal_throughput_qps"],
                    c["throughput_over_ideal"],
                    c["median_question_latency_s"],
                    c["client_cpu_over_wall"],
                    (
                        f"{c['server_cpu_over_wall']['small']:.2f}, "
                        f"{c['server_cpu_over_wall']['large']:.2f}"
                        if c["server_cpu_over_wall"]
                        else None
                    ),
                    c["median_server_lag_ms_per_request"],
                    f"{c['speedup_over_one_at_a_time']:.1f}x",
                ]
                for c in concurrency
            ],
        )
    )
    checks = all(s["all_correct"] for s in summaries.values()) and all(
        c["all_correct"] for c in concurrency
    )
    out.append(f"\nEvery route, request count and answer as scripted: {'yes' if checks else 'NO'}.")
    print("\n".join(out))

    results = {
        **run_header(),
        "cpus": os.cpu_count(),
        "load_average": load_record(loads),
        "versions": versions(),
        "servers": args.servers,
        "pacing": args.pacing,
        "elapsed_s": elapsed,
        "repetitions": args.reps,
        "emulation": asdict(emu) | {"threshold": THRESHOLD, "h_easy": H_EASY, "h_hard": H_HARD},
        "floor": floor,
        "summaries": summaries,
        "speedup": speedups,
        "stream_vs_separate": {"measured": sep_ratio, "ideal": sep_ideal},
        "concurrency": concurrency,
        "all_correct": checks,
        "samples": {cfg.name: [asdict(x) for x in cfg.samples] for cfg in configs},
        "calibration": asdict(cal),
        "batches": [asdict(b) for b in batches],
    }
    print(f"\nRaw numbers: {write_results(args.output, rounded(results))}")


if __name__ == "__main__":
    raise SystemExit(main())
