"""``glimprouter proxy --workers 2`` started for real in a child process, in front of the scripted
servers on loopback: /health, requests answered by both workers, the openai SDK streaming with
usage, the key, and a stop that leaves no process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from langchain_glimprouter.cli.servers import free_port
from tests.support.proxy import QUESTION

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/stat").exists(), reason="reads the process tree from /proc (Linux)"
)

KEY = "proxy-key"
AUTH = {"authorization": f"Bearer {KEY}"}


def descendants(pid: int) -> set[int]:
    """The processes ``pid`` started, and theirs (from /proc)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier}
        found |= frontier
    return found


def running(pid: int) -> bool:
    """Whether ``pid`` exists and has not exited (a zombie waits only to be reaped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def ended(pids: set[int], timeout: float = 5.0) -> bool:
    """Whether all of ``pids`` end within ``timeout`` (the resource tracker leaves last)."""
    deadline = time.monotonic() + timeout
    while any(map(running, pids)):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


class Proxy:
    """``glimprouter proxy --workers 2`` in a child process before a scripted pair, key ``KEY``."""

    def __init__(self, small: Any, large: Any) -> None:
        port = free_port()
        self.root = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "langchain_glimprouter.cli", "proxy", "--workers", "2",
             "--port", str(port), "--threshold", "1.0", "--small-url", small.base_url,
             "--small-model", "small-m", "--large-url", large.base_url,
             "--large-model", "large-m"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "GLIMPROUTER_PROXY_API_KEY": KEY},
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # Ctrl-C as usual
        )  # fmt: skip
        self.started: set[int] = set()
        """The processes it started, as last seen (kept, to be killed if left running)."""

    def children(self) -> set[int]:
        self.started |= descendants(self.process.pid)
        return self.started

    def cleanup(self) -> None:
        """Kill whatever this test started and is still running (by process id)."""
        if self.process.poll() is None:
            self.children()
            self.process.kill()
            self.process.wait()
        for pid in self.started:
            if running(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def proxy(servers: Any) -> Iterator[Proxy]:
    started = Proxy(*servers())
    yield started
    started.cleanup()


def wait_healthy(proxy: Proxy) -> httpx.Response:
    deadline = time.monotonic() + 60  # the workers import the package (seconds on a busy host)
    while time.monotonic() < deadline:
        assert proxy.process.poll() is None, proxy.process.communicate()
        try:
            return httpx.get(f"{proxy.root}/health", timeout=1)
        except httpx.TransportError:
            time.sleep(0.05)
    raise AssertionError("the proxy did not answer /health")


def requests_served(root: str) -> float:
    """``requests_total`` of the worker that takes this scrape (each has its own registry)."""
    lines = httpx.get(f"{root}/metrics", headers=AUTH).text.splitlines()
    prefix = "glimprouter_proxy_requests_total{"
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(prefix))


def test_two_workers_serve_stream_guard_and_stop_cleanly(proxy: Proxy) -> None:
    health = wait_healthy(proxy)
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "small": "ok", "large": "ok"}

    # Each request on its own connection, until a scrape shows a worker that served some but
    # not all of them: the other worker served the rest.
    root, body = proxy.root, {"model": "glimprouter", "messages": QUESTION}
    served, split = 0, False
    deadline = time.monotonic() + 10
    while not split and time.monotonic() < deadline:
        response = httpx.post(f"{root}/v1/chat/completions", json=body, headers=AUTH, timeout=10)
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["message"]["content"] == "The answer is 42."
        assert response.headers["x-glimprouter-large-steps"] == "2"
        served += 1
        split = any(0 < requests_served(root) < served for _ in range(2))
    assert split, f"one worker answered all {served} requests"

    sdk = openai.OpenAI(base_url=f"{root}/v1", api_key=KEY, max_retries=0)
    chunks = list(
        sdk.chat.completions.create(
            model="glimprouter", messages=QUESTION, stream=True,
            stream_options={"include_usage": True},
        )
    )  # fmt: skip
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
        "The answer is 42."
    )
    usage = chunks[-1].usage
    assert usage is not None
    assert usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens

    refused = httpx.post(f"{root}/v1/chat/completions", json=body)
    assert (refused.status_code, refused.json()["error"]["code"]) == (401, "invalid_api_key")

    started = proxy.children()  # the workers, and multiprocessing's resource tracker
    proxy.process.send_signal(signal.SIGINT)
    out, err = proxy.process.communicate(timeout=15)
    assert proxy.process.returncode == 0, err
    assert "Stopped." in out
    assert ended(started), f"left running: {[pid for pid in started if running(pid)]}"
