"""The ``glimprouter`` command: ``demo`` (local servers on the tiny model), ``ask``, ``calibrate``,
``serve`` and ``bench``.

``demo`` and ``ask`` print the same view: one line per routed step as it finishes, the answer as
it streams, and a summary of the routing record. They use the public API like any user.
``calibrate`` finds the threshold that sends a wanted share of step starts to the large model.
``serve`` starts a small and a large vLLM server with the flags the router needs and prints the
``GlimpRouterChatModel(...)`` that uses them. ``bench`` routes a question set (the shipped
arithmetic set, or a JSONL file) through two running servers or a local pair, grades the
answers and writes one JSON line per question, a summary, and for a threshold sweep
``sweep.csv`` with its plots; ``bench --analyze`` compares recorded first-token and step
entropies (see docs/bench.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shlex
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from langchain_core.messages import HumanMessage, SystemMessage
from pydantic import ValidationError

from langchain_glimprouter.backend import Backend
from langchain_glimprouter.calibration import (
    CALIBRATION_QUESTIONS,
    Calibration,
    calibrate,
    load_questions,
)
from langchain_glimprouter.chat_models import GlimpRouterChatModel
from langchain_glimprouter.cli.bench import plots as bench_plots
from langchain_glimprouter.cli.bench import runner as bench
from langchain_glimprouter.cli.bench.grading import BenchItem, default_items_path, load_items
from langchain_glimprouter.cli.servers import (
    LocalServer,
    ServeError,
    ServerExited,
    check_same_vocabulary,
    is_local_model,
    port_in_use,
    stop_all,
    tiny_model_dir,
    vllm_python,
    wait_all_ready,
)
from langchain_glimprouter.errors import GlimpRouterError, InvalidArgumentError
from langchain_glimprouter.routing.entropy import ESTIMATORS
from langchain_glimprouter.routing.strategies import STRATEGIES

DEMO_SYSTEM = (
    "You are a careful math tutor. Reason step by step and put a blank line between steps."
)
DEMO_QUESTIONS = [
    "Tom has 3 boxes with 12 apples in each box. He gives away 7 apples. How many are left?",
    "A train travels 60 km per hour for 2.5 hours. How far does it go?",
]
DEMO_NOTICE = (
    "NOTE: this is a wiring demo. Both servers run SmolLM2-135M-Instruct, a 135M model that is "
    "not a reasoning model: the tokens, logprobs and routing decisions are real, the reasoning "
    "quality is not what GlimpRouter is for."
)


def _messages(question: str, system: str | None) -> list[Any]:
    messages: list[Any] = [SystemMessage(system)] if system else []
    return [*messages, HumanMessage(question)]


def print_routed(
    router: GlimpRouterChatModel, question: str, system: str | None, out: TextIO
) -> dict[str, Any]:
    """Stream one routed answer to ``out``; return the routing record."""
    record: dict[str, Any] = {}
    answering = False
    for chunk in router.stream(_messages(question, system)):
        for step in chunk.response_metadata.get("glimprouter_steps", []):
            h = "   -  " if step["h_init"] is None else f"{step['h_init']:6.3f}"
            text = " ".join(step["text"].split())
            text = text if len(text) <= 60 else text[:57] + "..."
            print(
                f"  step {step['index']:>2}  {step['model']:<5}  H_init={h}  "
                f"first={step['first_token']!r:<12} {step['tokens']:>4} tok  {text}",
                file=out,
            )
        if chunk.content:
            if not answering:
                print("\nAnswer (large model): ", end="", file=out)
                answering = True
            print(chunk.content, end="", file=out, flush=True)
        if "glimprouter" in chunk.response_metadata:
            record = chunk.response_metadata["glimprouter"]
    print("\n", file=out)
    print(
        f"Summary: {record['n_steps']} steps, {record['n_large_steps']} by the large model "
        f"(intervention rate {record['intervention_rate']:.0%}), chain ended by "
        f"{record['chain_end']}.\n"
        f"  tokens   small={record['tokens']['small']:<6} large={record['tokens']['large']:<6} "
        f"(wasted small glimpse tokens: {record['wasted_small_tokens']})\n"
        f"  requests small={record['requests']['small']:<6} large={record['requests']['large']}\n"
        f"  latency  {record['latency_s']:.2f} s  (threshold {record['threshold']:.3f} nats, "
        f"{record['estimator']}, probe={record['probe']})",
        file=out,
    )
    return record


def _router(args: argparse.Namespace, small: Backend, large: Backend) -> GlimpRouterChatModel:
    return GlimpRouterChatModel(
        small=small,
        large=large,
        threshold=math.inf if args.threshold is None else args.threshold,
        probe=args.probe,
        entropy_estimator=args.estimator,
        max_reasoning_tokens=args.max_reasoning_tokens,
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        seed=args.seed,
        timeout=args.timeout,
    )


def _demo(args: argparse.Namespace, out: TextIO) -> int:
    from langchain_glimprouter.cli.servers import start_pair

    print(DEMO_NOTICE, file=out)
    print("Starting two vLLM CPU servers on SmolLM2-135M (about 2 minutes)...", file=out)
    servers = start_pair()
    try:
        small, large = (Backend(base_url=s.base_url, model=s.served_name) for s in servers)
        print(f"  small: {small.base_url}   large: {large.base_url}\n", file=out)
        router = _router(args, small, large)
        if args.threshold is None:
            warm_up = [_messages(q, DEMO_SYSTEM) for q in DEMO_QUESTIONS[1:]]
            found = calibrate(router, warm_up, target_rate=1.0 - args.quantile)
            print(
                f"Threshold: the {args.quantile:.0%} quantile of SmolLM2's own first-token "
                f"entropies on a warm-up question ({found.n_steps} steps, median "
                f"{found.quantiles[0.5]:.2f} nats) = {found.threshold:.3f} nats.\n"
                f"  SmolLM2 is no reasoning model: at the paper's 0.9 nats, "
                f"{found.rate_at(0.9):.0%} of these steps would go to the large model.\n",
                file=out,
            )
            router = router.model_copy(update={"threshold": found.threshold})
        print(f"Question: {args.question}\n", file=out)
        print_routed(router, args.question, DEMO_SYSTEM, out)
    finally:
        for server in servers:
            server.stop()
    return 0


def _ask(args: argparse.Namespace, out: TextIO) -> int:
    small = Backend(base_url=args.small_url, model=args.small_model)
    large = Backend(base_url=args.large_url, model=args.large_model)
    print_routed(_router(args, small, large), args.question, args.system, out)
    return 0


# -- glimprouter calibrate -----------------------------------------------------------------------


def calibration_report(found: Calibration, small: Backend, large: Backend) -> str:
    """What ``glimprouter calibrate`` prints: the threshold, the sample, the router to use."""
    tau = found.rounded_threshold()
    above = round(found.realised_rate * found.n_steps)
    quantiles = "  ".join(f"{q:.0%} {v:.3f}" for q, v in found.quantiles.items())
    return (
        f"Sample: {found.n_questions} questions, {found.n_steps} step starts, every step on the "
        "small model (threshold=inf).\n"
        f"H_init quantiles (nats): {quantiles}\n\n"
        f"Threshold for a large-step rate of {found.target_rate * 100:g}%: {tau} nats\n"
        f"  realised on the sample: {found.realised_rate:.1%} ({above} of {found.n_steps} step "
        "starts above it)\n"
        + (
            f"  bootstrap 95% interval over the questions: {found.threshold_ci[0]:.3f}–"
            f"{found.threshold_ci[1]:.3f} nats (wide: calibrate on more questions)\n\n"
            if found.threshold_ci
            else "\n"
        )
        + "Use it with:\n\n"
        "from langchain_glimprouter import Backend, GlimpRouterChatModel\n\n"
        "router = GlimpRouterChatModel(\n"
        f"    small=Backend(base_url={json.dumps(small.base_url)}, "
        f"model={json.dumps(small.model)}),\n"
        f"    large=Backend(base_url={json.dumps(large.base_url)}, "
        f"model={json.dumps(large.model)}),\n"
        f"    threshold={tau},\n)"
    )


def _calibrate(args: argparse.Namespace, out: TextIO) -> int:
    small = Backend(base_url=args.small_url, model=args.small_model)
    large = Backend(base_url=args.large_url, model=args.large_model)
    texts = load_questions(args.questions) if args.questions else list(CALIBRATION_QUESTIONS)
    questions = [_messages(q, args.system) for q in texts]
    found = calibrate(
        _router(args, small, large),
        questions,
        args.target_rate,
        max_concurrency=args.concurrency,
    )
    if args.json:
        print(json.dumps(found.to_dict()), file=out)
    else:
        print(calibration_report(found, small, large), file=out)
    return 0


# -- glimprouter serve ----------------------------------------------------------------------------


def _gpu_split(text: str) -> tuple[float, float]:
    try:
        small, large = (float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected SMALL,LARGE fractions such as 0.25,0.65, got {text!r}"
        ) from None
    if not (0 < small <= 1 and 0 < large <= 1 and small + large <= 1):
        raise argparse.ArgumentTypeError(
            f"each fraction must be in (0, 1] and both together at most 1, got {text!r}"
        )
    return small, large


def _model_arg(model: str) -> str:
    """A local folder as an absolute path (vLLM does not expand ``~``); a hub id unchanged."""
    return str(Path(model).expanduser().resolve()) if is_local_model(model) else model


def serve_pair(args: argparse.Namespace) -> tuple[LocalServer, LocalServer, list[str]]:
    """The two servers ``glimprouter serve`` would start, and its warnings (nothing starts).

    Raises :class:`ServeError` for a pair it refuses (ports, memory split, vocabularies).
    """
    small = _model_arg(args.small) if args.small else str(tiny_model_dir())
    large = _model_arg(args.large) if args.large else str(tiny_model_dir())
    small_name = args.small_name or args.small or "smollm2-small"
    large_name = args.large_name or args.large or "smollm2-large"
    if args.small_port == args.large_port:
        raise ServeError(f"--small-port and --large-port are both {args.small_port}")
    if small_name == large_name:
        raise ServeError(
            f"both servers would be served as {small_name!r}; set --small-name / --large-name"
        )
    cpu = args.cpu if args.cpu is not None else shutil.which("nvidia-smi") is None
    if cpu and args.gpu_memory_split:
        raise ServeError("--gpu-memory-split is for GPUs; leave it out with --cpu")
    warnings: list[str] = []
    if args.speculative:
        warnings += check_same_vocabulary(small, large, force=args.force_speculative)
    split = args.gpu_memory_split or (None, None)
    two_cores = (os.cpu_count() or 1) > 1
    servers = tuple(
        LocalServer(
            served_name=name,
            port=port,
            cpu=core if cpu else None,
            model=model,
            host=args.host,
            max_model_len=args.max_model_len,
            max_logprobs=max(args.top_logprobs, args.max_logprobs or 0),
            cpu_build=cpu,
            gpu_memory_utilization=fraction,
            draft_model=small if args.speculative and role == "large" else None,
            num_speculative_tokens=args.num_speculative_tokens,
            compact_json=args.compact_json,
            python=Path(args.python) if args.python else vllm_python(),
        )
        for role, model, name, port, core, fraction in (
            ("small", small, small_name, args.small_port, 0, split[0]),
            ("large", large, large_name, args.large_port, 1 if two_cores else 0, split[1]),
        )
    )
    return servers[0], servers[1], warnings


def serve_snippet(small: LocalServer, large: LocalServer, top_logprobs: int = 20) -> str:
    """The Python that routes through the two servers."""
    extra = f"\n    top_logprobs={top_logprobs}," if top_logprobs != 20 else ""
    return (
        "from langchain_glimprouter import Backend, GlimpRouterChatModel\n\n"
        "router = GlimpRouterChatModel(\n"
        f"    small=Backend(base_url={json.dumps(small.base_url)}, "
        f"model={json.dumps(small.served_name)}),\n"
        f"    large=Backend(base_url={json.dumps(large.base_url)}, "
        f"model={json.dumps(large.served_name)}),\n"
        "    threshold=0.9,  # nats: a step whose first-token entropy is higher goes large"
        f"{extra}\n)"
    )


def _describe(role: str, server: LocalServer) -> str:
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in server.environment().items())
    return (
        f"# {role}: {server.served_name} at {server.base_url}\n{env} {shlex.join(server.command())}"
    )


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM stops ``serve`` the way Ctrl-C does (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_pair(
    small: LocalServer, large: LocalServer, cpu: bool, args: argparse.Namespace, out: TextIO
) -> int:
    servers = [small, large]
    roles = {id(small): "small", id(large): "large"}
    for server in servers:
        if port_in_use(server.host, server.port):
            raise ServeError(f"port {server.port} on {server.host} is in use")
    print(
        f"Starting the small server ({small.served_name}) and the large one "
        f"({large.served_name}) on {'CPU' if cpu else 'GPU'}...",
        file=out,
        flush=True,
    )
    with _sigterm_as_interrupt():
        try:
            try:
                if cpu:  # both at once
                    for server in servers:
                        server.start()
                    wait_all_ready(servers, args.ready_timeout)
                else:  # one after the other: vLLM sizes its GPU share from the memory it finds
                    small.start()
                    wait_all_ready([small], args.ready_timeout)
                    large.start()
                    wait_all_ready(servers, args.ready_timeout)
                for server in servers:
                    assert server.process is not None
                    print(
                        f"  {roles[id(server)]:<5}  {server.served_name}  {server.base_url}  "
                        f"(pid {server.process.pid}, log {server.log_path})",
                        file=out,
                    )
                snippet = serve_snippet(small, large, args.top_logprobs)
                print(f"\nBoth servers are ready. Use them with:\n\n{snippet}\n", file=out)
                print("Press Ctrl-C to stop both servers.", file=out, flush=True)
                while True:
                    for server in servers:
                        if server.exited():
                            raise ServerExited(server)
                    time.sleep(0.5)
            except ServerExited as exc:
                dead = exc.server
                dead.kill_leftovers()
                code = dead.process.poll() if dead.process is not None else None
                print(
                    f"error: the {roles[id(dead)]} server ({dead.served_name}) exited with "
                    f"code {code}; the end of its log ({dead.log_path}):\n{dead.log_tail()}",
                    file=sys.stderr,
                    flush=True,
                )
                return 1
            except RuntimeError as exc:  # the vLLM environment or a model folder is missing
                print(f"error: {exc}", file=sys.stderr, flush=True)
                return 2
            except TimeoutError as exc:
                print(f"error: {exc}", file=sys.stderr, flush=True)
                for server in servers:
                    print(f"--- {server.log_path}:\n{server.log_tail()}", file=sys.stderr)
                return 1
            except KeyboardInterrupt:
                print("\nStopping both servers...", file=out, flush=True)
                stop_all(servers)
                print("Stopped.", file=out, flush=True)
                return 0
        finally:
            stop_all(servers)


def _serve(args: argparse.Namespace, out: TextIO) -> int:
    small, large, warnings = serve_pair(args)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    cpu = small.cpu_build
    if not cpu and args.gpu_memory_split is None:
        print(
            "note: on one GPU, pass --gpu-memory-split (e.g. 0.25,0.65): without it each server "
            "asks for vLLM's default share of the GPU's memory.",
            file=out,
        )
    if args.dry_run:
        print(f"{_describe('small', small)}\n\n{_describe('large', large)}\n", file=out)
        snippet = serve_snippet(small, large, args.top_logprobs)
        print(f"Once both are ready, use them with:\n\n{snippet}", file=out)
        return 0
    return _run_pair(small, large, cpu, args, out)


# -- glimprouter bench ----------------------------------------------------------------------------

_LOCAL_BUDGETS = (256, 96)  # max reasoning tokens, max tokens with --local (as the demo)
_SERVER_FLAGS = ("small_url", "small_model", "large_url", "large_model")


def _threshold_arg(text: str) -> float | str:
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a threshold in nats or 'auto', got {text!r}"
        ) from None


def _sweep_arg(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected thresholds separated by commas such as 0,0.3,0.9, got {text!r}"
        ) from None
    if not values or any(math.isnan(v) or v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected thresholds >= 0 (nats), got {text!r}")
    return values


def _bench_router(
    args: argparse.Namespace,
    small: Backend,
    large: Backend,
    threshold: float | str | None,
    strategy: str | None = None,
    baseline: bool = False,
) -> GlimpRouterChatModel:
    """The router of one bench run; ``strategy`` and ``target_rate`` are passed only when given."""
    settings: dict[str, Any] = {
        "probe": args.probe,
        "entropy_estimator": args.estimator,
        "max_reasoning_tokens": args.max_reasoning_tokens,
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
        "seed": args.seed,
        "timeout": args.timeout,
    }
    if threshold is not None:
        settings["threshold"] = threshold
    strategy = strategy if strategy is not None else args.strategy
    if strategy is not None:
        settings["strategy"] = strategy
    if args.target_rate is not None and not baseline:
        settings["target_rate"] = args.target_rate
    try:
        return GlimpRouterChatModel(small=small, large=large, **settings)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise InvalidArgumentError(f"invalid router settings: {problems}") from None


def _bench_baseline(
    args: argparse.Namespace, small: Backend, large: Backend, name: str
) -> GlimpRouterChatModel:
    """The large-only or small-only baseline (``strategy=name``)."""
    return _bench_router(args, small, large, None, strategy=name, baseline=True)


def _bench_items(args: argparse.Namespace) -> tuple[Path, list[BenchItem]]:
    data = Path(args.data) if args.data else default_items_path()
    try:
        items = load_items(data)
    except (OSError, ValueError) as exc:
        raise InvalidArgumentError(f"cannot read the bench file {data}: {exc}") from None
    if args.limit is not None:
        if args.limit < 1:
            raise InvalidArgumentError(f"--limit must be at least 1 (got {args.limit})")
        items = items[: args.limit]
    if not items:
        raise InvalidArgumentError(f"the bench file {data} holds no question")
    return data, items


def _bench_check(args: argparse.Namespace) -> None:
    """Refuse bad flags before any server starts."""
    given = [flag for flag in _SERVER_FLAGS if getattr(args, flag)]
    if args.local and given:
        raise InvalidArgumentError(
            "--local starts its own two servers: leave out --small-url, --small-model, "
            "--large-url and --large-model"
        )
    if not args.local and len(given) < len(_SERVER_FLAGS):
        raise InvalidArgumentError(
            "give --small-url, --small-model, --large-url and --large-model, or --local "
            "(or --analyze FILE... to read recorded runs)"
        )
    if args.concurrency < 1:
        raise InvalidArgumentError(f"--concurrency must be at least 1 (got {args.concurrency})")
    if args.sweep is not None and args.threshold is not None:
        raise InvalidArgumentError("give --threshold or --sweep, not both")
    # Build every router of the plan once against placeholders: a bad setting fails now.
    placeholder = Backend(base_url="http://127.0.0.1:9/v1", model="placeholder")
    for tau in args.sweep or [args.threshold]:
        _bench_router(args, placeholder, placeholder, tau)
    if args.baselines:
        for name in bench.BASELINES:
            _bench_baseline(args, placeholder, placeholder, name)


async def _bench_runs(
    args: argparse.Namespace,
    data: Path,
    items: list[BenchItem],
    small: Backend,
    large: Backend,
    out: TextIO,
) -> int:
    folder = Path(args.out)
    options: dict[str, Any] = {
        "concurrency": args.concurrency,
        "resume": args.resume,
        "system": args.system,
        "label": args.strategy,
        "config": {"data": str(data)},
        "progress": sys.stderr,
    }
    if args.sweep is None and not args.baselines:
        chat = _bench_router(args, small, large, args.threshold)
        label = str(getattr(chat, "strategy", "glimpse"))
        path = folder / bench.run_name(label, chat.threshold)
        lines = await bench.arun(items, chat, path, **options)
        print(f"Results: {path}\n", file=out)
        print(bench.summarize(lines, label, bench.jsonable(chat.threshold)).table(), file=out)
        return 0
    default = GlimpRouterChatModel.model_fields["threshold"].default
    thresholds = args.sweep or [default if args.threshold is None else args.threshold]
    baselines = (
        {name: partial(_bench_baseline, args, small, large, name) for name in bench.BASELINES}
        if args.baselines
        else None
    )
    summaries = await bench.asweep(
        items,
        partial(_bench_router, args, small, large),
        thresholds,
        folder,
        baselines=baselines,
        report=out,
        **options,
    )
    plots = bench_plots.write_sweep_plots(summaries, folder)
    print(f"\n{bench.comparison_table(summaries)}\n", file=out)
    print(f"Wrote {folder / 'sweep.csv'}", file=out)
    if plots:
        print("Wrote " + " and ".join(str(p) for p in plots), file=out)
    else:
        print(bench_plots.MATPLOTLIB_HINT, file=out)
    return 0


def _bench_analyze(args: argparse.Namespace, out: TextIO) -> int:
    found = bench_plots.analyze(args.analyze)
    print(found.text(), file=out)
    png = found.plot(args.out)
    print(f"\nWrote {png}" if png is not None else f"\n{bench_plots.MATPLOTLIB_HINT}", file=out)
    return 0


def _bench(args: argparse.Namespace, out: TextIO) -> int:
    if args.analyze:
        return _bench_analyze(args, out)
    if args.local:
        reasoning, answer = _LOCAL_BUDGETS
    else:
        reasoning, answer = 8192, 2048
    if args.max_reasoning_tokens is None:
        args.max_reasoning_tokens = reasoning
    if args.max_tokens is None:
        args.max_tokens = answer
    _bench_check(args)
    data, items = _bench_items(args)
    servers: list[LocalServer] = []
    try:
        if args.local:
            from langchain_glimprouter.cli.servers import start_pair

            print(DEMO_NOTICE, file=out)
            print("Starting two vLLM CPU servers on SmolLM2-135M (about 2 minutes)...", file=out)
            try:
                servers = start_pair()
            except (RuntimeError, TimeoutError) as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            small, large = (Backend(base_url=s.base_url, model=s.served_name) for s in servers)
        else:
            small = Backend(base_url=args.small_url, model=args.small_model)
            large = Backend(base_url=args.large_url, model=args.large_model)
        return asyncio.run(_bench_runs(args, data, items, small, large, out))
    except KeyboardInterrupt:
        print(
            f"\ninterrupted: the results written so far are kept under {args.out}; run the same "
            "command with --resume to continue.",
            file=sys.stderr,
        )
        return 130
    finally:
        stop_all(servers)


def _bench_parser(commands: Any) -> None:
    sub = commands.add_parser(
        "bench",
        help="run a question set through the router: accuracy, latency, what it saves",
        description="Route every question of a bench file through the router, grade the "
        "answers, and write one JSON line per question under --out, then a summary. With "
        "--sweep, one run per threshold plus sweep.csv, pareto.png and intervention.png. With "
        "--analyze, compare the recorded first-token and step entropies (no servers needed). "
        "See docs/bench.md.",
    )
    sub.add_argument(
        "--local",
        action="store_true",
        help="start the two local vLLM CPU servers on the tiny model (as demo does) and stop "
        f"them at the end; budgets default to {_LOCAL_BUDGETS[0]}/{_LOCAL_BUDGETS[1]} tokens",
    )
    sub.add_argument("--small-url", help="e.g. http://localhost:8001/v1")
    sub.add_argument("--small-model")
    sub.add_argument("--large-url")
    sub.add_argument("--large-model")
    sub.add_argument("--system", default=None, help="optional system message")
    sub.add_argument(
        "--data", help="JSONL bench file (default: the shipped 40 arithmetic questions)"
    )
    sub.add_argument("--limit", type=int, default=None, help="only the first N questions")
    sub.add_argument(
        "--out", default="glimprouter-bench", help="output folder (default glimprouter-bench/)"
    )
    sub.add_argument("--strategy", choices=STRATEGIES, default=None)
    sub.add_argument("--threshold", type=_threshold_arg, default=None, help="tau (nats), or 'auto'")
    sub.add_argument(
        "--target-rate",
        type=float,
        default=None,
        help="share of large steps for --threshold auto and --strategy random",
    )
    sub.add_argument(
        "--sweep",
        type=_sweep_arg,
        default=None,
        metavar="T1,T2,...",
        help="one run per threshold, e.g. 0,0.3,0.6,0.9,1.2,1.8",
    )
    sub.add_argument("--baselines", action="store_true", help="also run large_only and small_only")
    sub.add_argument(
        "--concurrency", type=int, default=4, help="questions routed at once (default 4)"
    )
    sub.add_argument(
        "--resume",
        action="store_true",
        help="continue existing results files (same settings): skip the questions done",
    )
    sub.add_argument(
        "--analyze",
        nargs="+",
        metavar="FILE",
        help="results files to analyze: H_init against mean step entropy (no servers)",
    )
    sub.add_argument("--probe", choices=["stream", "separate"], default="stream")
    sub.add_argument("--estimator", choices=list(ESTIMATORS), default="topk_renormalized")
    sub.add_argument(
        "--max-reasoning-tokens", type=int, default=None, help="default 8192 (256 with --local)"
    )
    sub.add_argument("--max-tokens", type=int, default=None, help="default 2048 (96 with --local)")
    sub.add_argument("--temperature", type=float, default=0.6)
    sub.add_argument("--seed", type=int, default=None)
    sub.add_argument("--timeout", type=float, default=None, help="seconds per read")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="glimprouter", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="local vLLM servers on the tiny model, one question")
    demo.add_argument("--question", default=DEMO_QUESTIONS[0])
    demo.add_argument(
        "--quantile", type=float, default=0.7, help="threshold quantile when none is given"
    )
    ask = commands.add_parser("ask", help="route one question through two running servers")
    ask.add_argument("question")
    cal = commands.add_parser(
        "calibrate",
        help="the threshold that sends a wanted share of step starts to the large model",
        description="Route a sample of questions with every step on the small model "
        "(threshold=inf), collect every step's H_init, and print the threshold above which a "
        "share --target-rate of them lies: the smallest observed H_init with at most that share "
        "of the values above it.",
    )
    cal.add_argument(
        "--target-rate",
        type=float,
        required=True,
        help="wanted share of step starts on the large model, in (0, 1), e.g. 0.25",
    )
    cal.add_argument(
        "--questions",
        help='a file of questions: one per line, or JSON lines with a "question" key '
        f"(default: {len(CALIBRATION_QUESTIONS)} built-in arithmetic word questions)",
    )
    cal.add_argument(
        "--concurrency", type=int, default=4, help="questions routed at once (default 4)"
    )
    cal.add_argument("--json", action="store_true", help="print one JSON object")
    for sub in (ask, cal):
        sub.add_argument("--small-url", required=True, help="e.g. http://localhost:8001/v1")
        sub.add_argument("--small-model", required=True)
        sub.add_argument("--large-url", required=True)
        sub.add_argument("--large-model", required=True)
        sub.add_argument("--system", default=None, help="optional system message")
    serve = commands.add_parser(
        "serve",
        help="start the small and the large vLLM server and print the router that uses them",
        description="Start the small and the large vLLM server with the flags the router needs, "
        "wait until both are ready, print the GlimpRouterChatModel(...) that uses them, and stop "
        "both on Ctrl-C (or when one of them dies). Default: the bundled tiny model for both.",
    )
    serve.add_argument("--small", help="small model: a Hugging Face id or a local folder")
    serve.add_argument("--large", help="large model: a Hugging Face id or a local folder")
    serve.add_argument("--small-name", help="served name of the small model (default: --small)")
    serve.add_argument("--large-name", help="served name of the large model (default: --large)")
    serve.add_argument("--small-port", type=int, default=8001)
    serve.add_argument("--large-port", type=int, default=8002)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--max-model-len", type=int, default=4096)
    serve.add_argument(
        "--top-logprobs", type=int, default=20, help="the router's top_logprobs (--max-logprobs)"
    )
    serve.add_argument(
        "--max-logprobs",
        type=int,
        default=None,
        help="the servers' --max-logprobs, when more than --top-logprobs: e.g. 1000 for "
        "entropy_estimator='topk_bounds' escalations (its escalation_logprobs default)",
    )
    serve.add_argument(
        "--gpu-memory-split",
        type=_gpu_split,
        metavar="SMALL,LARGE",
        help="--gpu-memory-utilization of each server when both share one GPU, e.g. 0.25,0.65",
    )
    serve.add_argument(
        "--cpu",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="vLLM's CPU build: its environment variables, one core per server "
        "(default: on when nvidia-smi is absent)",
    )
    serve.add_argument("--python", help="the Python that has vLLM (default: the local CPU build's)")
    serve.add_argument(
        "--speculative",
        action="store_true",
        help="the large server drafts with the small model (needs the same vocabulary)",
    )
    serve.add_argument("--num-speculative-tokens", type=int, default=4)
    serve.add_argument(
        "--force-speculative",
        action="store_true",
        help="start --speculative although the vocabularies cannot be checked (hub ids) or the "
        "tokenizers differ (a vocab_size mismatch is always refused)",
    )
    serve.add_argument(
        "--compact-json",
        action="store_true",
        help="structured outputs (forced tool calls, with_structured_output) as compact JSON "
        "(xgrammar, no whitespace between tokens): fewer tokens per call, no newline loops; "
        "a schema xgrammar cannot compile is refused instead of falling back to guidance",
    )
    serve.add_argument(
        "--ready-timeout", type=float, default=1800.0, help="seconds to wait until ready"
    )
    serve.add_argument(
        "--dry-run", action="store_true", help="print the two commands, start nothing"
    )
    _bench_parser(commands)
    for sub, threshold in ((demo, None), (ask, 0.9), (cal, None)):
        if sub is cal:  # calibrate routes with threshold=inf and cuts the answer to 1 token
            sub.set_defaults(threshold=None, max_tokens=1)
        else:
            sub.add_argument("--threshold", type=float, default=threshold, help="tau in nats")
            sub.add_argument("--max-tokens", type=int, default=96 if sub is demo else 2048)
        sub.add_argument("--probe", choices=["stream", "separate"], default="stream")
        sub.add_argument("--estimator", choices=list(ESTIMATORS), default="topk_renormalized")
        sub.add_argument("--max-reasoning-tokens", type=int, default=256 if sub is demo else 8192)
        sub.add_argument("--temperature", type=float, default=0.6)
        sub.add_argument("--seed", type=int, default=None)
        sub.add_argument("--timeout", type=float, default=None, help="seconds per read")
    return parser


def main(argv: list[str] | None = None, out: TextIO = sys.stdout) -> int:
    """Entry point of the ``glimprouter`` console script."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args, out)
        if args.command == "calibrate":
            return _calibrate(args, out)
        if args.command == "bench":
            return _bench(args, out)
        return _demo(args, out) if args.command == "demo" else _ask(args, out)
    except (GlimpRouterError, ServeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
