"""``glimprouter proxy --workers 2`` started for real in a child process, in front of the scripted
servers on loopback: /health, requests answered by both workers, one /metrics summed over them
whichever worker takes the scrape, the openai SDK streaming with usage, the key, and a stop that
leaves no process and no metrics directory behind."""

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
from prometheus_client.multiprocess import MultiProcessCollector

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
    # The workers import the package: 40 s to 2 minutes on a 2-core host at load 12 to 16.
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert proxy.process.poll() is None, proxy.process.communicate()
        try:
            return httpx.get(f"{proxy.root}/health", timeout=5)
        except httpx.TransportError:
            time.sleep(0.05)
    raise AssertionError("the proxy did not answer /health")


def scraped(root: str, name: str) -> float:
    """The sum of ``name``'s samples in one scrape of ``/metrics``, on a connection of its own
    (so any worker may take it)."""
    lines = httpx.get(f"{root}/metrics", headers=AUTH).text.splitlines()
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith((name + "{", name + " "))
    )


def metrics_directory(workers: set[int]) -> Path:
    """The multiprocess directory the workers write their metrics to (from their environment)."""
    for pid in workers:
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        for entry in environ:
            if entry.startswith(b"PROMETHEUS_MULTIPROC_DIR="):
                return Path(entry.split(b"=", 1)[1].decode())
    raise AssertionError("no worker has PROMETHEUS_MULTIPROC_DIR")


def served_per_worker(directory: Path) -> dict[str, float]:
    """``requests_total`` of each worker, from its own file in the multiprocess directory."""
    served = {}
    for file in directory.glob("counter_*.db"):
        metrics = MultiProcessCollector.merge([str(file)])
        served[file.stem] = sum(
            sample.value
            for metric in metrics
            if metric.name == "glimprouter_proxy_requests"
            for sample in metric.samples
        )
    return served


def test_two_workers_serve_stream_guard_and_stop_cleanly(proxy: Proxy) -> None:
    health = wait_healthy(proxy)
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "small": "ok", "large": "ok"}

    # Each request on its own connection, until each worker's own file in the multiprocess
    # directory shows that it served some of them.
    root, body = proxy.root, {"model": "glimprouter", "messages": QUESTION}
    directory = metrics_directory(proxy.children())
    assert directory.name.startswith("glimprouter-metrics-")
    served, per_worker = 0, {}
    deadline = time.monotonic() + 10
    while len(per_worker) < 2 and time.monotonic() < deadline:
        response = httpx.post(f"{root}/v1/chat/completions", json=body, headers=AUTH, timeout=10)
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["message"]["content"] == "The answer is 42."
        assert response.headers["x-glimprouter-large-steps"] == "2"
        steps = response.json()["glimprouter"]["steps"]
        saved = sum(step["tokens"] for step in steps if step["model"] == "small")
        assert response.headers["x-glimprouter-saved-tokens"] == str(saved) != "0"
        served += 1
        per_worker = {pid: n for pid, n in served_per_worker(directory).items() if n}
    assert len(per_worker) == 2, f"one worker answered all {served} requests"
    assert sum(per_worker.values()) == served
    # No worker served them all, yet every scrape, whichever worker takes it, counts them all.
    for _ in range(6):
        assert scraped(root, "glimprouter_proxy_requests_total") == served
        assert scraped(root, "glimprouter_proxy_steps_total") == 4 * served
        assert scraped(root, "glimprouter_proxy_large_tokens_saved_total") == saved * served
        assert scraped(root, "glimprouter_proxy_saved_share_count") == served
        assert scraped(root, "glimprouter_proxy_requests_in_flight") == 0

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
    assert not directory.exists()
