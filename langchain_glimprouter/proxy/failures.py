"""What a client is told of a failure, and what stays in the proxy's log: a request's id
(:func:`request_id`, sent back as ``x-request-id``), and each failure as a stable error
``code`` with the request id (:func:`public_error`), the backends' URLs and internal exception
text logged under that id and never sent."""

from __future__ import annotations

import logging
import re

from starlette.requests import Request

from langchain_glimprouter.errors import BackendError
from langchain_glimprouter.proxy.access_log import CLIENT_ID, new_request_id
from langchain_glimprouter.proxy.access_log import request_id as current_request_id
from langchain_glimprouter.proxy.errors import ApiError, api_error

log = logging.getLogger("langchain_glimprouter.proxy")

REQUEST_ID_HEADER = "x-request-id"
_URL = re.compile(r"\b[a-z][a-z0-9+.\-]*://\S+", re.IGNORECASE)
PUBLIC = {
    "backend_unreachable": "a backend of the proxy is unreachable",
    "backend_timeout": "a backend of the proxy did not answer in time",
    "backend_error": "a backend of the proxy gave a bad answer",
    "missing_logprobs": "a backend of the proxy gave no logprobs",
    "stream_interrupted": "a backend's stream was cut",
    "incomplete_answer": "the answer could not be completed",
    "internal_error": "internal error of the glimprouter proxy",
}
"""The message a client gets for each server-side error code (the details are logged)."""


def request_id(request: Request) -> str:
    """The request's id: the one the access-log middleware gave it (and puts on the response),
    else the client's ``x-request-id`` when it is a sane token, else a new one (``req_`` and 24
    hex digits)."""
    known = current_request_id()
    if known is not None:
        return known
    given = request.headers.get(REQUEST_ID_HEADER, "")
    return given if CLIENT_ID.fullmatch(given) else new_request_id()


def public_error(exc: Exception, rid: str) -> ApiError:
    """``exc`` as the client sees it: a server-side failure (5xx) as its stable code and a
    message with the request id, the backend's URL and the exception's text in the log under
    that id; a client-side one (4xx) as its message, with no backend URL in it."""
    failure = api_error(exc)
    if failure is exc:
        return failure
    if failure.status >= 500:
        code = failure.code or "internal_error"
        log.warning("request %s failed (%s): %s: %s", rid, code, type(exc).__name__, exc)
        what = PUBLIC.get(code, PUBLIC["internal_error"])
        message = f"{what} (request {rid}; the operator finds the details in the proxy's log)."
        return ApiError(failure.status, message, type=failure.type, code=code)
    if isinstance(exc, BackendError) or _URL.search(failure.message):
        log.info("request %s refused (%s): %s", rid, failure.code, exc)
        message = failure.message
        if isinstance(exc, BackendError):
            message = message.replace(f"[{exc.role} backend at {exc.url}]", f"[{exc.role} backend]")
        failure.message = _URL.sub("<backend>", message)
    return failure
