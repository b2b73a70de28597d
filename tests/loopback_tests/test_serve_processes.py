"""``glimprouter serve`` started for real in a child process on two fake vLLM servers (a few
lines of http.server behind ``--python``; no vLLM is started): health, the snippet, signals, a
crash; and what a port in use means."""

from __future__ import annotations

import os
import queue
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from langchain_glimprouter.cli.servers import free_port, port_in_use

pytestmark = pytest.mark.usefixtures("glimprouter_home")


FAKE_VLLM = """
import argparse, http.server, os, threading, time
parser = argparse.ArgumentParser()
parser.add_argument("-m")
parser.add_argument("--host")
parser.add_argument("--port", type=int)
args, _ = parser.parse_known_args()
state = os.environ["FAKE_VLLM_DIR"]
with open(os.path.join(state, f"{args.port}.pid"), "w") as f:
    f.write(str(os.getpid()))
ready_at = time.monotonic() + float(os.environ.get("FAKE_VLLM_READY_AFTER", "0"))

class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ok = self.path == "/health" and time.monotonic() >= ready_at
        if ok:
            open(os.path.join(state, f"{args.port}.healthy"), "w").close()
        self.send_response(200 if ok else 503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *a):
        pass

def crash():
    print("fake engine crashed: CUDA out of memory", flush=True)
    os._exit(3)

if os.environ.get("FAKE_VLLM_CRASH_PORT") == str(args.port):
    threading.Timer(0.6, crash).start()
print("fake vLLM serving", args.port, flush=True)
http.server.HTTPServer((args.host, args.port), Health).serve_forever()
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class Serve:
    """``glimprouter serve`` in a child process on two fake vLLM servers."""

    def __init__(self, state: Path, ready_after: float = 0.0, crash_large: bool = False) -> None:
        self.state = state
        script = state / "fake_vllm.py"
        script.write_text(FAKE_VLLM)
        python = state / "python"
        python.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} {script} "$@"\n')
        python.chmod(0o755)
        small_port = free_port()
        large_port = free_port()
        while large_port == small_port:
            large_port = free_port()
        self.ports = small_port, large_port
        env = {**os.environ, "FAKE_VLLM_DIR": str(state), "FAKE_VLLM_READY_AFTER": str(ready_after)}
        if crash_large:
            env["FAKE_VLLM_CRASH_PORT"] = str(large_port)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "langchain_glimprouter.cli", "serve", "--cpu",
             "--python", str(python), "--small-port", str(small_port),
             "--large-port", str(large_port)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # Ctrl-C as usual
        )  # fmt: skip
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.out: list[str] = []
        self.err: list[str] = []
        self.readers = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for reader in self.readers:
            reader.start()

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        self.err.extend(self.process.stderr)

    def wait_for(self, text: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.out):
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {text!r} in {self.out}") from None
            assert line is not None, f"serve exited: {self.finish()}"
            self.out.append(line)

    def pids(self) -> list[int]:
        return [int((self.state / f"{port}.pid").read_text()) for port in self.ports]

    def finish(self, timeout: float = 20.0) -> str:
        """Wait for serve to exit; return its stderr (its stdout lines end in ``self.out``)."""
        self.process.wait(timeout=timeout)
        for reader in self.readers:
            reader.join(timeout=5)
        while (line := self.lines.get(timeout=5)) is not None:
            self.out.append(line)
        return "".join(self.err)

    def cleanup(self) -> None:
        """Kill whatever this test started and is still running (by process id)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for pidfile in self.state.glob("*.pid"):
            pid = int(pidfile.read_text())
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Serve]]:
    started: list[Serve] = []

    def start(**kwargs: Any) -> Serve:
        state = tmp_path / f"fake-{len(started)}"
        state.mkdir()
        started.append(Serve(state, **kwargs))
        return started[-1]

    yield start
    for running in started:
        running.cleanup()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_serve_waits_for_health_prints_the_snippet_and_stops_both(
    serve: Callable[..., Serve], sig: signal.Signals
) -> None:
    running = serve(ready_after=0.7)
    running.wait_for("Press Ctrl-C")
    # Both answered /health with 200 before the snippet was printed.
    assert all((running.state / f"{port}.healthy").exists() for port in running.ports)
    text = "\n".join(running.out)
    assert "GlimpRouterChatModel(" in text
    for port, name in zip(running.ports, ("smollm2-small", "smollm2-large"), strict=True):
        assert f'Backend(base_url="http://127.0.0.1:{port}/v1", model="{name}")' in text
    pids = running.pids()
    assert all(_alive(pid) for pid in pids)
    running.process.send_signal(sig)
    running.finish()
    assert running.process.returncode == 0
    assert any("Stopped." in line for line in running.out)
    assert not any(_alive(pid) for pid in pids)


def test_serve_stops_the_other_server_when_one_dies(serve: Callable[..., Serve]) -> None:
    running = serve(crash_large=True)
    err = running.finish()
    assert running.process.returncode == 1
    assert "the large server (smollm2-large) exited with code 3" in err
    assert "fake engine crashed: CUDA out of memory" in err  # the tail of its log
    assert not any(_alive(pid) for pid in running.pids())


def test_port_in_use_means_a_listening_socket() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert port_in_use("127.0.0.1", port)
    assert not port_in_use("127.0.0.1", port)
