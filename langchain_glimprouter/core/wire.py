"""What routing reads of a server's streamed completion: one SSE ``data:`` object as a
:class:`Chunk`. Pure data: the HTTP client (:mod:`langchain_glimprouter.http.client`) decodes the
bytes and calls :func:`parse_chunk`; the step loop only ever sees chunks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Chunk:
    """One server-sent event of a streamed completion, reduced to what routing needs."""

    text: str
    n_tokens: int
    """Tokens in this chunk (from its logprobs; without them, 1 per chunk with text or a
    choice that does not finish: llama-cpp-python streams one token a chunk, and the one its
    stop string ends in with empty text)."""
    first_token: str | None
    """The chunk's first token as the server spelled it in its logprobs."""
    top_logprobs: dict[str, float] | None
    """Top-k logprobs of the chunk's first token, if logprobs were asked for."""
    finish_reason: str | None
    stop_reason: str | int | None
    reports_stop_reason: bool
    """Whether the server sends ``stop_reason`` (vLLM does; it tells EOS from a stop string)."""
    prompt_tokens: int | None
    completion_tokens: int | None
    token_logprobs: tuple[float | None, ...] = ()
    """Logprob of each token of the chunk (when logprobs were asked for)."""
    token_top_logprobs: tuple[dict[str, float], ...] = ()
    """Top-k logprobs after each token position of the chunk (when logprobs were asked for)."""
    token_texts: tuple[str, ...] = ()
    """Each token of the chunk as the server spelled it (when logprobs were asked for)."""


def _token_without_text(choice: dict[str, Any]) -> bool:
    """A chunk of a token that writes no text: a choice that does not finish the stream
    (llama-cpp-python's token that ends in a stop string, whose text up to it is empty)."""
    return bool(choice) and "finish_reason" in choice and choice["finish_reason"] is None


def parse_chunk(event: dict[str, Any]) -> Chunk:
    """Turn one decoded SSE ``data:`` object of ``/v1/completions`` into a :class:`Chunk`."""
    usage = event.get("usage") or {}
    choices = event.get("choices") or []
    choice = choices[0] if choices else {}
    logprobs = choice.get("logprobs") or {}
    tokens = logprobs.get("tokens") or []
    tops = logprobs.get("top_logprobs") or []
    text = choice.get("text") or ""
    return Chunk(
        text=text,
        n_tokens=len(tokens) if logprobs else int(bool(text) or _token_without_text(choice)),
        first_token=tokens[0] if tokens else None,
        top_logprobs=tops[0] if tops and tops[0] else None,
        finish_reason=choice.get("finish_reason"),
        stop_reason=choice.get("stop_reason"),
        reports_stop_reason="stop_reason" in choice,
        prompt_tokens=usage.get("prompt_tokens"),
        completion_tokens=usage.get("completion_tokens"),
        token_logprobs=tuple(logprobs.get("token_logprobs") or ()),
        token_top_logprobs=tuple(top or {} for top in tops),
        token_texts=tuple(str(t) for t in tokens),
    )
