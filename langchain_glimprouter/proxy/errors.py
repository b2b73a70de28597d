"""Errors of the proxy in OpenAI's JSON shape: ``{"error": {"message", "type", "param",
"code"}}`` with its HTTP status, from the proxy's own checks (:class:`ApiError`) and from the
router's typed errors (:func:`api_error`)."""

from __future__ import annotations

import logging
from typing import Any

from starlette.responses import JSONResponse

from langchain_glimprouter.errors import (
    BackendResponseError,
    BackendTimeoutError,
    BackendUnreachableError,
    ContextLengthExceededError,
    GlimpRouterError,
    IncompleteAnswerError,
    InvalidArgumentError,
    MissingLogprobsError,
    PromptRenderingError,
    StreamInterruptedError,
)
from langchain_glimprouter.proxy.access_log import request_id

log = logging.getLogger(__name__)

INVALID = "invalid_request_error"
SERVER = "server_error"


class ApiError(Exception):
    """A failure the client is told about: HTTP ``status`` and OpenAI's error fields."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = INVALID,
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type = status, message, type
        self.code, self.param = code, param

    def body(self) -> dict[str, Any]:
        """The JSON body (also the data of the last event of a stream that failed)."""
        fields = {"message": self.message, "type": self.type, "param": self.param}
        return {"error": {**fields, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status)


_MAPPED: tuple[tuple[type[GlimpRouterError], int, str, str], ...] = (
    # The most specific class first: ContextLengthExceededError is a BackendResponseError.
    (ContextLengthExceededError, 400, INVALID, "context_length_exceeded"),
    (PromptRenderingError, 400, INVALID, "prompt_rendering_failed"),
    (InvalidArgumentError, 400, INVALID, "invalid_value"),
    (BackendUnreachableError, 503, SERVER, "backend_unreachable"),
    (BackendTimeoutError, 504, SERVER, "backend_timeout"),
    (MissingLogprobsError, 502, SERVER, "missing_logprobs"),
    (StreamInterruptedError, 502, SERVER, "stream_interrupted"),
    (BackendResponseError, 502, SERVER, "backend_error"),
    (IncompleteAnswerError, 502, SERVER, "incomplete_answer"),
)


REFUSED_BY_BACKEND = (400, 422)
"""A backend's statuses for a request it refuses as invalid (vLLM: 400, pydantic's 422 on
some servers): the client's 400."""


def api_error(exc: Exception) -> ApiError:
    """What the client is told of ``exc``: a router error with its status (400 for what the
    request can fix, naming the field at fault as ``param``, and for a request a backend
    refused as invalid; 502 for a backend's bad answer,
    503 unreachable, 504 timed out); anything else is a 500 whose details stay in the
    proxy's log."""
    if isinstance(exc, ApiError):
        return exc
    for kind, status, type_, code in _MAPPED:
        if isinstance(exc, kind):
            if code == "backend_error" and getattr(exc, "status_code", None) in REFUSED_BY_BACKEND:
                # A value passed on as the client gave it (a template variable, a sampling
                # extra) that a server refused: the client's to fix, not the servers' failure.
                log.info("request %s: a backend refused it: %s", request_id(), exc)
                return ApiError(400, f"a backend refused the request: {exc}", code="invalid_value")
            param = exc.param if isinstance(exc, InvalidArgumentError) else None
            return ApiError(status, str(exc), type=type_, code=code, param=param)
    log.error(
        "internal error of request %s: %s: %s", request_id(), type(exc).__name__, exc, exc_info=exc
    )
    return ApiError(
        500,
        f"internal error of the glimprouter proxy ({type(exc).__name__}); see its log.",
        type=SERVER,
        code="internal_error",
    )
