"""``glimprouter serve`` for real: two vLLM CPU servers, the printed snippet, Ctrl-C.

Marked ``before_vllm_pair``: it runs before every other test (conftest.py orders it), so before
the session's own server pair starts and no more than two vLLM servers share the cores.
"""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

from langchain_glimprouter import GlimpRouterChatModel
from langchain_glimprouter.cli.servers import free_port, port_in_use


def _lines(process: subprocess.Popen[str]) -> queue.Queue[str | None]:
    """The process's stdout, line by line, readable with a timeout (None at the end)."""
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _read_until(lines: queue.Queue[str | None], marker: str, timeout: float) -> str:
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        try:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(
                f"serve printed no {marker!r} in {timeout:g} s; it printed:\n" + "".join(seen)
            ) from None
        assert line is not None, "serve ended early:\n" + "".join(seen)
        seen.append(line)
        if marker in line:
            return "".join(seen)


@pytest.mark.before_vllm_pair
def test_serve_starts_both_servers_prints_a_working_snippet_and_stops_on_ctrl_c() -> None:
    small_port, large_port = free_port(), free_port()
    process = subprocess.Popen(
        [
            sys.executable, "-m", "langchain_glimprouter.cli", "serve",
            "--small-port", str(small_port), "--large-port", str(large_port),
            "--max-model-len", "2048", "--ready-timeout", "600",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # Ctrl-C as at a terminal: a suite started in the background by a shell without job
        # control inherits SIGINT ignored, and Python then leaves it ignored (serve would never
        # see the Ctrl-C this test sends).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        lines = _lines(process)
        shown = _read_until(lines, "Press Ctrl-C", timeout=660)
        snippet = shown.split("Use them with:", 1)[1].split("Press Ctrl-C", 1)[0]
        assert f"http://127.0.0.1:{small_port}/v1" in snippet
        assert f"http://127.0.0.1:{large_port}/v1" in snippet

        # The snippet is runnable Python that routes through the two servers.
        scope: dict[str, object] = {}
        exec(snippet, scope)  # the text this very command printed
        router = scope["router"]
        assert isinstance(router, GlimpRouterChatModel)
        message = router.invoke(
            "What is 3 + 4?", max_reasoning_tokens=48, max_tokens=8, threshold=1.5
        )
        record = message.response_metadata["glimprouter"]
        assert record["steps"], record
        for port in (small_port, large_port):
            assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200

        # Ctrl-C stops both servers and serve exits 0.
        process.send_signal(signal.SIGINT)
        rest = _read_until(lines, "Stopped.", timeout=90)
        assert process.wait(timeout=30) == 0, rest
        assert not port_in_use("127.0.0.1", small_port)
        assert not port_in_use("127.0.0.1", large_port)
    finally:
        if process.poll() is None:  # a failed assertion: let serve stop its servers
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
