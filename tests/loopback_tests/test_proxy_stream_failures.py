"""A stream that fails after it started, as the clients see it on loopback (a scripted large
server whose stream is cut mid-step, the router told not to retry): the Responses API ends
with ``response.failed`` whose ``error`` the openai SDK's own types accept (a code of OpenAI's
enum, the proxy's own in ``glimprouter_code``); chat completions with its error chunk, which
the SDK raises as ``APIError``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openai.types.responses import ResponseFailedEvent

from langchain_glimprouter.proxy import create_app
from scripted_server import Faults
from tests.support.proxy import QUESTION, REASONING, ServedApp, answering, proxy_router

KEY = "proxy-key"


@pytest.fixture
def failing(servers: Any) -> Iterator[openai.OpenAI]:
    """The SDK before the proxy whose large server cuts its first streams mid-step."""
    small, large = servers(**answering("The answer is 42."))
    large.faults = Faults(cut_after=2, cut_count=9)
    router = proxy_router(small, large, max_retries=0)
    with ServedApp(create_app(router, api_key=KEY)) as app:
        yield openai.OpenAI(base_url=app.base_url, api_key=KEY, max_retries=0)


def test_responses_stream_ends_with_response_failed_in_openais_types(
    failing: openai.OpenAI,
) -> None:
    kinds, chain = [], ""
    with failing.responses.stream(model="glimprouter", input="What is 6 times 7?") as stream:
        for event in stream:
            kinds.append(event.type)
            if event.type == "response.reasoning_text.delta":
                chain += event.delta
        with pytest.raises(RuntimeError, match=r"response\.completed"):
            stream.get_final_response()  # the SDK's word for a response that did not complete
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.failed"
    assert chain  # the steps before the cut arrived
    assert REASONING.startswith(chain)
    assert "error" not in kinds  # one terminal event, as for a response that failed


def test_responses_create_stream_gives_the_failed_event_typed(failing: openai.OpenAI) -> None:
    events = list(failing.responses.create(model="glimprouter", input="Q?", stream=True))
    failed = events[-1]
    assert isinstance(failed, ResponseFailedEvent)
    error = failed.response.error
    assert error is not None
    assert (error.code, error.type) == ("server_error", "server_error")
    assert (error.model_extra or {})["glimprouter_code"] == "stream_interrupted"
    assert "(request req_" in error.message
    assert failed.response.status == "failed"
    assert [item.type for item in failed.response.output] == ["reasoning"]


def test_chat_completions_stream_raises_the_sdks_api_error(failing: openai.OpenAI) -> None:
    stream = failing.chat.completions.create(model="glimprouter", messages=QUESTION, stream=True)  # type: ignore[arg-type]
    with pytest.raises(openai.APIError, match="stream was cut") as raised:
        list(stream)
    assert raised.value.code == "stream_interrupted"
