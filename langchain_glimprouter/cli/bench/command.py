"""``glimprouter bench``: route a question set (the shipped arithmetic set, or a JSONL file)
through two running servers or a local pair, grade the answers and write one JSON line per
question and a summary; with ``--sweep``, one run per threshold, ``sweep.csv`` and its plots;
``--analyze`` compares recorded first-token and step entropies (see docs/bench.md)."""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
from functools import partial
from pathlib import Path
from typing import Any, TextIO

from langchain_glimprouter.backend import Backend
from langchain_glimprouter.chat_models import GlimpRouterChatModel
from langchain_glimprouter.cli.bench import plots as bench_plots
from langchain_glimprouter.cli.bench import runner as bench
from langchain_glimprouter.cli.bench import summary
from langchain_glimprouter.cli.bench.grading import BenchItem, default_items_path, load_items
from langchain_glimprouter.cli.demo import DEMO_NOTICE, HETERO_NOTICE, gemma_gguf, start_hetero_pair
from langchain_glimprouter.cli.flags import (
    add_router_flags,
    add_server_flags,
    backends,
    build_router,
    router_values,
)
from langchain_glimprouter.cli.servers import (
    LocalServer,
    stop_all,
)
from langchain_glimprouter.errors import InvalidArgumentError

_LOCAL_BUDGETS = (256, 96)  # max reasoning tokens, max tokens with --local (as the demo)
_SERVER_FLAGS = ("small_url", "small_model", "large_url", "large_model")


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
    values = router_values(args)
    values.pop("threshold", None)
    if threshold is not None:
        values["threshold"] = threshold
    if strategy is not None:
        values["strategy"] = strategy
    if baseline:
        values.pop("target_rate", None)
    return build_router(small, large, values)


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
        print(summary.summarize(lines, label, bench.jsonable(chat.threshold)).table(), file=out)
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
    print(f"\n{summary.comparison_table(summaries)}\n", file=out)
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


def run(args: argparse.Namespace, out: TextIO) -> int:
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

            hetero = args.pair == "hetero"
            if hetero and args.large_gguf is None and args.large_chat_template is None:
                args.large_gguf = str(gemma_gguf())  # Gemma's template, the GGUF's BOS
            print(HETERO_NOTICE if hetero else DEMO_NOTICE, file=out)
            models = "SmolLM2-135M small, Gemma 3 270M large" if hetero else "SmolLM2-135M"
            print(f"Starting two vLLM CPU servers on {models} (about 2 minutes)...", file=out)
            try:
                servers = start_hetero_pair() if hetero else start_pair()
            except (RuntimeError, TimeoutError) as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            small, large = backends(args, [(s.base_url, s.served_name) for s in servers])
        else:
            small, large = backends(args)
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


def add_parser(commands: Any) -> None:
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
    sub.add_argument(
        "--pair",
        choices=("tiny", "hetero"),
        default="tiny",
        help="with --local: tiny (SmolLM2-135M in both roles, the default) or hetero "
        "(SmolLM2-135M small, Gemma 3 270M large; `make gemma-model` prepares it)",
    )
    add_server_flags(sub, required=False)
    sub.add_argument(
        "--data", help="JSONL bench file (default: the shipped 40 arithmetic questions)"
    )
    sub.add_argument("--limit", type=int, default=None, help="only the first N questions")
    sub.add_argument(
        "--out", default="glimprouter-bench", help="output folder (default glimprouter-bench/)"
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
    add_router_flags(
        sub,
        defaults={
            "strategy": None,
            "threshold": None,
            "max_reasoning_tokens": None,
            "max_tokens": None,
        },
        notes={
            "strategy": "default glimpse; with --baselines also large_only and small_only",
            "threshold": "default 0.9; or 'auto' with --target-rate",
            "max_reasoning_tokens": "default 8192, 256 with --local",
            "max_tokens": "default 2048, 96 with --local",
        },
    )
    sub.set_defaults(run=run)
