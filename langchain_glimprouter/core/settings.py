"""What one routed call is given besides the conversation: its settings (:class:`RouteSettings`),
a constraint on its answer (:class:`AnswerConstraint`), and what the router learned about the
servers across calls (:class:`ServerFacts`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from langchain_glimprouter.core.entropy import Estimator
from langchain_glimprouter.core.prompts import RenderCache
from langchain_glimprouter.core.strategies import AdaptiveThreshold, Strategy

Probe = Literal["stream", "separate"]


@dataclass(frozen=True)
class RouteSettings:
    """Everything one routed call needs besides the conversation and the servers."""

    threshold: float
    estimator: Estimator = "topk_renormalized"
    probe: Probe = "stream"
    top_logprobs: int = 20
    max_reasoning_tokens: int = 8192
    max_tokens: int = 2048
    temperature: float | None = 0.6
    top_p: float | None = 0.95
    seed: int | None = None
    delimiters: tuple[str, ...] = ("\n\n",)
    """What ends a reasoning step (stop strings); the one that ended it is kept in the chain."""
    max_step_tokens: int | None = None
    """A longer step is cut there and the next step continues its text (None: no limit)."""
    escalation_logprobs: int = 1000
    """``topk_bounds``: k of the 1-token probe of a step too close to call (0: never)."""
    strategy: Strategy = "glimpse"
    target_rate: float | None = None
    """Share of large steps: the probability of ``random``, the controller's target."""
    controller: AdaptiveThreshold | None = None
    """``threshold="auto"``: decides in place of ``threshold`` (shared across calls)."""
    stop: tuple[str, ...] = ()
    """Stop sequences of the final answer."""
    max_retries: int = 2
    """Retries of a failed request or a cut stream, unless the Backend sets its own."""
    on_small_failure: Literal["raise", "large"] = "raise"
    """What a failure of the small backend does: raise, or send the steps to the large one."""
    tools: tuple[dict[str, Any], ...] = ()
    """OpenAI-style tool definitions, rendered into both backends' prompts."""
    answer: AnswerConstraint | None = None
    """A constrained final answer (a forced tool call, a JSON schema), or free text."""


@dataclass(frozen=True)
class AnswerConstraint:
    """The final answer as ``prefix`` + text the server constrains to ``schema`` + ``suffix``.

    ``prefix`` is written into the large backend's prompt (the model continues after it) and is
    part of the answer; ``schema`` is a JSON schema enforced by the server's structured outputs
    (vLLM: ``structured_outputs.json``); ``suffix`` closes the answer when the server stopped
    on its own (not at ``max_tokens``).
    """

    schema: dict[str, Any]
    prefix: str = ""
    suffix: str = ""


@dataclass
class ServerFacts:
    """What the router learned about the servers; reused across calls of one router."""

    renders: RenderCache = field(default_factory=RenderCache)
    down: dict[str, float] = field(default_factory=dict)
    """Replica URLs found unreachable, with when (time.monotonic); skipped for a while."""
    max_model_len: dict[tuple[str, str], int | None] = field(default_factory=dict)
    """Context window per (base_url, model), from the server's /v1/models; None if unknown."""
    max_logprobs: dict[str, int] = field(default_factory=dict)
    """The logprobs cap a server refused more than (vLLM's --max-logprobs), per base_url."""
    token_ids: dict[tuple[str, str], int | None] = field(default_factory=dict)
    """The id of a whitespace token as a server's ``/tokenize`` gives it alone, per
    ``(base_url, token)``; None when it does not come back as one id."""
    untokenized: set[str] = field(default_factory=set)
    """Servers (base_url) whose ``/tokenize`` gave no token ids for a prompt (no such endpoint,
    or another request shape than vLLM's)."""
