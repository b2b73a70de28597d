"""Exceptions raised by langchain-glimprouter.

Every failure surfaces as a subclass of :class:`GlimpRouterError`, and every message says what to
do about it. Errors that concern one server name its role (``small`` or ``large``) and its URL,
never its API key.
"""

from __future__ import annotations


class GlimpRouterError(Exception):
    """Base class of every error raised by langchain-glimprouter."""


class InvalidArgumentError(GlimpRouterError):
    """An argument or setting is invalid.

    Raised as is (not wrapped in pydantic's ``ValidationError``) by the constructor and before
    any request of a call; also when a server rejects ``top_logprobs`` above its cap.
    """

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param
        """The argument or setting at fault, when one is (the proxy's error ``param``)."""


class LogprobsCapError(InvalidArgumentError):
    """The server refused more logprobs than its cap (vLLM's ``--max-logprobs``): ``cap``."""

    def __init__(self, message: str, *, cap: int) -> None:
        super().__init__(message, param="top_logprobs")
        self.cap = cap


class BudgetError(InvalidArgumentError):
    """A token budget is misconfigured (for instance ``max_reasoning_tokens <= 0``)."""


class BackendError(GlimpRouterError):
    """A failure that concerns one backend server."""

    def __init__(self, message: str, *, role: str, url: str) -> None:
        super().__init__(f"[{role} backend at {url}] {message}")
        self.role = role
        self.url = url


class BackendUnreachableError(BackendError):
    """The server could not be reached (connection refused, DNS failure, ...)."""


class BackendTimeoutError(BackendError):
    """The server did not answer within ``Backend.timeout`` seconds."""


class BackendResponseError(BackendError):
    """The server answered with an HTTP error or a response that is not OpenAI-compatible."""

    def __init__(
        self, message: str, *, role: str, url: str, status_code: int | None = None
    ) -> None:
        super().__init__(message, role=role, url=url)
        self.status_code = status_code


class StreamInterruptedError(BackendError):
    """A streamed response ended before the server said it was finished."""


class MalformedStreamError(StreamInterruptedError, BackendResponseError):
    """A streamed response held an event that is not a JSON object. It is resumed like a cut
    stream, from the text received before that event, so nothing is lost or duplicated; raised
    when the resumes (``max_retries``) are spent."""


class StreamErrorEventError(StreamInterruptedError, BackendResponseError):
    """The server reported mid-stream that the request failed on its side (an
    ``{"error": ...}`` event with code 429 or 5xx: vLLM sends one with code 500 when generation
    fails inside its engine, then ends the stream). It is resumed like a cut stream, from the
    text received before that event; raised when the resumes (``max_retries``) are spent. An
    error event with another code (a request the server refuses, such as one past the context
    length) is not resumed: it is the typed error of that answer."""


class StreamTimeoutError(StreamInterruptedError, BackendTimeoutError):
    """No chunk came within ``Backend.timeout`` seconds in the middle of a stream (a stalled
    server). Closing the connection makes vLLM abort the stalled request, so the stream is
    resumed once, like a cut stream, from the text received; a second stall of the same text
    raises it (each stall costs a whole timeout)."""


class MissingLogprobsError(BackendResponseError):
    """The small server returned no ``top_logprobs`` for the first token of a step."""


class ContextLengthExceededError(BackendResponseError):
    """The prompt plus the requested tokens exceed the model's context window."""


class PromptRenderingError(BackendError):
    """The conversation could not be rendered with the backend's chat template."""


class IncompleteAnswerError(GlimpRouterError, ValueError):
    """A constrained answer could not be used: ``with_structured_output`` got no complete JSON
    (or no call, for ``method="function_calling"``), most often because the answer reached
    ``max_tokens`` first.

    Raised by the structured-output parser, so ``include_raw=True`` returns it as
    ``parsing_error`` beside the raw message. ``answer`` is the text the model wrote;
    the routing record's ``answer_error`` says the same as the message. (A forced tool call
    of ``bind_tools`` is not raised: it arrives in ``invalid_tool_calls`` with the reason.)
    """

    def __init__(self, message: str, *, answer: str) -> None:
        super().__init__(message)
        self.answer = answer
