"""``glimprouter proxy``: serve the router as an OpenAI-compatible chat completions server
(:mod:`langchain_glimprouter.proxy`) in front of two running servers, or, with no server flags,
in front of the bundled tiny pair that it starts (as ``demo`` does) and stops when it stops.

It prints where it listens, a curl example and the openai SDK's snippet, and serves until Ctrl-C
or SIGTERM. With ``--workers N`` (N > 1) uvicorn runs N worker processes, each building the app
with :func:`~langchain_glimprouter.proxy.app_from_env` from the environment
:func:`~langchain_glimprouter.proxy.router_env` writes (see docs/proxy.md), and their metrics
are summed in one ``/metrics`` through a fresh directory of prometheus-client's multiprocess
mode (:func:`metrics_directory`).
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TextIO

from langchain_glimprouter.backend import Backend
from langchain_glimprouter.cli import servers as local
from langchain_glimprouter.cli.demo import DEMO_NOTICE
from langchain_glimprouter.cli.flags import (
    add_router_flags,
    add_server_flags,
    backends,
    build_router,
    router_values,
)
from langchain_glimprouter.cli.serve import sigterm_as_interrupt
from langchain_glimprouter.cli.servers import ServeError
from langchain_glimprouter.core.settings import RouterSettings
from langchain_glimprouter.errors import InvalidArgumentError
from langchain_glimprouter.router import Router

SERVER_FLAGS = ("small_url", "small_model", "large_url", "large_model")
LOCAL_SETTINGS = {"threshold": 1.5, "max_reasoning_tokens": 256, "max_tokens": 96}
"""Defaults with the bundled tiny pair: demo's budgets, and a threshold inside SmolLM2's
first-token entropies (mostly 1 to 2.5 nats), so that steps go both ways."""
API_KEY_ENV = "GLIMPROUTER_PROXY_API_KEY"
"""The proxy's key when ``--api-key`` is not given (``proxy.env.API_KEY_ENV``; the proxy package
is imported only to serve, since it needs the ``proxy`` extra)."""
FACTORY = "langchain_glimprouter.proxy:app_from_env"
HEADER_TIMEOUT_S, BODY_TIMEOUT_S, CONCURRENCY, KEEP_ALIVE_S = 10.0, 30.0, 512, 5
"""The limits' defaults (``proxy.limits``'s, which a test keeps equal)."""
EXTRA = ("starlette", "uvicorn", "prometheus_client")
"""What the ``proxy`` extra installs."""
PLACEHOLDER = Backend(base_url="http://127.0.0.1:9/v1", model="placeholder")
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""Where the workers write their metrics (``proxy.metrics.MULTIPROC_ENV``)."""


def add_parser(commands: Any) -> None:
    sub = commands.add_parser(
        "proxy",
        help="serve the router as an OpenAI-compatible chat completions server",
        description="Serve the router at /v1/chat/completions (plain and streamed), /v1/models, "
        "/health and /metrics, in front of two running servers (--small-url ... --large-model) "
        "or, with none of those flags, in front of the bundled tiny pair it starts and stops. "
        "Any router setting may also be given per request as an extra body field. See "
        "docs/proxy.md.",
    )
    add_server_flags(sub, required=False, system=False)
    sub.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default %(default)s)"
    )
    sub.add_argument(
        "--port", type=int, default=8000, help="port to listen on (default %(default)s)"
    )
    sub.add_argument(
        "--workers",
        type=int,
        default=1,
        help="uvicorn worker processes (default 1); /metrics sums them all, and with "
        "threshold 'auto' each has its own controller",
    )
    sub.add_argument(
        "--api-key",
        default=None,
        help=f"bearer token clients must send (default: ${API_KEY_ENV}); visible to other "
        "users in /proc/<pid>/cmdline: prefer --api-key-file or the variable",
    )
    sub.add_argument(
        "--api-key-file",
        default=None,
        metavar="PATH",
        help="read the bearer token from this file (its first line)",
    )
    add_limit_flags(sub)
    sub.add_argument(
        "--served-name",
        default="glimprouter",
        help="the model name clients ask for (default %(default)s)",
    )
    sub.add_argument(
        "--reasoning-effort-budgets",
        default=None,
        metavar="LEVEL=TOKENS,...",
        help="the reasoning budget of each reasoning_effort a request may send, capped by "
        "--max-reasoning-tokens (default minimal=256,low=1024,medium=4096,high=8192)",
    )
    sub.add_argument(
        "--allowed-origin",
        action="append",
        default=None,
        metavar="ORIGIN",
        help="a browser origin CORS allows (https://app.example; repeatable; default none)",
    )
    sub.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="one line per request on stderr: method, path, status, latency, request id, steps, "
        "intervention rate; never a key or message text (default on)",
    )
    add_otel_flag(sub)
    local_notes = {
        name: f"default {RouterSettings.model_fields[name].default!r}, {value!r} with the "
        "bundled tiny pair"
        for name, value in LOCAL_SETTINGS.items()
    }
    add_router_flags(sub, defaults=dict.fromkeys(LOCAL_SETTINGS), notes=local_notes)
    sub.set_defaults(run=run)


def add_limit_flags(sub: argparse.ArgumentParser) -> None:
    """The operator's policy and the limits on clients (see docs/proxy.md)."""
    sub.add_argument(
        "--client-settings",
        default="",
        metavar="NAMES",
        help="router settings a request may set, comma separated, each optionally capped "
        "('threshold,max_reasoning_tokens<=16384', or 'all'); by default a request may only "
        "lower max_tokens, max_reasoning_tokens and max_retries (and set temperature, top_p, "
        "seed)",
    )
    sub.add_argument(
        "--header-timeout",
        type=float,
        default=HEADER_TIMEOUT_S,
        metavar="S",
        help="seconds a connection has to send a request's headers, else 408 (default "
        "%(default)s; 0: none)",
    )
    sub.add_argument(
        "--body-timeout",
        type=float,
        default=BODY_TIMEOUT_S,
        metavar="S",
        help="seconds to send a request's body, else 408 (default %(default)s; 0: none)",
    )
    sub.add_argument(
        "--limit-concurrency",
        type=int,
        default=CONCURRENCY,
        metavar="N",
        help="open connections or running requests per worker beyond which a request gets a "
        "503 server_overloaded in OpenAI's error shape, with Retry-After (default %(default)s)",
    )
    sub.add_argument(
        "--timeout-keep-alive",
        type=int,
        default=KEEP_ALIVE_S,
        metavar="S",
        help="seconds an idle connection stays open between requests (default %(default)s)",
    )


def add_otel_flag(sub: argparse.ArgumentParser) -> None:
    """OpenTelemetry traces (docs/tracing.md#opentelemetry)."""
    sub.add_argument(
        "--otel-endpoint",
        default=None,
        metavar="URL",
        help="export OpenTelemetry traces over OTLP/HTTP to this collector (http://host:4318; "
        "as $OTEL_EXPORTER_OTLP_ENDPOINT, which also turns them on; needs the otel extra)",
    )


def otel_env(args: argparse.Namespace) -> dict[str, str]:
    """The variable that turns each worker's traces on (none without ``--otel-endpoint``);
    refuses a request for traces, by the flag or the variables, without the ``otel`` extra."""
    from langchain_glimprouter import telemetry

    url = getattr(args, "otel_endpoint", None)
    asked_by = "--otel-endpoint" if url else telemetry.requested()
    if asked_by:
        telemetry.require_sdk(asked_by)
    return {telemetry.ENDPOINT_ENVS[0]: telemetry.traces_endpoint(url)} if url else {}


def uses_local_pair(args: argparse.Namespace) -> bool:
    """True with none of the server flags; raises when only some are given."""
    given = [name for name in SERVER_FLAGS if getattr(args, name)]
    if given and len(given) < len(SERVER_FLAGS):
        raise InvalidArgumentError(
            "give all of --small-url, --small-model, --large-url and --large-model, or none of "
            "them (the bundled tiny pair)"
        )
    return not given


def settings(args: argparse.Namespace, local_pair: bool) -> dict[str, Any]:
    """The router settings of the flags, with the tiny pair's defaults when it serves."""
    defaults = LOCAL_SETTINGS if local_pair else {}
    return {**defaults, **router_values(args)}


def api_key(args: argparse.Namespace) -> str | None:
    """``--api-key-file``'s first line, else ``--api-key``, else
    ``$GLIMPROUTER_PROXY_API_KEY``, else none (no auth)."""
    return key_and_source(args)[0]


def key_and_source(args: argparse.Namespace) -> tuple[str | None, str]:
    """The proxy's key and where it came from: ``file``, ``argv``, ``env`` or ``none``."""
    path = getattr(args, "api_key_file", None)
    if path:
        if args.api_key:
            raise InvalidArgumentError("give --api-key-file or --api-key, not both")
        try:
            with open(path, encoding="utf-8") as file:
                key = file.readline().strip()
        except OSError as exc:
            raise InvalidArgumentError(f"--api-key-file: cannot read {path}: {exc}") from None
        if not key:
            raise InvalidArgumentError(f"--api-key-file: {path} holds no key on its first line")
        return key, "file"
    if args.api_key:
        return args.api_key, "argv"
    from_env = os.environ.get(API_KEY_ENV) or None
    return from_env, "env" if from_env else "none"


def require_extra() -> None:
    """Raise :class:`ServeError` unless the ``proxy`` extra's packages are installed."""
    missing = [name for name in EXTRA if importlib.util.find_spec(name) is None]
    if missing:
        raise ServeError(
            f"glimprouter proxy needs {', '.join(missing)}: "
            "pip install 'langchain-glimprouter[proxy]'"
        )


def check(args: argparse.Namespace) -> bool:
    """Refuse bad flags before any server starts; return whether the tiny pair serves."""
    require_extra()
    local_pair = uses_local_pair(args)
    if args.workers < 1:
        raise InvalidArgumentError(f"--workers must be at least 1 (got {args.workers})")
    if not 0 < args.port < 65536:
        raise InvalidArgumentError(f"--port must be in 1..65535 (got {args.port})")
    for name in ("header_timeout", "body_timeout", "timeout_keep_alive"):
        if getattr(args, name) < 0:
            raise InvalidArgumentError(f"--{name.replace('_', '-')} must be >= 0")
    if args.limit_concurrency < 1:
        raise InvalidArgumentError("--limit-concurrency must be at least 1")
    policy(args)
    if local.port_in_use(args.host, args.port):
        raise InvalidArgumentError(f"port {args.port} on {args.host} is in use")
    build_router(PLACEHOLDER, PLACEHOLDER, settings(args, local_pair), Router)
    app_options(args)  # a bad --reasoning-effort-budgets, before any server starts
    otel_env(args)  # traces asked for without the otel extra
    return local_pair


def policy(args: argparse.Namespace) -> Any:
    """The operator's policy of ``--client-settings`` (a ``proxy.policy.ClientPolicy``)."""
    from langchain_glimprouter.proxy.policy import ClientPolicy

    return ClientPolicy.parse(args.client_settings)


def usage(args: argparse.Namespace, secured: bool, source: str = "env") -> str:
    """Where the proxy listens, where its key came from, a curl example and the openai SDK's
    snippet (which read the key where the operator keeps it, never print it)."""
    base = f"http://{local.connect_host(args.host)}:{args.port}/v1"
    body = json.dumps(
        {"model": args.served_name, "messages": [{"role": "user", "content": "What is 6 * 7?"}]}
    )
    shell, key = f"${API_KEY_ENV}", f'os.environ["{API_KEY_ENV}"]'
    path = str(args.api_key_file)
    if source == "file":
        shell, key = (
            f"$(head -n1 {path})",
            f"open({path!r}).readline().strip()",
        )
    elif source == "argv":
        shell, key = "<the key given with --api-key>", '"<the key given with --api-key>"'
    auth = f' \\\n    -H "Authorization: Bearer {shell}"' if secured else ""
    key = key if secured else '"unused"'
    origin = {"file": f"read from {path}", "argv": "given with --api-key",
              "env": f"from ${API_KEY_ENV}"}.get(source, "")  # fmt: skip
    keyed = f"Clients send the proxy's key ({origin}).\n" if secured else ""
    return (
        f"Serving {args.served_name!r} at {base} (/chat/completions, /models; /health and "
        f"/metrics at the root), {args.workers} worker(s).\n{keyed}"
        f"{policy(args).describe()}\n\n"
        f"curl {base}/chat/completions -H 'Content-Type: application/json'{auth} \\\n"
        f"    -d '{body}'\n\n"
        + ("import os\n\n" if secured and source == "env" else "")
        + "from openai import OpenAI\n\n"
        f'client = OpenAI(base_url="{base}", api_key={key})\n'
        "reply = client.chat.completions.create(\n"
        f'    model="{args.served_name}",\n'
        '    messages=[{"role": "user", "content": "What is 6 * 7?"}],\n'
        ")\n"
        "print(reply.choices[0].message.reasoning_content, reply.choices[0].message.content)\n\n"
        "Press Ctrl-C to stop."
    )


def app_options(args: argparse.Namespace) -> dict[str, Any]:
    """``create_app``'s options of the proxy's own flags (effort budgets, CORS origins)."""
    from langchain_glimprouter.proxy.options import from_flags

    return from_flags(args.reasoning_effort_budgets, args.allowed_origin)


def access_log_config() -> dict[str, Any]:
    """uvicorn's logging configuration (which each worker applies) with the proxy's access log
    at INFO on uvicorn's own stderr handler."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["langchain_glimprouter.proxy.access"] = {
        "handlers": ["default"],
        "level": "INFO",
        "propagate": False,
    }
    return config


def worker_env(
    router: Router, served_name: str, key: str | None, args: argparse.Namespace | None = None
) -> dict[str, str]:
    """The environment each worker process builds its app from (``app_from_env``), with the
    operator's policy, the body timeout and the proxy's options of ``args``."""
    from langchain_glimprouter.proxy import router_env
    from langchain_glimprouter.proxy.options import options_env

    if args is None:
        return router_env(router, served_name, api_key=key)
    return router_env(
        router, served_name, api_key=key, client_settings=policy(args),
        body_timeout=args.body_timeout,
    ) | options_env(app_options(args))  # fmt: skip


@contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """``values`` in ``os.environ`` (the workers inherit them), the old ones back afterwards."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def own_signal_handlers() -> Iterator[None]:
    """Put back SIGINT's and SIGTERM's handlers that uvicorn's supervisor replaces and leaves."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


@contextmanager
def metrics_directory() -> Iterator[str]:
    """A fresh, empty directory for the workers' metrics (prometheus-client's multiprocess
    mode), removed with its files when the proxy stops: each start counts from zero."""
    path = tempfile.mkdtemp(prefix="glimprouter-metrics-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def serve(router: Router, args: argparse.Namespace, key: str | None) -> None:
    """Run uvicorn until it is stopped: the app itself, or ``--workers`` processes of it."""
    import uvicorn

    from langchain_glimprouter.proxy.limits import HEADER_TIMEOUT_ENV, TimedH11Protocol

    options: dict[str, Any] = {"host": args.host, "port": args.port, "log_level": "warning"}
    options |= {
        "http": TimedH11Protocol,
        "limit_concurrency": args.limit_concurrency,
        "timeout_keep_alive": args.timeout_keep_alive,
    }
    if args.access_log:
        options["log_config"] = access_log_config()
    timed = {HEADER_TIMEOUT_ENV: repr(args.header_timeout)} | otel_env(args)
    if args.workers == 1:
        from langchain_glimprouter import telemetry
        from langchain_glimprouter.proxy import create_app

        app = create_app(
            router, served_name=args.served_name, api_key=key, client_settings=policy(args),
            body_timeout=args.body_timeout, **app_options(args),
        )  # fmt: skip
        with environment(timed):
            traces = telemetry.install_from_env()
            try:
                uvicorn.run(app, **options)
            finally:
                if traces is not None:
                    traces.shutdown()  # the spans still batched go out
        return
    env = worker_env(router, args.served_name, key, args) | timed
    with (
        metrics_directory() as path,
        environment(env | {MULTIPROC_ENV: path}),
        own_signal_handlers(),
    ):
        uvicorn.run(FACTORY, factory=True, workers=args.workers, **options)


def run(args: argparse.Namespace, out: TextIO) -> int:
    local_pair = check(args)
    key, source = key_and_source(args)
    if source == "argv":
        print(
            "warning: --api-key is visible to every user of this machine in /proc/<pid>/cmdline "
            f"and ps; use --api-key-file PATH or ${API_KEY_ENV}.",
            file=sys.stderr,
        )
    started: list[local.LocalServer] = []
    with sigterm_as_interrupt():
        try:
            if local_pair:
                print(DEMO_NOTICE, file=out)
                print(
                    "Starting two vLLM CPU servers on SmolLM2-135M (about 2 minutes)...", file=out
                )
                try:
                    started = local.start_pair()
                except (RuntimeError, TimeoutError) as exc:
                    print(f"error: {exc}", file=sys.stderr)
                    return 2
                small, large = backends(args, [(s.base_url, s.served_name) for s in started])
                print(f"  small: {small.base_url}   large: {large.base_url}\n", file=out)
            else:
                small, large = backends(args)
            router = build_router(small, large, settings(args, local_pair), Router)
            print(usage(args, key is not None, source), file=out, flush=True)
            serve(router, args, key)
        except KeyboardInterrupt:
            pass
        finally:
            if started:
                print("\nStopping the two vLLM servers...", file=out, flush=True)
                local.stop_all(started)
    print("Stopped.", file=out)
    return 0
