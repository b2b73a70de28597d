"""Scripted servers for the unit tests, with no socket: fakes (tests/support/fake_driver.py)
that every router of the test reaches through ``GlimpRouterChatModel._clients_for``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from langchain_glimprouter import GlimpRouterChatModel
from scripted_server import Script
from tests.support.fake_driver import FakeClient, FakeServer


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Callable[..., FakeServer]:
    """Factory: ``server(script, **settings)``, a :class:`FakeServer`. A backend whose URLs are
    all fake servers' gets :class:`FakeClient`\\ s; any other backend the real clients."""
    fakes: dict[str, FakeServer] = {}
    real_clients_for = GlimpRouterChatModel._clients_for

    def clients_for(router: GlimpRouterChatModel, role: str) -> Any:
        urls = [url.rstrip("/") for url in getattr(router, role).urls]
        if not all(url in fakes for url in urls):
            return real_clients_for(router, role)
        backend = getattr(router, role)
        return [FakeClient(role, fakes[url], backend) for url in urls]

    monkeypatch.setattr(GlimpRouterChatModel, "_clients_for", clients_for)

    def make(script: Script, **settings: Any) -> FakeServer:
        fake = FakeServer(script, **settings)
        fakes[fake.base_url] = fake
        return fake

    return make
