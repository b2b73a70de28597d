"""The proxy's app from environment variables, for ``uvicorn --factory --workers N``: each
worker process builds its own router from :data:`ROUTER_ENV` (:func:`app_from_env`), and
:func:`router_env` writes those variables for a router (the ``glimprouter proxy`` command).

Keys never travel in :data:`ROUTER_ENV`: the backends' go in ``GLIMPROUTER_SMALL_API_KEY`` /
``GLIMPROUTER_LARGE_API_KEY`` (which the router reads anyway), the proxy's own in
:data:`API_KEY_ENV`.
"""

from __future__ import annotations

import json
import os
from typing import Any

from starlette.applications import Starlette

from langchain_glimprouter.backend import Backend
from langchain_glimprouter.core.settings import SETTING_NAMES
from langchain_glimprouter.core.tool_calls import HermesToolCallParser
from langchain_glimprouter.errors import InvalidArgumentError
from langchain_glimprouter.proxy.app import HasRouter, create_app, router_of
from langchain_glimprouter.proxy.limits import BODY_TIMEOUT_ENV, BODY_TIMEOUT_S
from langchain_glimprouter.proxy.options import options_from_env
from langchain_glimprouter.proxy.policy import CLIENT_SETTINGS_ENV, ClientPolicy
from langchain_glimprouter.router import ROLES, Router, RouterConfig
from langchain_glimprouter.telemetry import install_from_env

ROUTER_ENV = "GLIMPROUTER_PROXY_ROUTER"
"""A JSON object of :class:`~langchain_glimprouter.router.RouterConfig` fields (the backends
as objects of ``Backend`` fields), with no keys."""
SERVED_NAME_ENV = "GLIMPROUTER_PROXY_SERVED_NAME"
"""The model name clients ask for (default ``glimprouter``)."""
API_KEY_ENV = "GLIMPROUTER_PROXY_API_KEY"
"""The proxy's own bearer key (optional)."""
_OBJECTS = ("client", "async_client", "http_client", "http_async_client")


def _backend_fields(role: str, backend: Backend) -> dict[str, Any]:
    given = [name for name in _OBJECTS if getattr(backend, name) is not None]
    if given or backend.tool_parser != HermesToolCallParser():
        raise InvalidArgumentError(
            f"the {role} backend has a custom {given or 'tool_parser'}, which cannot travel "
            "to worker processes; serve it with create_app in your own process instead."
        )
    return backend.model_dump(
        mode="json", exclude={"api_key", "tool_parser"}, exclude_defaults=True
    )


def router_env(
    router: Router | RouterConfig | HasRouter,
    served_name: str = "glimprouter",
    *,
    api_key: str | None = None,
    client_settings: ClientPolicy | None = None,
    body_timeout: float | None = None,
) -> dict[str, str]:
    """The environment variables from which :func:`app_from_env` rebuilds ``router`` (a
    Router, its RouterConfig, or what wraps a Router): its settings and backends in
    :data:`ROUTER_ENV`, its keys in the backends' key variables, and ``api_key`` (the proxy's
    own) in :data:`API_KEY_ENV`, the operator's policy (:mod:`.policy`) in
    ``GLIMPROUTER_PROXY_CLIENT_SETTINGS`` and the body read timeout in
    ``GLIMPROUTER_PROXY_BODY_TIMEOUT``."""
    config = router if isinstance(router, RouterConfig) else router_of(router).config
    fields: dict[str, Any] = {name: getattr(config, name) for name in SETTING_NAMES}
    fields |= {role: _backend_fields(role, getattr(config, role)) for role in ROLES}
    if config.timeout is not None:
        fields["timeout"] = config.timeout
    env = {ROUTER_ENV: json.dumps(fields), SERVED_NAME_ENV: served_name}
    for role in ROLES:
        key = getattr(config, role).api_key or config.api_key
        if key is not None:
            env[f"GLIMPROUTER_{role.upper()}_API_KEY"] = key.get_secret_value()
    if api_key:
        env[API_KEY_ENV] = api_key
    if client_settings is not None:
        env[CLIENT_SETTINGS_ENV] = client_settings.spec()
    if body_timeout is not None:
        env[BODY_TIMEOUT_ENV] = repr(body_timeout)
    return env


def app_from_env() -> Starlette:
    """The app of the router in :data:`ROUTER_ENV`, served as :data:`SERVED_NAME_ENV`, behind
    :data:`API_KEY_ENV` if set."""
    raw = os.environ.get(ROUTER_ENV)
    if not raw:
        raise InvalidArgumentError(
            f"{ROUTER_ENV} is not set: give it a JSON object of the router's fields (see "
            "langchain_glimprouter.proxy.router_env), or run 'glimprouter proxy'."
        )
    router = Router(RouterConfig.model_validate(json.loads(raw)))
    install_from_env()  # each worker exports its own spans, when asked to
    served = os.environ.get(SERVED_NAME_ENV) or "glimprouter"
    return create_app(
        router,
        served_name=served,
        api_key=os.environ.get(API_KEY_ENV) or None,
        client_settings=os.environ.get(CLIENT_SETTINGS_ENV),
        body_timeout=float(os.environ.get(BODY_TIMEOUT_ENV) or BODY_TIMEOUT_S),
        **options_from_env(),
    )
