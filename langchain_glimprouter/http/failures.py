"""Which typed error a server's failure is: an HTTP error answer, or an error event in a stream,
with what to do about it. A failure one kind of server words its own way (vLLM's context length,
its logprobs cap) is that kind's dialect's to recognise and explain
(:mod:`~langchain_glimprouter.core.dialects`)."""

from __future__ import annotations

import json

from langchain_glimprouter.core.dialects import DIALECTS
from langchain_glimprouter.core.ops import RETRYABLE_STATUS
from langchain_glimprouter.errors import (
    BackendResponseError,
    GlimpRouterError,
    StreamErrorEventError,
)


def _error_message(body: str) -> str:
    """The message of an error answer: OpenAI's ``error.message``, else the start of the body."""
    try:
        return str(json.loads(body)["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return body.strip()[:500] or "(empty body)"


def error_from_response(role: str, url: str, status: int, body: str) -> GlimpRouterError:
    """Map an HTTP error answer to the most specific typed error, with what to do about it."""
    message = _error_message(body)
    for dialect in DIALECTS:  # a server kind that words this failure its own way
        if (error := dialect.server_error(role, url, status, message)) is not None:
            return error
    hint = {
        401: "Check the backend's api_key.",
        403: "Check the backend's api_key.",
        404: "Check base_url (it should end in /v1) and the served model name.",
        429: "The server is overloaded; retry later or raise max_retries.",
    }.get(status, "Check the server's log.")
    return BackendResponseError(
        f"HTTP {status}: {message} {hint}", role=role, url=url, status_code=status
    )


def stream_error(role: str, url: str, data: bytes) -> GlimpRouterError:
    """The typed error of an ``{"error": ...}`` event in a stream (``data``).

    vLLM sends one, then ``[DONE]``, when a request fails after its answer began: its
    ``error.code`` is the status the failure would have had (500 when generation fails inside
    the engine, 503 for a failure it says is safe to retry, 400 for a request it refuses). A
    code of 429 or 5xx (or none) is :class:`StreamErrorEventError`, resumed like a cut stream;
    any other is the error of that answer, which no resumption fixes."""
    body = data.decode(errors="replace")
    try:
        code = json.loads(body)["error"].get("code")
    except (ValueError, KeyError, TypeError, AttributeError):
        code = None
    status = code if isinstance(code, int) else 500
    error = error_from_response(role, url, status, body)
    if type(error) is not BackendResponseError or status not in RETRYABLE_STATUS:
        return error
    return StreamErrorEventError(
        f"the server reported an error mid-stream (code {status}: {_error_message(body)}). The "
        "stream is resumed from the text received before it; if this repeats, check the "
        "server's log.",
        role=role,
        url=url,
        status_code=status,
    )
