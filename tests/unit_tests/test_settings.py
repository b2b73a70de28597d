"""One source of truth for the router's settings, and a routing core with no LangChain or HTTP.

A router setting is declared once, as a field of RouterSettings (which the Router's config and
GlimpRouterChatModel inherit); these tests fail when one does not reach the core's
RouteSettings, the identifying params (LangChain's cache key), the bench results header, or the
CLI flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import pkgutil
import subprocess
import sys
from typing import Any

import pytest
from pydantic import SecretStr

from langchain_glimprouter import Backend, GlimpRouterChatModel, core
from langchain_glimprouter.backend import IDENTIFYING, identity
from langchain_glimprouter.cli import main as cli
from langchain_glimprouter.cli.bench.runner import model_config
from langchain_glimprouter.cli.flags import (
    BACKEND_FLAGS,
    FLAGS,
    NOT_FLAGS,
    add_router_flags,
    backends,
    router_values,
)
from langchain_glimprouter.core.settings import (
    DERIVED,
    PER_CALL,
    SETTING_NAMES,
    RouteSettings,
    route_settings,
)
from langchain_glimprouter.core.tool_calls import HermesToolCallParser

HI = [{"role": "user", "content": "hi"}]
SMALL = Backend(base_url="http://small.invalid/v1", model="s")
LARGE = Backend(base_url="http://large.invalid/v1", model="l")

# A valid value other than the default, for every router setting. A new setting must be added
# here, or test_every_setting_has_another_value fails.
OTHER: dict[str, dict[str, Any]] = {
    "threshold": {"threshold": 0.5},
    "strategy": {"strategy": "step_ppl"},
    "target_rate": {"threshold": "auto", "target_rate": 0.3},
    "entropy_estimator": {"entropy_estimator": "topk_bounds"},
    "escalation_logprobs": {"escalation_logprobs": 50},
    "probe": {"probe": "separate"},
    "max_reasoning_tokens": {"max_reasoning_tokens": 100},
    "max_tokens": {"max_tokens": 10},
    "temperature": {"temperature": 0.0},
    "top_p": {"top_p": 0.5},
    "seed": {"seed": 7},
    "top_logprobs": {"top_logprobs": 5},
    "step_delimiter": {"step_delimiter": ["\n\n", "\nWait,"]},
    "max_step_tokens": {"max_step_tokens": 64},
    "stop": {"stop": ["###"]},
    "max_retries": {"max_retries": 0},
    "on_small_failure": {"on_small_failure": "large"},
}


def router(**settings: Any) -> GlimpRouterChatModel:
    return GlimpRouterChatModel(small=SMALL, large=LARGE, **settings)


def test_every_setting_has_another_value() -> None:
    assert set(OTHER) == set(SETTING_NAMES)


@pytest.mark.parametrize("name", SETTING_NAMES)
def test_routers_differing_in_one_setting_are_different_models(name: str) -> None:
    base, other = router(), router(**OTHER[name])
    assert getattr(base, name) != getattr(other, name)
    assert base._identifying_params != other._identifying_params
    # LangChain's cache key is built from these params: it must tell the two apart too.
    assert base._get_llm_string() != other._get_llm_string()


# A value other than the default for every Backend field that identifies its answers.
OTHER_BACKEND: dict[str, Any] = {
    "base_url": "http://other.invalid/v1",
    "model": "other",
    "chat_template": "{{ messages[0]['content'] }}",
    "chat_template_kwargs": {"enable_thinking": False},
    "extra_body": {"top_k": 5},
    "tool_parser": type("OtherParser", (HermesToolCallParser,), {})(),
}


def test_every_backend_field_identifies_answers_or_says_why_not() -> None:
    assert set(IDENTIFYING) == set(OTHER_BACKEND)
    # the others only say how to reach the server: a new field must be one or the other
    reaching = {"api_key", "timeout", "max_retries", "headers", "session_header", "replicas",
                "client", "async_client", "http_client", "http_async_client"}  # fmt: skip
    assert set(Backend.model_fields) - set(IDENTIFYING) == reaching


@pytest.mark.parametrize("name", IDENTIFYING)
@pytest.mark.parametrize("role", ["small", "large"])
def test_routers_differing_in_one_backend_field_are_different_models(name: str, role: str) -> None:
    base = router()
    backend = getattr(base, role).model_copy(update={name: OTHER_BACKEND[name]})
    other = base.model_copy(update={role: backend})
    assert base._get_llm_string() != other._get_llm_string()
    json.dumps(other._identifying_params)  # a cache key must serialise


def test_how_a_server_is_reached_is_not_part_of_the_cache_key() -> None:
    reached = SMALL.model_copy(update={
        "api_key": SecretStr("sk-secret"), "timeout": 5.0, "max_retries": 0,
        "headers": {"X-Team": "a"}, "session_header": "x-session-id",
        "replicas": ["http://replica.invalid/v1"],
    })  # fmt: skip
    other = router().model_copy(update={"small": reached})
    assert router()._get_llm_string() == other._get_llm_string()
    assert "sk-secret" not in other._get_llm_string()


def test_seed_alone_changes_the_cache_key() -> None:
    assert router(seed=1)._get_llm_string() != router(seed=2)._get_llm_string()
    assert router(seed=1)._get_llm_string() == router(seed=1)._get_llm_string()


def test_every_setting_reaches_the_core_and_nothing_else_does() -> None:
    core = {f.name for f in dataclasses.fields(RouteSettings)}
    mapped = set(SETTING_NAMES)
    assert mapped <= core, f"settings the core does not know: {mapped - core}"
    assert core - mapped == DERIVED, f"core settings no field sets: {core - mapped - DERIVED}"
    assert set(SETTING_NAMES) - set(PER_CALL) == {"stop"}  # LangChain's own call argument


def test_the_core_gets_each_value() -> None:
    model = router(**{k: v for name in ("seed", "probe", "stop", "step_delimiter")
                      for k, v in OTHER[name].items()})  # fmt: skip
    settings = route_settings(model.router_settings, controller=None, tools=(), answer=None)
    assert (settings.seed, settings.probe) == (7, "separate")
    assert settings.stop == ("###",)
    assert settings.step_delimiter == ("\n\n", "\nWait,")


def test_the_bench_header_records_every_setting() -> None:
    config = model_config(router(seed=3))
    assert set(SETTING_NAMES) <= set(config)
    assert config["seed"] == 3
    assert config["threshold"] == 0.9
    json.dumps(config)  # a results file line is strict JSON
    assert model_config(router(threshold=math.inf))["threshold"] == "inf"


@pytest.mark.parametrize("name", [n for n in IDENTIFYING if n not in ("base_url", "model")])
def test_the_bench_header_records_what_identifies_each_backend(name: str) -> None:
    large = LARGE.model_copy(update={name: OTHER_BACKEND[name]})
    config = model_config(GlimpRouterChatModel(small=SMALL, large=large))
    assert config[f"large_{name}"] == identity(large)[name]
    assert f"small_{name}" not in config or name == "tool_parser"  # defaults are not written
    json.dumps(config)


def test_every_setting_has_a_flag_or_a_reason() -> None:
    assert set(SETTING_NAMES) == (set(FLAGS) - {"timeout"}) | set(NOT_FLAGS)
    assert not set(FLAGS) & set(NOT_FLAGS)


def test_the_flags_default_to_the_fields_and_set_them() -> None:
    parser = argparse.ArgumentParser()
    add_router_flags(parser)
    defaults = parser.parse_args([])
    for name in FLAGS:
        assert getattr(defaults, name) == GlimpRouterChatModel.model_fields[name].default
    args = parser.parse_args(["--seed", "5", "--estimator", "topk_tail", "--threshold", "auto",
                              "--target-rate", "0.2", "--on-small-failure", "large"])  # fmt: skip
    model = router(**router_values(args))
    assert (model.seed, model.entropy_estimator, model.threshold) == (5, "topk_tail", "auto")
    assert (model.target_rate, model.on_small_failure) == (0.2, "large")


def test_a_command_routes_only_with_the_flags_it_declares() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target-rate", type=float)  # the command's own, as calibrate's
    add_router_flags(parser, without=("target_rate",))
    assert "target_rate" not in router_values(parser.parse_args(["--target-rate", "0.25"]))


SERVERS = ["--small-url", "http://s:1/v1", "--small-model", "sm",
           "--large-url", "http://l:2/v1", "--large-model", "lg"]  # fmt: skip


@pytest.mark.parametrize(
    "command", [["ask", "Why?"], ["proxy"], ["bench"], ["calibrate", "--target-rate", "0.3"]]
)
def test_every_command_on_two_servers_sets_each_servers_session_header(
    command: list[str],
) -> None:
    assert BACKEND_FLAGS == ("session_header",)  # a new one: add it to this test
    parser = cli.parser()
    small, large = backends(parser.parse_args([*command, *SERVERS]))
    assert (small.session_header, large.session_header) == (None, None)
    headers = ["--small-session-header", "x-user-id", "--large-session-header", "x-session-id"]
    small, large = backends(parser.parse_args([*command, *SERVERS, *headers]))
    assert (small.base_url, small.model, large.model) == ("http://s:1/v1", "sm", "lg")
    assert (small.session_header, large.session_header) == ("x-user-id", "x-session-id")
    # A command that started its own servers: their URLs, and the flags still apply.
    started = [("http://a/v1", "a"), ("http://b/v1", "b")]
    small, large = backends(parser.parse_args([*command, *SERVERS, *headers]), started)
    assert (small.base_url, large.model) == ("http://a/v1", "b")
    assert (small.session_header, large.session_header) == ("x-user-id", "x-session-id")


def test_the_routing_core_imports_neither_langchain_nor_http() -> None:
    names = [f"langchain_glimprouter.core.{m.name}" for m in pkgutil.iter_modules(core.__path__)]
    assert len(names) >= 9
    code = (
        "import importlib, json, sys\n"
        f"for name in {names!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True,
                                       text=True, check=True).stdout)  # fmt: skip
    forbidden = {"langchain_core", "langchain", "httpx", "httpx2", "httpcore", "openai", "aiohttp"}
    assert not forbidden & set(loaded), sorted(forbidden & set(loaded))


def test_the_package_imports_its_public_names_lazily() -> None:
    code = (
        "import sys, langchain_glimprouter as g\n"
        "before = 'langchain_core' in sys.modules\n"
        "g.GlimpRouterChatModel\n"
        "print(before, 'langchain_core' in sys.modules, sorted(g.__all__) == sorted(dir(g)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True", "True"]


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"probe": "fast"}, "probe='fast'"),
        ({"max_step_tokens": 0}, "max_step_tokens must be >= 1"),
        ({"strategy": "random"}, "needs target_rate"),
        ({"temperature": "hot"}, "temperature='hot'"),
        ({"streaming": True}, "unsupported call arguments"),
        ({"stop_sequences": ["x"]}, "unsupported call arguments"),
    ],
)
def test_a_call_s_settings_are_validated_as_the_constructor_does(
    given: dict[str, Any], message: str
) -> None:
    from langchain_glimprouter import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match=message):
        router().router.prepare(HI, **given)


def test_every_setting_but_stop_may_be_given_per_call() -> None:
    for name in PER_CALL:
        if name not in ("target_rate", "threshold"):
            router().router.prepare(HI, **OTHER[name]).program.close()
    # strings are read as the field's type, as pydantic reads the constructor's
    call = router().router.prepare(HI, max_tokens="12")
    call.program.close()
