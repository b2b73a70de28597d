"""Drive a routing-core program against a scripted server function, with no HTTP."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from langchain_glimprouter.core.ops import Program, Request
from langchain_glimprouter.errors import BackendError

Server = Callable[[Request], dict[str, Any]]
"""A server as a function: a request's JSON answer, or the typed error it raises."""


def drive(program: Program[Any], server: Server) -> tuple[Any, list[Request]]:
    """Run ``program`` against ``server``: its value and the requests it sent; an error the
    server raises goes back into the program, as the drivers do."""
    sent: list[Request] = []
    value: Any = None
    error: BackendError | None = None
    while True:
        try:
            op = program.throw(error) if error is not None else program.send(value)
        except StopIteration as stop:
            return stop.value, sent
        assert isinstance(op, Request)
        sent.append(op)
        value, error = None, None
        try:
            value = server(op)
        except BackendError as exc:
            error = exc
