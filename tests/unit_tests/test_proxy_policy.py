"""The operator's policy over per-request router settings, and what a client is told of a
failure (issue 27, "Policy")."""

from __future__ import annotations

from typing import Any

import pytest

from langchain_glimprouter.errors import InvalidArgumentError
from langchain_glimprouter.proxy import create_app
from langchain_glimprouter.proxy.policy import MAX_RETRIES_CEILING, ClientPolicy
from scripted_server import Faults
from tests.support.proxy import QUESTION, asgi_client, proxy_router


async def post(app: Any, headers: dict[str, str] | None = None, **body: Any) -> Any:
    payload = {"model": "glimprouter", "messages": QUESTION, **body}
    async with asgi_client(app) as client:
        return await client.post("/v1/chat/completions", json=payload, headers=headers)


def refusal(response: Any) -> tuple[int, str, str]:
    error = response.json()["error"]
    return response.status_code, error["param"], error["code"]


@pytest.mark.parametrize(
    ("fields", "param", "code"),
    [
        ({"strategy": "large_only"}, "strategy", "setting_not_allowed"),
        ({"threshold": 0}, "threshold", "setting_not_allowed"),
        ({"entropy_estimator": "topk_tail"}, "entropy_estimator", "setting_not_allowed"),
        ({"probe": "separate"}, "probe", "setting_not_allowed"),
        ({"escalation_logprobs": 5}, "escalation_logprobs", "setting_not_allowed"),
        ({"on_small_failure": "large"}, "on_small_failure", "setting_not_allowed"),
        ({"max_reasoning_tokens": 100_000_000}, "max_reasoning_tokens", "setting_above_limit"),
        ({"max_retries": 1_000_000_000}, "max_retries", "setting_above_limit"),
        ({"max_retries": 3}, "max_retries", "setting_above_limit"),
        ({"max_tokens": 4096}, "max_tokens", "setting_above_limit"),
        ({"max_completion_tokens": 4096}, "max_completion_tokens", "setting_above_limit"),
    ],
)
async def test_by_default_a_client_may_only_tighten(
    servers: Any, fields: dict[str, Any], param: str, code: str
) -> None:
    small, large = servers()
    response = await post(create_app(proxy_router(small, large)), **fields)
    assert refusal(response) == (400, param, code)
    message = response.json()["error"]["message"]
    assert param in message
    assert "--client-settings" in message
    assert not small.requests  # refused before any backend is asked


async def test_lower_budgets_and_sampling_are_a_clients_to_set(servers: Any) -> None:
    small, large = servers()
    app = create_app(proxy_router(small, large))
    response = await post(
        app, max_reasoning_tokens=100, max_completion_tokens=50, max_retries=0,
        temperature=0.1, top_p=0.9, seed=3,
    )  # fmt: skip
    assert response.status_code == 200, response.text


async def test_the_operator_names_what_clients_may_set_with_caps(servers: Any) -> None:
    small, large = servers()
    app = create_app(
        proxy_router(small, large), client_settings="threshold,max_reasoning_tokens<=16384"
    )
    assert (await post(app, threshold=0, max_reasoning_tokens=16384)).status_code == 200
    assert refusal(await post(app, max_reasoning_tokens=16385)) == (
        400,
        "max_reasoning_tokens",
        "setting_above_limit",
    )
    assert refusal(await post(app, strategy="large_only"))[2] == "setting_not_allowed"


async def test_retries_have_a_ceiling_even_when_clients_may_set_them(servers: Any) -> None:
    small, large = servers()
    app = create_app(proxy_router(small, large), client_settings="max_retries")
    assert (await post(app, max_retries=MAX_RETRIES_CEILING)).status_code == 200
    big = await post(app, max_retries=1_000_000_000)
    assert refusal(big) == (400, "max_retries", "setting_above_limit")
    everything = create_app(proxy_router(small, large), client_settings="all")
    assert (await post(everything, max_retries=1_000_000_000)).status_code == 400
    assert (await post(everything, strategy="large_only")).status_code == 200


def test_the_flag_is_checked_and_round_trips() -> None:
    policy = ClientPolicy.parse(" threshold, max_completion_tokens<=512 ,strategy")
    assert dict(policy.allowed) == {"threshold": None, "max_tokens": 512, "strategy": None}
    assert ClientPolicy.parse(policy.spec()) == policy
    assert ClientPolicy.parse("all").spec() == "all"
    assert ClientPolicy.parse("") == ClientPolicy()
    with pytest.raises(InvalidArgumentError, match="'api_key' is no router setting"):
        ClientPolicy.parse("api_key")
    with pytest.raises(InvalidArgumentError, match="cap of threshold must be a number"):
        ClientPolicy.parse("threshold<=inf")


async def test_a_failure_tells_the_client_its_code_and_request_id_not_the_backend(
    servers: Any, caplog: pytest.LogCaptureFixture
) -> None:
    small, large = servers()
    small.faults = Faults(status=500)
    app = create_app(proxy_router(small, large, max_retries=0))
    response = await post(app, headers={"x-request-id": "abc-123"})
    assert response.status_code == 502
    assert response.headers["x-request-id"] == "abc-123"
    error = response.json()["error"]
    assert error["code"] == "backend_error"
    assert "abc-123" in error["message"]
    assert "http" not in error["message"]
    assert any("abc-123" in r.getMessage() and "http" in r.getMessage() for r in caplog.records)


async def test_every_answer_has_a_request_id(servers: Any) -> None:
    small, large = servers()
    app = create_app(proxy_router(small, large))
    first, second = await post(app), await post(app, stream=True)
    ids = {first.headers["x-request-id"], second.headers["x-request-id"]}
    assert len(ids) == 2
    assert all(i.startswith("req_") for i in ids)
    odd = await post(app, headers={"x-request-id": "bad id\twith spaces"})
    assert odd.headers["x-request-id"].startswith("req_")
