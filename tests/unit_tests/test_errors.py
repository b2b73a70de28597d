"""Bad input and failing servers end in typed errors, fast, with nothing left running."""

from __future__ import annotations

import math
from typing import Any

import pytest
from langchain_core.messages import HumanMessage

from langchain_glimprouter import (
    Backend,
    BackendTimeoutError,
    BudgetError,
    ContextLengthExceededError,
    GlimpRouterChatModel,
    GlimpRouterError,
    InvalidArgumentError,
    MissingLogprobsError,
    StreamErrorEventError,
)
from scripted_server import Faults
from tests.support.pair import router_for

QUESTION = "What is 6 times 7?"
B = Backend(base_url="http://127.0.0.1:9/v1", model="m")


@pytest.mark.parametrize(
    ("settings", "error"),
    [
        ({"threshold": -0.1}, InvalidArgumentError),
        ({"threshold": math.nan}, InvalidArgumentError),
        ({"max_reasoning_tokens": 0}, BudgetError),
        ({"max_tokens": -1}, BudgetError),
        ({"top_logprobs": 0}, InvalidArgumentError),
        ({"step_delimiter": ""}, InvalidArgumentError),
    ],
)
def test_invalid_settings_are_named(settings: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error) as raised:
        GlimpRouterChatModel(small=B, large=B, **settings)
    assert getattr(raised.value, "param", None) == next(iter(settings))


def test_invalid_calls_fail_before_any_request(servers: Any) -> None:
    small, large = servers()
    model = router_for(small, large)
    with pytest.raises(InvalidArgumentError, match="empty"):
        model.invoke([])
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    with pytest.raises(InvalidArgumentError, match="text only"):
        model.invoke([HumanMessage(content=[image])])
    with pytest.raises(InvalidArgumentError, match="unsupported call arguments"):
        model.invoke(QUESTION, frequency_penalty=1.0)
    with pytest.raises(InvalidArgumentError):
        model.invoke(QUESTION, threshold=-1)
    assert small.requests == []
    assert large.requests == []


def test_top_logprobs_above_the_server_cap(servers: Any) -> None:
    small, large = servers(max_logprobs=5)
    with pytest.raises(InvalidArgumentError, match="top_logprobs <= 5") as raised:
        router_for(small, large, top_logprobs=6).invoke(QUESTION)
    assert raised.value.param == "top_logprobs"


def test_missing_logprobs_names_the_server_flag(servers: Any) -> None:
    small, large = servers()
    model = router_for(small, large)
    model = model.model_copy(
        update={"small": model.small.model_copy(update={"extra_body": {"logprobs": None}})}
    )
    with pytest.raises(MissingLogprobsError, match="--max-logprobs"):
        model.invoke(QUESTION)
    assert small.wait_idle()


def test_context_length_exceeded(servers: Any) -> None:
    small, large = servers(max_model_len=20)
    with pytest.raises(ContextLengthExceededError, match="--max-model-len"):
        router_for(small, large).invoke(QUESTION * 20)


def test_every_error_is_a_glimprouter_error() -> None:
    for error in (BudgetError, InvalidArgumentError, MissingLogprobsError, BackendTimeoutError):
        assert issubclass(error, GlimpRouterError)


def test_client_errors_are_not_retried(servers: Any) -> None:
    small, large = servers(max_model_len=30)
    with pytest.raises(ContextLengthExceededError):
        router_for(small, large).invoke(QUESTION * 10)
    assert len(small.requests) == 1
    assert small.wait_idle()


def test_missing_logprobs(servers: Any) -> None:
    small, large = servers()
    small.faults = Faults(drop_logprobs=True)
    with pytest.raises(MissingLogprobsError, match="--max-logprobs >= 20"):
        router_for(small, large).invoke(QUESTION)
    assert small.wait_idle(timeout=3), "a request is still running on the small server"


def test_configuration_errors_never_fall_back(servers: Any) -> None:
    small, large = servers()
    small.faults = Faults(drop_logprobs=True)
    with pytest.raises(MissingLogprobsError):
        router_for(small, large, on_small_failure="large").invoke(QUESTION)
    assert small.wait_idle(timeout=3), "a request is still running on the small server"


@pytest.mark.parametrize("role", ["small", "large"])
def test_an_error_event_mid_stream_is_resumed(servers: Any, role: str) -> None:
    small, large = servers()
    (small if role == "small" else large).faults = Faults(
        error_event=500, error_event_after=2, error_event_count=1
    )
    msg = router_for(small, large).invoke(QUESTION)
    record = msg.response_metadata["glimprouter"]
    assert record["resumed_streams"] == 1
    assert [s["text"] for s in record["steps"]] == [
        "small writes step zero", "large writes step one", "small writes step two",
        "large writes step three"]  # fmt: skip
    assert small.wait_idle()
    assert large.wait_idle()


def test_error_events_that_persist_raise_after_max_retries(servers: Any) -> None:
    small, large = servers()
    small.faults = Faults(error_event=500, error_event_after=1)
    with pytest.raises(StreamErrorEventError, match=r"\[small backend"):
        router_for(small, large, max_retries=2).invoke(QUESTION)
    assert len(small.requests) == 3
