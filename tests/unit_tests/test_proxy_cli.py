"""glimprouter proxy: flags, the router it builds, the workers' environment, stopping what it
started; uvicorn.run and start_pair are stand-ins (no socket)."""

from __future__ import annotations

import importlib
import importlib.util
import io
import json
import math
import os
import signal
from typing import Any

import pytest
import uvicorn

from langchain_glimprouter.cli import main as cli
from langchain_glimprouter.cli import proxy as command
from langchain_glimprouter.cli import servers as local
from langchain_glimprouter.core.settings import RouterSettings
from langchain_glimprouter.router import Router, RouterConfig

SERVERS = ["--small-url", "http://s:1/v1", "--small-model", "sm",
           "--large-url", "http://l:2/v1", "--large-model", "lg"]  # fmt: skip


class FakeLocal:
    """What start_pair returns, as far as the command uses it."""

    def __init__(self, port: int, name: str) -> None:
        self.base_url, self.served_name = f"http://127.0.0.1:{port}/v1", name


class Calls:
    """What the command handed to uvicorn, start_pair and stop_all."""

    def __init__(self) -> None:
        self.uvicorn: list[tuple[Any, dict[str, Any], dict[str, str]]] = []
        self.routers: list[tuple[RouterConfig, dict[str, Any]]] = []
        """The config of each Router given to create_app, and the options."""
        self.started: list[list[FakeLocal]] = []
        self.stopped: list[list[Any]] = []
        self.raise_in_serve: BaseException | None = None


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Calls:
    from langchain_glimprouter import proxy

    seen = Calls()

    def run(app: Any, **options: Any) -> None:
        env = {k: v for k, v in os.environ.items() if k.startswith("GLIMPROUTER_PROXY_")}
        seen.uvicorn.append((app, options, env))
        if seen.raise_in_serve is not None:
            raise seen.raise_in_serve

    real_create_app = proxy.create_app

    def create_app(router: Router, **options: Any) -> Any:
        assert isinstance(router, Router)  # no LangChain model on the proxy's path
        seen.routers.append((router.config, options))
        return real_create_app(router, **options)

    def start_pair() -> list[FakeLocal]:
        pair = [FakeLocal(8101, "smollm2-small"), FakeLocal(8102, "smollm2-large")]
        seen.started.append(pair)
        return pair

    monkeypatch.setattr(uvicorn, "run", run)
    monkeypatch.setattr(proxy, "create_app", create_app)
    monkeypatch.setattr(local, "start_pair", start_pair)
    monkeypatch.setattr(local, "stop_all", seen.stopped.append)
    monkeypatch.setattr(local, "port_in_use", lambda host, port: False)
    monkeypatch.delenv(command.API_KEY_ENV, raising=False)
    return seen


def test_defaults_of_the_flags() -> None:
    args = cli.parser().parse_args(["proxy"])
    assert (args.host, args.port, args.workers) == ("127.0.0.1", 8000, 1)
    assert (args.api_key, args.served_name) == (None, "glimprouter")
    assert args.threshold is None
    assert args.max_reasoning_tokens is None
    assert not hasattr(args, "system")  # the messages come with each request


def test_no_server_flags_serve_the_tiny_pair_and_stop_it(calls: Calls) -> None:
    out = io.StringIO()
    assert cli.main(["proxy", "--port", "8123"], out=out) == 0
    assert len(calls.started) == 1
    assert calls.stopped == calls.started
    (router, options), = calls.routers  # fmt: skip
    assert router.small.base_url == "http://127.0.0.1:8101/v1"
    assert router.large.model == "smollm2-large"
    assert (router.threshold, router.max_reasoning_tokens, router.max_tokens) == (1.5, 256, 96)
    assert options == {
        "served_name": "glimprouter", "api_key": None, "body_timeout": command.BODY_TIMEOUT_S,
        "client_settings": command.policy(cli.parser().parse_args(["proxy"])),
    }  # fmt: skip
    (_, uvicorn_options, _), = calls.uvicorn  # fmt: skip
    assert uvicorn_options["port"] == 8123
    assert uvicorn_options["host"] == "127.0.0.1"
    text = out.getvalue()
    assert "wiring demo" in text
    assert "http://127.0.0.1:8123/v1" in text
    assert "curl http://127.0.0.1:8123/v1/chat/completions" in text
    assert 'OpenAI(base_url="http://127.0.0.1:8123/v1", api_key="unused")' in text
    assert text.rstrip().endswith("Stopped.")


def test_server_flags_front_running_servers(calls: Calls) -> None:
    flags = [*SERVERS, "--threshold", "0.4", "--strategy", "random", "--target-rate", "0.3",
             "--small-session-header", "x-user-id"]  # fmt: skip
    assert cli.main(["proxy", *flags, "--served-name", "mine"], out=io.StringIO()) == 0
    assert calls.started == []
    assert calls.stopped == []
    (router, options), = calls.routers  # fmt: skip
    assert (router.small.base_url, router.small.model) == ("http://s:1/v1", "sm")
    assert (router.large.base_url, router.large.model) == ("http://l:2/v1", "lg")
    assert (router.small.session_header, router.large.session_header) == ("x-user-id", None)
    assert (router.threshold, router.strategy, router.target_rate) == (0.4, "random", 0.3)
    default = RouterSettings.model_fields["max_reasoning_tokens"].default
    assert router.max_reasoning_tokens == default  # the tiny pair's budgets are its own
    assert options["served_name"] == "mine"


def test_the_tiny_pair_takes_the_budgets_given(calls: Calls) -> None:
    flags = ["--max-reasoning-tokens", "64", "--threshold", "inf", "--max-tokens", "8"]
    assert cli.main(["proxy", *flags], out=io.StringIO()) == 0
    (router, _), = calls.routers  # fmt: skip
    assert (router.max_reasoning_tokens, router.max_tokens) == (64, 8)
    assert math.isinf(router.threshold)  # type: ignore[arg-type]


def test_api_key_from_a_file_the_environment_or_the_flag(
    calls: Calls, monkeypatch: pytest.MonkeyPatch, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("from-file\n")
    outs = [io.StringIO() for _ in range(3)]
    assert cli.main(["proxy", *SERVERS, "--api-key-file", str(key_file)], out=outs[0]) == 0
    assert "warning" not in capsys.readouterr().err
    monkeypatch.setenv(command.API_KEY_ENV, "from-env")
    assert cli.main(["proxy", *SERVERS], out=outs[1]) == 0
    assert cli.main(["proxy", *SERVERS, "--api-key", "s3cret"], out=outs[2]) == 0
    assert "/proc/<pid>/cmdline" in capsys.readouterr().err
    keys = [options["api_key"] for _, options in calls.routers]
    assert keys == ["from-file", "from-env", "s3cret"]
    from_file, from_env, from_argv = (out.getvalue() for out in outs)
    assert f"read from {key_file}" in from_file
    assert f"Bearer $(head -n1 {key_file})" in from_file
    assert "Authorization: Bearer $GLIMPROUTER_PROXY_API_KEY" in from_env
    assert 'api_key=os.environ["GLIMPROUTER_PROXY_API_KEY"]' in from_env
    assert "given with --api-key" in from_argv
    assert "GLIMPROUTER_PROXY_API_KEY" not in from_argv  # the variable is not where it is
    for text in (from_file, from_env, from_argv):
        assert "s3cret" not in text
        assert "from-" not in text  # the examples name where the key is, never the key


def test_the_limits_and_the_policy_reach_uvicorn_and_the_app(calls: Calls) -> None:
    from langchain_glimprouter.proxy import limits
    from langchain_glimprouter.proxy.policy import ClientPolicy

    assert (command.HEADER_TIMEOUT_S, command.BODY_TIMEOUT_S) == (
        limits.HEADER_TIMEOUT_S,
        limits.BODY_TIMEOUT_S,
    )
    flags = ["--client-settings", "threshold,max_reasoning_tokens<=16384", "--body-timeout",
             "7", "--limit-concurrency", "20", "--timeout-keep-alive", "3"]  # fmt: skip
    out = io.StringIO()
    assert cli.main(["proxy", *SERVERS, *flags], out=out) == 0
    (_, options), = calls.routers  # fmt: skip
    assert options["client_settings"] == ClientPolicy.parse("threshold,max_reasoning_tokens<=16384")
    assert options["body_timeout"] == 7
    (_, served, _), = calls.uvicorn  # fmt: skip
    assert (served["limit_concurrency"], served["timeout_keep_alive"]) == (20, 3)
    assert served["http"] is limits.TimedH11Protocol
    assert "client settings: threshold,max_reasoning_tokens<=16384" in out.getvalue()


def test_workers_get_the_policy_and_the_timeouts(calls: Calls) -> None:
    flags = ["--workers", "2", "--client-settings", "strategy", "--body-timeout", "4",
             "--header-timeout", "2"]  # fmt: skip
    assert cli.main(["proxy", *SERVERS, *flags], out=io.StringIO()) == 0
    (_, _, env), = calls.uvicorn  # fmt: skip
    assert env["GLIMPROUTER_PROXY_CLIENT_SETTINGS"] == "strategy"
    assert float(env["GLIMPROUTER_PROXY_BODY_TIMEOUT"]) == 4
    assert float(env["GLIMPROUTER_PROXY_HEADER_TIMEOUT"]) == 2


def test_workers_run_the_factory_with_the_routers_environment(calls: Calls) -> None:
    from langchain_glimprouter.proxy import app_from_env

    flags = [*SERVERS, "--workers", "3", "--threshold", "0.7", "--api-key", "k", "--seed", "5",
             "--large-session-header", "x-session-id"]  # fmt: skip
    before = dict(os.environ)
    assert cli.main(["proxy", *flags, "--served-name", "gr"], out=io.StringIO()) == 0
    assert calls.routers == []  # each worker builds its own app
    (app, options, env), = calls.uvicorn  # fmt: skip
    assert app == command.FACTORY == "langchain_glimprouter.proxy:app_from_env"
    assert (options["factory"], options["workers"]) == (True, 3)
    assert env["GLIMPROUTER_PROXY_SERVED_NAME"] == "gr"
    assert env["GLIMPROUTER_PROXY_API_KEY"] == "k"
    fields = json.loads(env["GLIMPROUTER_PROXY_ROUTER"])
    assert (fields["threshold"], fields["seed"]) == (0.7, 5)
    assert fields["small"]["base_url"] == "http://s:1/v1"
    assert fields["large"]["session_header"] == "x-session-id"
    assert dict(os.environ) == before  # put back once uvicorn returns
    for name, value in env.items():
        os.environ[name] = value
    try:
        assert app_from_env() is not None  # what a worker does with it
    finally:
        for name in env:
            del os.environ[name]


def test_effort_budgets_and_origins_reach_the_app_and_the_workers(calls: Calls) -> None:
    from langchain_glimprouter.proxy import app_from_env
    from langchain_glimprouter.proxy.options import OPTIONS_ENV

    flags = [
        *SERVERS,
        "--reasoning-effort-budgets",
        "low=100,high=900",
        "--allowed-origin",
        "https://a.example",
        "--allowed-origin",
        "https://b.example",
    ]
    assert cli.main(["proxy", *flags], out=io.StringIO()) == 0
    ((_, options),) = calls.routers
    assert options["reasoning_effort_budgets"] == {"low": 100, "high": 900}
    assert options["allowed_origins"] == ["https://a.example", "https://b.example"]
    assert cli.main(["proxy", *flags, "--workers", "2"], out=io.StringIO()) == 0
    env = calls.uvicorn[-1][2]
    assert json.loads(env[OPTIONS_ENV]) == {
        "reasoning_effort_budgets": {"low": 100, "high": 900},
        "allowed_origins": ["https://a.example", "https://b.example"],
    }
    os.environ.update(env)
    try:
        app = app_from_env()
        assert app.state.proxy.efforts == {"low": 100, "high": 900}
    finally:
        for name in env:
            del os.environ[name]
    assert cli.main(["proxy", *SERVERS, "--workers", "2"], out=io.StringIO()) == 0
    assert OPTIONS_ENV not in calls.uvicorn[-1][2]  # the defaults need no variable


@pytest.mark.parametrize("workers", ["1", "2"])
def test_the_access_log_is_on_unless_turned_off(calls: Calls, workers: str) -> None:
    assert cli.main(["proxy", *SERVERS, "--workers", workers], out=io.StringIO()) == 0
    config = calls.uvicorn[-1][1]["log_config"]
    access = config["loggers"]["langchain_glimprouter.proxy.access"]
    assert (access["level"], access["handlers"]) == ("INFO", ["default"])
    assert "default" in config["handlers"]
    flags = [*SERVERS, "--workers", workers, "--no-access-log"]
    assert cli.main(["proxy", *flags], out=io.StringIO()) == 0
    assert "log_config" not in calls.uvicorn[-1][1]


def test_workers_leave_the_signal_handlers_as_they_were(
    calls: Calls, monkeypatch: pytest.MonkeyPatch
) -> None:
    """uvicorn's supervisor replaces SIGINT's and SIGTERM's handlers and does not restore them."""
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def supervisor(app: Any, **options: Any) -> None:
        for sig in before:
            signal.signal(sig, lambda *_: None)

    monkeypatch.setattr(uvicorn, "run", supervisor)
    assert cli.main(["proxy", *SERVERS, "--workers", "2"], out=io.StringIO()) == 0
    assert {sig: signal.getsignal(sig) for sig in before} == before


@pytest.mark.parametrize("stop", [KeyboardInterrupt(), RuntimeError("boom")])
def test_the_tiny_pair_is_stopped_however_serving_ends(calls: Calls, stop: BaseException) -> None:
    """Ctrl-C (and SIGTERM, which becomes one) ends serving quietly; any error after the pair
    started still stops it."""
    calls.raise_in_serve = stop
    if isinstance(stop, KeyboardInterrupt):
        assert cli.main(["proxy"], out=io.StringIO()) == 0
    else:
        with pytest.raises(RuntimeError):
            cli.main(["proxy"], out=io.StringIO())
    assert len(calls.stopped) == 1
    assert calls.stopped == calls.started


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--small-url", "http://s:1/v1"], "give all of --small-url"),
        (["--workers", "0"], "--workers must be at least 1"),
        (["--port", "0"], "--port must be in 1..65535"),
        (["--threshold", "-1"], "threshold"),
        (["--threshold", "auto"], "target_rate"),
        (["--client-settings", "api_key"], "'api_key' is no router setting"),
        (["--client-settings", "max_tokens<=lots"], "cap of max_tokens"),
        (["--body-timeout", "-1"], "--body-timeout must be >= 0"),
        (["--limit-concurrency", "0"], "--limit-concurrency must be at least 1"),
        (["--api-key", "k", "--api-key-file", "/dev/null"], "not both"),
        (["--api-key-file", "/nonexistent/key"], "cannot read"),
        (["--reasoning-effort-budgets", "low=lots"], "is not level=tokens"),
        (["--reasoning-effort-budgets", "low=0"], "positive token budget"),
    ],
)
def test_bad_flags_are_refused_before_any_server_starts(
    flags: list[str], message: str, calls: Calls, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["proxy", *flags], out=io.StringIO()) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert message in err
    assert (calls.started, calls.uvicorn) == ([], [])


def test_a_port_in_use_is_refused_before_any_server_starts(
    calls: Calls, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(local, "port_in_use", lambda host, port: port == 8000)
    assert cli.main(["proxy"], out=io.StringIO()) == 2
    assert "port 8000 on 127.0.0.1 is in use" in capsys.readouterr().err
    assert calls.started == []


def test_the_proxy_extra_is_required_before_any_server_starts(
    calls: Calls, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "prometheus_client" else real_find_spec(name, *a),
    )
    assert cli.main(["proxy"], out=io.StringIO()) == 2
    err = capsys.readouterr().err
    assert "needs prometheus_client" in err
    assert "langchain-glimprouter[proxy]" in err
    assert calls.started == []


def test_the_names_are_the_proxy_packages() -> None:
    from langchain_glimprouter.proxy import env

    assert command.API_KEY_ENV == env.API_KEY_ENV
    module, _, name = command.FACTORY.partition(":")
    assert getattr(importlib.import_module(module), name) is env.app_from_env


def test_a_missing_vllm_environment_is_an_error(
    calls: Calls, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def missing() -> None:
        raise RuntimeError("the local vLLM environment is missing; run `make vllm-env` first")

    monkeypatch.setattr(local, "start_pair", missing)
    assert cli.main(["proxy"], out=io.StringIO()) == 2
    assert "make vllm-env" in capsys.readouterr().err
    assert calls.uvicorn == []
