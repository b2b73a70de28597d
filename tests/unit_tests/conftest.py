"""Scripted servers for the unit tests, with no socket: fakes (tests/support/fake_driver.py)
that every router of the test reaches through the Router's public client hook
(``Router.default_client_factory``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pydantic import SecretStr

from langchain_glimprouter import Backend
from langchain_glimprouter.http.client import BackendClient
from langchain_glimprouter.router import Router
from scripted_server import Script
from tests.support.fake_driver import FakeClient, FakeServer


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Callable[..., FakeServer]:
    """Factory: ``server(script, **settings)``, a :class:`FakeServer`. A server URL that is a
    fake server's gets a :class:`FakeClient`; any other the real client."""
    fakes: dict[str, FakeServer] = {}

    def client(
        role: str, backend: Backend, *, api_key: SecretStr | None, timeout: float, base_url: str
    ) -> Any:
        fake = fakes.get(base_url.rstrip("/"))
        if fake is not None:
            return FakeClient(role, fake, backend)
        return BackendClient(role, backend, api_key=api_key, timeout=timeout, base_url=base_url)

    monkeypatch.setattr(Router, "default_client_factory", client)

    def make(script: Script, **settings: Any) -> FakeServer:
        fake = FakeServer(script, **settings)
        fakes[fake.base_url] = fake
        return fake

    return make
