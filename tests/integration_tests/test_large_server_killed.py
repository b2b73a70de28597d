"""A real vLLM server killed mid-run. Marked ``after_vllm_pair``: it kills the session's large
server, so conftest.py runs it after every other test."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from langchain_glimprouter import GlimpRouterChatModel, GlimpRouterError

from .conftest import Pair, metric


@pytest.mark.after_vllm_pair
def test_killing_the_large_server_mid_step_ends_in_a_typed_error(vllm_pair: Pair) -> None:
    if not vllm_pair.servers:
        pytest.skip("the servers were not started by this session, so it may not kill them")
    model = GlimpRouterChatModel(
        small=vllm_pair.small,
        large=vllm_pair.large,
        threshold=0.0,  # every step on the large server, which is about to die
        max_reasoning_tokens=2000,
        max_tokens=64,
        max_retries=1,
        timeout=30,
    )
    outcome: list[BaseException | object] = []

    def call() -> None:
        try:
            outcome.append(model.invoke("Write a long story about a lighthouse keeper."))
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=call)
    worker.start()
    deadline = time.monotonic() + 30
    while metric(vllm_pair.large, "vllm:num_requests_running") == 0:
        assert time.monotonic() < deadline, "the large server never got a request"
        time.sleep(0.05)
    large = vllm_pair.servers[1]
    assert large.process is not None
    os.killpg(large.process.pid, signal.SIGKILL)
    started = time.monotonic()
    worker.join(timeout=60)
    assert not worker.is_alive(), "the router hangs after its server died"
    assert time.monotonic() - started < 30
    assert len(outcome) == 1
    assert isinstance(outcome[0], GlimpRouterError)
    assert "large backend" in str(outcome[0])
    # The small server is left clean.
    assert metric(vllm_pair.small, "vllm:num_requests_running") == 0
