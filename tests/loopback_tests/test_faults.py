"""Fault injection: every failure ends in time with its documented outcome, and no request is
left running on either server (docs/errors.md)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from langchain_glimprouter import (
    BackendResponseError,
    BackendTimeoutError,
    BackendUnreachableError,
    StreamErrorEventError,
    StreamInterruptedError,
    StreamTimeoutError,
)
from scripted_server import Faults, ScriptedServer
from tests.support.pair import LARGE_STEPS, SMALL_STEPS, router_for

QUESTION = "What is 6 times 7?"
# threshold 1.0 with H_INIT [0.2, 1.5, 0.1, 2.0]: small, large, small, large.
EXPECTED = [SMALL_STEPS[0], LARGE_STEPS[1], SMALL_STEPS[2], LARGE_STEPS[3]]


@pytest.fixture
def pair(servers: Any) -> Iterator[tuple[ScriptedServer, ScriptedServer]]:
    small, large = servers()
    yield small, large
    assert small.wait_idle(timeout=3), "a request is still running on the small server"
    assert large.wait_idle(timeout=3), "a request is still running on the large server"


def steps_of(msg: Any) -> list[str]:
    return [s["text"] for s in msg.response_metadata["glimprouter"]["steps"]]


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_transient_http_errors_are_retried(pair: Any, status: int) -> None:
    small, large = pair
    large.faults = Faults(status=status, status_from=1, status_count=1)
    msg = router_for(small, large).invoke(QUESTION)
    assert steps_of(msg) == EXPECTED
    assert msg.content == "The answer is 42."
    assert msg.response_metadata["glimprouter"]["retries"] == 1


def test_persistent_errors_raise_after_max_retries(pair: Any) -> None:
    small, large = pair
    large.faults = Faults(status=500)
    started = time.monotonic()
    with pytest.raises(BackendResponseError, match=r"\[large backend .*HTTP 500"):
        router_for(small, large, max_retries=2).invoke(QUESTION)
    assert len(large.requests) == 3  # the first try and two retries
    assert time.monotonic() - started < 3  # backoff 0.25 s + 0.5 s


@pytest.mark.parametrize("role", ["small", "large"])
def test_cut_streams_resume_without_duplicating_text(pair: Any, role: str) -> None:
    small, large = pair
    server = small if role == "small" else large
    server.faults = Faults(cut_after=2, cut_count=1)
    model = router_for(small, large)
    msg = model.invoke(QUESTION)
    assert steps_of(msg) == EXPECTED
    assert msg.additional_kwargs["reasoning_content"] == "\n\n".join(EXPECTED)
    assert msg.response_metadata["glimprouter"]["resumed_streams"] == 1
    resumed = server.requests[-1] if role == "large" else None
    assert resumed is None or resumed.prompt.startswith(server.requests[0].prompt)


def test_cut_stream_resumes_in_streaming_mode(pair: Any) -> None:
    small, large = pair
    small.faults = Faults(cut_after=3, cut_count=1)
    chunks = list(router_for(small, large).stream(QUESTION))
    total = chunks[0]
    for chunk in chunks[1:]:
        total += chunk
    assert total.additional_kwargs["reasoning_content"] == "\n\n".join(EXPECTED)
    assert total.content == "The answer is 42."


def test_cut_answer_resumes(pair: Any) -> None:
    small, large = pair
    model = router_for(small, large, threshold=float("inf"))
    large.faults = Faults(cut_after=2, cut_count=1)
    msg = model.invoke(QUESTION)
    assert msg.content == "The answer is 42."


def test_repeated_cuts_end_in_a_typed_error(pair: Any) -> None:
    small, large = pair
    large.faults = Faults(cut_after=1, cut_count=100)
    with pytest.raises(StreamInterruptedError, match=r"\[large backend"):
        router_for(small, large, max_retries=1).invoke(QUESTION)


def test_stall_times_out(pair: Any) -> None:
    small, large = pair
    small.faults = Faults(stall_s=3.0)
    started = time.monotonic()
    with pytest.raises(BackendTimeoutError, match="small backend"):
        router_for(small, large, timeout=0.3).invoke(QUESTION)
    assert time.monotonic() - started < 2.0


def test_garbage_events_are_a_response_error(pair: Any) -> None:
    small, large = pair
    small.faults = Faults(garbage=True)
    with pytest.raises(BackendResponseError, match="malformed server-sent event"):
        router_for(small, large).invoke(QUESTION)


ONE_FAULT_MID_STREAM: dict[str, Callable[[], Faults]] = {
    "malformed event": lambda: Faults(garbage=True, garbage_after=2, garbage_count=1),
    "error event 500": lambda: Faults(error_event=500, error_event_after=2, error_event_count=1),
    "error event 503": lambda: Faults(error_event=503, error_event_after=2, error_event_count=1),
    "stall": lambda: Faults(stall_s=3.0, stall_after=2, stall_count=1),
}
"""Faults that break one stream after its second token: an event that is not JSON (a proxy
that garbled the stream), vLLM's error event when generation fails in its engine (500) or a
failure it says is safe to retry (503), no chunk within the timeout (0.5 s here)."""


@pytest.mark.parametrize("fault", ONE_FAULT_MID_STREAM)
@pytest.mark.parametrize("role", ["small", "large"])
def test_one_fault_mid_stream_is_resumed(pair: Any, role: str, fault: str) -> None:
    """The stream is resumed from the text before the fault, like a cut stream: nothing lost
    or doubled, and the broken request does not run on (the pair fixture checks both servers
    end idle; for the stall, closing the connection is what aborts it)."""
    small, large = pair
    server = small if role == "small" else large
    server.faults = ONE_FAULT_MID_STREAM[fault]()
    started = time.monotonic()
    msg = router_for(small, large, timeout=0.5).invoke(QUESTION)
    assert time.monotonic() - started < 2.5
    assert steps_of(msg) == EXPECTED
    assert msg.additional_kwargs["reasoning_content"] == "\n\n".join(EXPECTED)
    assert msg.content == "The answer is 42."
    assert msg.response_metadata["glimprouter"]["resumed_streams"] == 1
    broken, resumed = server.requests[:2]
    assert not broken.finished
    assert resumed.prompt.startswith(broken.prompt)
    assert len(resumed.prompt) > len(broken.prompt)  # with the text received


def test_repeated_error_events_end_in_a_typed_error(pair: Any) -> None:
    small, large = pair
    large.faults = Faults(error_event=500, error_event_after=1)
    with pytest.raises(StreamErrorEventError, match=r"\[large backend.*code 500") as caught:
        router_for(small, large, max_retries=1).invoke(QUESTION)
    assert caught.value.status_code == 500
    assert len(large.requests) == 2  # the stream and one resumption


def test_an_error_event_no_retry_fixes_is_final(pair: Any) -> None:
    """An error event with a client error's code (a request the server refuses) is not
    resumed: a new request would meet it again."""
    small, large = pair
    small.faults = Faults(error_event=400, error_event_after=1)
    with pytest.raises(BackendResponseError, match="HTTP 400: injected failure") as caught:
        router_for(small, large).invoke(QUESTION)
    assert not isinstance(caught.value, StreamInterruptedError)
    assert len(small.requests) == 1


def test_a_stream_that_stalls_again_raises_after_one_resumption(pair: Any) -> None:
    small, large = pair
    small.faults = Faults(stall_s=3.0, stall_after=2)
    started = time.monotonic()
    with pytest.raises(StreamTimeoutError, match=r"small backend.*no chunk within 0.3 s"):
        router_for(small, large, timeout=0.3, max_retries=3).invoke(QUESTION)
    assert time.monotonic() - started < 2.0
    assert len(small.requests) == 2  # once resumed, however many retries


def test_small_backend_down_raises_by_default(pair: Any) -> None:
    small, large = pair
    small.stop()
    with pytest.raises(BackendUnreachableError, match="small backend"):
        router_for(small, large, max_retries=0).invoke(QUESTION)


def test_small_backend_down_falls_back_to_large(pair: Any) -> None:
    small, large = pair
    small.stop()
    msg = router_for(small, large, max_retries=0, on_small_failure="large").invoke(QUESTION)
    rec = msg.response_metadata["glimprouter"]
    assert [s["model"] for s in rec["steps"]] == ["large"] * 4
    assert all(s["fallback"] for s in rec["steps"])
    assert steps_of(msg) == LARGE_STEPS
    assert rec["small_failures"] == 1
    assert msg.content == "The answer is 42."


def test_small_failing_mid_step_hands_the_step_to_large(pair: Any) -> None:
    small, large = pair
    small.faults = Faults(cut_after=2, cut_count=100)
    model = router_for(small, large, max_retries=1, on_small_failure="large")
    msg = model.invoke(QUESTION)
    rec = msg.response_metadata["glimprouter"]
    first = rec["steps"][0]
    assert first["model"] == "large"
    assert first["fallback"]
    # The large model continued the text the small one had written (two streams of two tokens
    # each, both cut): nothing of it lost or doubled.
    partial = "small writes step zero"
    assert first["text"].startswith(partial)
    assert first["text"].count("small") == 1
    assert large.requests[0].prompt.endswith("<think>\n" + partial)
    assert rec["small_failures"] == 1
    assert all(s["model"] == "large" for s in rec["steps"])
    assert msg.content == "The answer is 42."


# The async path runs on the router's own asyncio network backend (http/network.py): the same
# faults end the same way there.


@pytest.mark.parametrize("role", ["small", "large"])
async def test_async_cut_streams_resume_without_duplicating_text(pair: Any, role: str) -> None:
    small, large = pair
    (small if role == "small" else large).faults = Faults(cut_after=2, cut_count=1)
    msg = await router_for(small, large).ainvoke(QUESTION)
    assert steps_of(msg) == EXPECTED
    assert msg.additional_kwargs["reasoning_content"] == "\n\n".join(EXPECTED)
    assert msg.response_metadata["glimprouter"]["resumed_streams"] == 1


async def test_async_transient_http_errors_are_retried(pair: Any) -> None:
    small, large = pair
    large.faults = Faults(status=503, status_from=1, status_count=1)
    msg = await router_for(small, large).ainvoke(QUESTION)
    assert steps_of(msg) == EXPECTED
    assert msg.response_metadata["glimprouter"]["retries"] == 1


async def test_async_repeated_cuts_end_in_a_typed_error(pair: Any) -> None:
    small, large = pair
    large.faults = Faults(cut_after=1, cut_count=100)
    with pytest.raises(StreamInterruptedError, match=r"\[large backend"):
        await router_for(small, large, max_retries=1).ainvoke(QUESTION)


async def test_async_stall_times_out(pair: Any) -> None:
    small, large = pair
    small.faults = Faults(stall_s=3.0)
    started = time.monotonic()
    with pytest.raises(BackendTimeoutError, match="small backend"):
        await router_for(small, large, timeout=0.3).ainvoke(QUESTION)
    assert time.monotonic() - started < 2.0


@pytest.mark.parametrize("fault", ONE_FAULT_MID_STREAM)
async def test_async_one_fault_mid_stream_is_resumed(pair: Any, fault: str) -> None:
    small, large = pair
    small.faults = ONE_FAULT_MID_STREAM[fault]()
    msg = await router_for(small, large, timeout=0.5).ainvoke(QUESTION)
    assert steps_of(msg) == EXPECTED
    assert msg.response_metadata["glimprouter"]["resumed_streams"] == 1


async def test_async_small_backend_down_raises(pair: Any) -> None:
    small, large = pair
    small.stop()
    with pytest.raises(BackendUnreachableError, match=r"small backend.*cannot connect"):
        await router_for(small, large, max_retries=0).ainvoke(QUESTION)


async def test_async_stream_left_early_aborts_the_request(pair: Any) -> None:
    small, large = pair
    model = router_for(small, large)
    async for _ in model.astream(QUESTION):
        break  # leave after the first chunk: the pair fixture checks both servers go idle
    assert small.requests[-1].finished is False
