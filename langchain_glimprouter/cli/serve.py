"""``glimprouter serve``: start a small and a large vLLM server with the flags the router needs,
wait until both are ready, print the ``GlimpRouterChatModel(...)`` that uses them, and stop both
on Ctrl-C or when one of them dies (launchers: :mod:`~langchain_glimprouter.cli.servers`)."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from langchain_glimprouter.cli.servers import (
    LocalServer,
    ServeError,
    ServerExited,
    is_local_model,
    port_in_use,
    stop_all,
    tiny_model_dir,
    vllm_python,
    wait_all_ready,
)
from langchain_glimprouter.cli.vocabulary import check_same_vocabulary


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
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM stops ``serve`` (and ``proxy``) the way Ctrl-C does (main thread only)."""
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
    with sigterm_as_interrupt():
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


def run(args: argparse.Namespace, out: TextIO) -> int:
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


def add_parser(commands: Any) -> None:
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
    serve.set_defaults(run=run)
