"""Bad input and failing servers end in typed errors, fast, with nothing left running."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import httpx2
import openai
import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import HumanMessage

from langchain_glimprouter import (
    Backend,
    BackendResponseError,
    BackendTimeoutError,
    BackendUnreachableError,
    BudgetError,
    ContextLengthExceededError,
    GlimpRouterChatModel,
    GlimpRouterError,
    InvalidArgumentError,
    MissingLogprobsError,
)
from langchain_glimprouter.cli.servers import free_port
from scripted_server import Faults, Script

from .conftest import router_for

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
def test_invalid_settings(settings: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        GlimpRouterChatModel(small=B, large=B, **settings)


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
    with pytest.raises(InvalidArgumentError, match="top_logprobs <= 5"):
        router_for(small, large, top_logprobs=6).invoke(QUESTION)


def test_missing_logprobs_names_the_server_flag(servers: Any) -> None:
    small, large = servers()
    model = router_for(small, large)
    model = model.model_copy(
        update={"small": model.small.model_copy(update={"extra_body": {"logprobs": None}})}
    )
    with pytest.raises(MissingLogprobsError, match="--max-logprobs"):
        model.invoke(QUESTION)
    assert small.wait_idle()


def test_unreachable_backend() -> None:
    dead = Backend(base_url=f"http://127.0.0.1:{free_port()}/v1", model="m")
    model = GlimpRouterChatModel(small=dead, large=dead, max_retries=0)
    with pytest.raises(BackendUnreachableError, match=r"\[small backend at http://127.0.0.1"):
        model.invoke(QUESTION)


def test_context_length_exceeded(servers: Any) -> None:
    small, large = servers(max_model_len=20)
    with pytest.raises(ContextLengthExceededError, match="--max-model-len"):
        router_for(small, large).invoke(QUESTION * 20)


def test_read_timeout_aborts_the_request(servers: Any) -> None:
    small, large = servers(decode_s=0.5)
    model = router_for(small, large, timeout=0.2)
    with pytest.raises(BackendTimeoutError, match="timeout"):
        model.invoke(QUESTION)
    assert small.wait_idle()
    assert large.wait_idle()


async def test_cancelling_closes_every_stream(servers: Any) -> None:
    small, large = servers(
        small=Script(steps=["a b c d e f g h i j k l m n o p"] * 3, h_init=0.1),
        decode_s=0.05,
    )
    task = asyncio.create_task(router_for(small, large).ainvoke(QUESTION))
    for _ in range(500):  # until a step streams (each takes 0.8 s), however busy the machine
        if small.active == 1:
            break
        await asyncio.sleep(0.01)
    assert small.active == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert small.wait_idle(timeout=2)
    assert not small.requests[-1].finished


def test_breaking_out_of_a_stream_closes_it(servers: Any) -> None:
    small, large = servers(
        small=Script(steps=["a b c d e f g h i j k l m n o p"] * 3, h_init=0.1),
        decode_s=0.02,
    )
    for chunk in router_for(small, large).stream(QUESTION):
        if chunk.additional_kwargs.get("reasoning_content"):
            break
    assert small.wait_idle(timeout=2)


def test_secrets_never_leak(servers: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GLIMPROUTER_SMALL_API_KEY", "sk-small-env")
    small, large = servers()
    model = router_for(small, large, api_key="sk-router")
    msg = model.invoke(QUESTION)
    text = repr(model) + str(model.model_dump()) + str(msg) + str(msg.response_metadata)
    for secret in ("sk-small-env", "sk-router"):
        assert secret not in text
    # the router's key wins over the environment's, and reaches the server
    assert {r.authorization for r in small.requests} == {"Bearer sk-router"}


def test_no_key_sends_no_authorization(servers: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK insists on a key; without one the servers get no Authorization header at all."""
    for name in ("OPENAI_API_KEY", "GLIMPROUTER_SMALL_API_KEY", "GLIMPROUTER_LARGE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    small, large = servers()
    router_for(small, large).invoke(QUESTION)
    assert {r.authorization for r in small.requests + large.requests} == {None}


def test_every_error_is_a_glimprouter_error() -> None:
    for error in (BudgetError, InvalidArgumentError, MissingLogprobsError, BackendTimeoutError):
        assert issubclass(error, GlimpRouterError)


class _CtrlC(BaseCallbackHandler):
    """Presses Ctrl-C (raises KeyboardInterrupt in the caller's thread) at the first answer
    token, while the answer's stream is open."""

    def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
        if token:  # reasoning chunks come with an empty token
            raise KeyboardInterrupt


def test_keyboard_interrupt_in_sync_use_closes_the_stream(servers: Any) -> None:
    """A KeyboardInterrupt raised in the caller's thread while a stream is open (here from a
    callback, at a known point; a real Ctrl-C lands wherever the thread is, and one that lands
    in a finaliser is dropped by Python itself) closes the stream: the server aborts it."""
    small, large = servers(
        large=Script(steps=["x"], answer=" ".join("abcdefghijklmnopqrstuvwxyz")), decode_s=0.02
    )
    router = router_for(small, large, streaming=True, callbacks=[_CtrlC()])
    with pytest.raises(KeyboardInterrupt):
        router.invoke(QUESTION)
    assert small.wait_idle(timeout=2)
    assert large.wait_idle(timeout=2)
    answer = large.requests[-1]
    assert not answer.finished
    assert answer.generated_tokens < 26


async def test_a_callers_own_clients(servers: Any) -> None:
    """Your own SDK clients (custom auth, gateways) or httpx2 clients (proxies, transports):
    the router uses them, with its own timeout and no SDK retries, and never shows them."""
    small, large = servers()
    seen: list[str] = []
    http = httpx2.Client(event_hooks={"request": [lambda r: seen.append(str(r.url))]})

    async def aseen(request: httpx2.Request) -> None:
        seen.append("async " + str(request.url))

    ahttp = httpx2.AsyncClient(event_hooks={"request": [aseen]})
    own = openai.OpenAI(api_key="sk-own", base_url="http://elsewhere:1/v1", max_retries=5)
    aown = openai.AsyncOpenAI(api_key="sk-own", base_url="http://elsewhere:1/v1")
    model = GlimpRouterChatModel(
        small=Backend(base_url=small.base_url, model="small-m", client=own, async_client=aown),
        large=Backend(
            base_url=large.base_url, model="large-m", http_client=http, http_async_client=ahttp
        ),
        threshold=1.0,
        api_key="sk-router",
    )
    assert (await model.ainvoke(QUESTION)).content == model.invoke(QUESTION).content
    assert {r.authorization for r in small.requests} == {"Bearer sk-own"}
    assert {r.authorization for r in large.requests} == {"Bearer sk-router"}
    assert any(u.startswith(large.base_url) for u in seen)
    assert any(u.startswith("async " + large.base_url) for u in seen)
    text = repr(model) + str(model.model_dump()) + repr(model.small)
    assert "sk-own" not in text
    assert "client" not in model.small.model_dump()
    assert own.max_retries == 5  # the router used a copy: the caller's client is unchanged
    before = len(small.requests)
    small.faults = Faults(status=503)
    with pytest.raises(BackendResponseError, match="HTTP 503"):
        model.model_copy(update={"max_retries": 1}).invoke(QUESTION)
    assert len(small.requests) - before == 2  # one retry, the router's; none of the SDK's 5
    http.close()
    await ahttp.aclose()


async def test_an_own_async_client_keeps_its_key(
    servers: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only an async client given: ainvoke authenticates with it, invoke sends no key at all."""
    for name in ("OPENAI_API_KEY", "GLIMPROUTER_SMALL_API_KEY", "GLIMPROUTER_LARGE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    small, large = servers()
    aown = openai.AsyncOpenAI(api_key="sk-async", base_url=small.base_url)
    model = GlimpRouterChatModel(
        small=Backend(base_url=small.base_url, model="small-m", async_client=aown),
        large=Backend(base_url=large.base_url, model="large-m"),
        threshold=1.0,
    )
    await model.ainvoke(QUESTION)
    assert {r.authorization for r in small.requests} == {"Bearer sk-async"}
    small.reset()
    model.invoke(QUESTION)
    assert {r.authorization for r in small.requests} == {None}
