"""Small pure pieces: SSE parsing, error mapping, thinking-block handling, templates, the
chain's two field names."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from openai.types.chat.chat_completion_chunk import ChoiceDelta

from langchain_glimprouter import GlimpRouterChatModel
from langchain_glimprouter.backend import Backend
from langchain_glimprouter.core.generation import Holdback
from langchain_glimprouter.core.prompts import open_thinking, render_jinja
from langchain_glimprouter.core.tool_calls import HermesToolCallParser
from langchain_glimprouter.core.wire import parse_chunk
from langchain_glimprouter.errors import (
    BackendResponseError,
    ContextLengthExceededError,
    InvalidArgumentError,
    StreamErrorEventError,
    StreamInterruptedError,
)
from langchain_glimprouter.http.failures import error_from_response, stream_error
from langchain_glimprouter.reasoning_fields import reasoning_of

# A chunk exactly as vLLM 0.32 streams it (first token, logprobs=3, continuous usage).
VLLM_CHUNK = {
    "id": "cmpl-1",
    "object": "text_completion",
    "choices": [
        {
            "index": 0,
            "text": "",
            "logprobs": {
                "text_offset": [0],
                "token_logprobs": [-0.87],
                "tokens": ["\n"],
                "top_logprobs": [{"\n": -0.87, "2": -1.62, "1": -3.0}],
            },
            "finish_reason": None,
            "stop_reason": None,
        }
    ],
    "usage": {"prompt_tokens": 25, "total_tokens": 26, "completion_tokens": 1},
}


def test_parse_vllm_chunk() -> None:
    chunk = parse_chunk(VLLM_CHUNK)
    assert chunk.text == ""
    assert chunk.n_tokens == 1
    assert chunk.first_token == "\n"
    assert chunk.top_logprobs == {"\n": -0.87, "2": -1.62, "1": -3.0}
    assert chunk.reports_stop_reason
    assert (chunk.prompt_tokens, chunk.completion_tokens) == (25, 1)


def test_parse_usage_only_chunk() -> None:
    chunk = parse_chunk({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 9}})
    assert chunk.n_tokens == 0
    assert chunk.completion_tokens == 9
    assert chunk.finish_reason is None


def _error(message: str) -> str:
    return json.dumps({"error": {"message": message, "type": "BadRequestError", "code": 400}})


def test_error_mapping() -> None:
    too_long = _error("This model's maximum context length is 4096 tokens. However, ...")
    err = error_from_response("large", "http://x/v1", 400, too_long)
    assert isinstance(err, ContextLengthExceededError)
    assert "--max-model-len" in str(err)
    assert "[large backend at http://x/v1]" in str(err)

    cap = _error("Requested sample logprobs of 21, which is greater than max allowed: 20")
    err = error_from_response("small", "http://x/v1", 400, cap)
    assert isinstance(err, InvalidArgumentError)
    assert "top_logprobs <= 20" in str(err)
    assert "--max-logprobs" in str(err)

    err = error_from_response("small", "http://x/v1", 404, "not json")
    assert isinstance(err, BackendResponseError)
    assert err.status_code == 404
    assert "base_url" in str(err)


def _event(error: dict[str, Any]) -> bytes:
    return json.dumps({"error": error}).encode()


def test_error_events_mid_stream() -> None:
    """vLLM's error event carries the status in ``code``: the server's own failures are resumed
    (StreamErrorEventError), what a new request would meet again stays the answer's error."""
    url = "http://x/v1/completions"
    failed = stream_error("small", url, _event({"message": "Internal server error", "code": 500}))
    assert isinstance(failed, StreamErrorEventError)
    assert isinstance(failed, StreamInterruptedError)
    assert failed.status_code == 500
    assert "code 500: Internal server error" in str(failed)
    assert stream_error("small", url, _event({"message": "retry", "code": 503})).status_code == 503
    for codeless in ({"message": "boom"}, {"message": "boom", "code": "server_error"}):
        assert isinstance(stream_error("small", url, _event(codeless)), StreamErrorEventError)
    too_long = _event({"message": "This model's maximum context length is 10 tokens", "code": 400})
    assert isinstance(stream_error("large", url, too_long), ContextLengthExceededError)
    refused = stream_error("large", url, _event({"message": "bad", "code": 400}))
    assert type(refused) is BackendResponseError
    assert refused.status_code == 400


def test_root_url_and_secret_repr() -> None:
    backend = Backend(base_url="http://h:1/v1/", model="m", api_key="sk-secret")  # type: ignore[arg-type]
    assert backend.root_url == "http://h:1"
    assert "sk-secret" not in repr(backend)
    assert "sk-secret" not in str(backend.model_dump())


class _OwnParser(HermesToolCallParser):
    """A parser of the caller's own."""


def test_backend_and_router_dump_to_json_without_keys_or_clients() -> None:
    """The tool parser is named by its class (code cannot be JSON); clients and keys never show."""
    own = openai.OpenAI(api_key="sk-client", base_url="http://h:1/v1")
    backend = Backend(base_url="http://h:1/v1", model="m", api_key="sk-secret", client=own)  # type: ignore[arg-type]
    dumped = json.loads(backend.model_dump_json())
    assert dumped["tool_parser"] == "HermesToolCallParser"
    assert dumped["api_key"] == "**********"
    assert not {"client", "async_client", "http_client", "http_async_client"} & set(dumped)
    assert Backend.model_validate(dumped | {"api_key": None}).tool_parser == HermesToolCallParser()
    assert backend.model_dump()["tool_parser"] == HermesToolCallParser()  # Python: the object
    custom = Backend(base_url="http://h:1/v1", model="m", tool_parser=_OwnParser())
    router = GlimpRouterChatModel(small=backend, large=custom, api_key="sk-router")  # type: ignore[arg-type]
    text = router.model_dump_json()
    assert json.loads(text)["large"]["tool_parser"] == "_OwnParser"
    assert "sk-" not in text


def test_open_thinking_opens_exactly_once() -> None:
    assert open_thinking("<|im_start|>assistant\n") == "<|im_start|>assistant\n<think>\n"
    # DeepSeek-R1-Distill's generation prompt already opens the block.
    assert open_thinking("<｜Assistant｜><think>\n") == "<｜Assistant｜><think>\n"
    assert open_thinking("<｜Assistant｜><think>") == "<｜Assistant｜><think>\n"
    with pytest.raises(ValueError, match="closed the thinking block"):
        open_thinking("<|im_start|>assistant\n<think>\n\n</think>\n\n")


def test_render_jinja_like_transformers() -> None:
    template = (
        "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] | tojson }}\n"
        "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    text = render_jinja(template, [{"role": "user", "content": "hi"}], bos_token="<s>")
    assert text == '<s><|user|>"hi"\n<|assistant|>'


def test_holdback_never_releases_think_close() -> None:
    hold = Holdback(lead="\n\n")
    assert hold.delta("So 5") == "\n\nSo 5"
    assert hold.delta("So 5.</th") == "."
    assert hold.delta("So 5.</think>") == ""
    assert hold.delta("So 5.</think>", final=True) == ""
    fresh = Holdback(lead="")
    assert fresh.delta("   ") == ""  # whitespace alone is not a step yet
    assert fresh.delta("   x<", final=True) == "   x<"


def test_the_chain_is_read_under_either_name() -> None:
    assert reasoning_of({"content": "42", "reasoning": "new"}) == "new"  # vLLM since #27752
    assert reasoning_of({"content": "42", "reasoning_content": "old"}) == "old"  # before
    assert reasoning_of({"reasoning": None, "reasoning_content": "old"}) == "old"
    assert reasoning_of({"content": "42"}) == ""
    delta = ChoiceDelta.model_validate({"content": "", "reasoning": "sdk"})  # the SDK's extra
    assert reasoning_of(delta) == "sdk"
    assert reasoning_of(ChoiceDelta(content="42")) == ""
