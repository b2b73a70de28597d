"""The proxy's own options besides the router (``create_app``'s keyword arguments that set
what clients may send and from where): the ``reasoning_effort`` table and the origins CORS
allows, from the CLI's flags (:func:`from_flags`) and, for worker processes, from
:data:`OPTIONS_ENV` (:func:`options_env`, :func:`options_from_env`)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from langchain_glimprouter.proxy.chat_request import check_efforts, parse_efforts

OPTIONS_ENV = "GLIMPROUTER_PROXY_OPTIONS"
"""A JSON object of :func:`~langchain_glimprouter.proxy.create_app`'s
``reasoning_effort_budgets`` and ``allowed_origins`` (absent: the defaults)."""


def from_flags(efforts: str | None, origins: Sequence[str] | None) -> dict[str, Any]:
    """``create_app``'s options of ``--reasoning-effort-budgets`` and ``--allowed-origin``
    (raises :class:`~langchain_glimprouter.errors.InvalidArgumentError` on a bad table)."""
    options: dict[str, Any] = {}
    if efforts is not None:
        options["reasoning_effort_budgets"] = parse_efforts(efforts)
    if origins:
        options["allowed_origins"] = list(origins)
    return options


def options_env(options: Mapping[str, Any]) -> dict[str, str]:
    """The environment that carries ``options`` to the workers (none when all are defaults)."""
    return {OPTIONS_ENV: json.dumps(dict(options))} if options else {}


def options_from_env() -> dict[str, Any]:
    """``create_app``'s options from :data:`OPTIONS_ENV` (none set: none)."""
    raw = os.environ.get(OPTIONS_ENV)
    if not raw:
        return {}
    options = dict(json.loads(raw))
    if "reasoning_effort_budgets" in options:
        options["reasoning_effort_budgets"] = check_efforts(options["reasoning_effort_budgets"])
    return options
