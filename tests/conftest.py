"""Fixtures shared by the unit and loopback tests. Each folder's conftest.py gives ``server``:
a fake scripted server with no socket (unit_tests) or a real one on loopback (loopback_tests)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from scripted_server import Script
from tests.support.pair import H_INIT, LARGE_STEPS, SMALL_STEPS, scripted_pair


@pytest.fixture
def servers(server: Callable[..., Any]) -> Callable[..., tuple[Any, Any]]:
    """Factory: ``servers(small_script=..., large_script=..., **server_kwargs)``, a small and a
    large scripted server (see :func:`tests.support.pair.scripted_pair`)."""

    def make(small: Script | None = None, large: Script | None = None, **kwargs: Any) -> Any:
        return scripted_pair(server, small, large, **kwargs)

    return make


@pytest.fixture
def glimprouter_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home with a (fake) tiny model folder, so that ``glimprouter serve``'s defaults are
    local folders."""
    home = tmp_path / "home"
    (home / "smollm2-135m").mkdir(parents=True)
    (home / "smollm2-135m" / "config.json").write_text('{"vocab_size": 49152}')
    monkeypatch.setenv("GLIMPROUTER_HOME", str(home))
    monkeypatch.delenv("GLIMPROUTER_VLLM_PYTHON", raising=False)
    monkeypatch.delenv("VLLM_LOGGING_LEVEL", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    return home


@pytest.fixture
def llamacpp_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("GLIMPROUTER_HOME", str(home))
    monkeypatch.delenv("GLIMPROUTER_LLAMACPP_PYTHON", raising=False)
    monkeypatch.delenv("GLIMPROUTER_VLLM_PYTHON", raising=False)
    return home


@pytest.fixture
def replicas(server: Callable[..., Any]) -> tuple[list[Any], list[Any]]:
    """Two replicas of the small model (``"s"``) and two of the large one (``"l"``)."""
    small = [server(Script(SMALL_STEPS, h_init=H_INIT), model="s") for _ in "ab"]
    large = [server(Script(LARGE_STEPS), model="l") for _ in "ab"]
    return small, large
