"""What a scripted model writes: its :class:`Script`, how the text after a prompt is found
(:func:`continuation`) and cut into tokens (:func:`split_tokens`), and the logprobs it reports.

Pure functions of the script and the prompt; :mod:`scripted_server.answers` turns them into the
answers of vLLM's endpoints.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
_WORDS = re.compile(r"^\s+|\s*\S+|\s+")
_GLUED = re.compile(r"\s*\S+|\s+")
_MIN_LOGPROB = -9999.0  # vLLM's floor for log(0)


@dataclass
class Script:
    """What one scripted model writes: its reasoning steps, first-token entropies and answer."""

    steps: list[str]
    h_init: list[float] | float = 0.5
    answer: str | Callable[[str], str] = "The answer is 42."
    """The final answer, or a function of the prompt that gives it."""
    delimiter: str = "\n\n"
    end_with_think: bool = True
    residual_mass: float = 0.05
    wide_residual_mass: float | None = None
    """The residual mass of a first token's top logprobs when more than 20 are asked for (a
    ``topk_bounds`` escalation probe sees more of the distribution); None: ``residual_mass``."""

    def residual(self, n_top: int) -> float:
        """The probability mass outside the first token's top ``n_top`` logprobs."""
        if n_top > 20 and self.wide_residual_mass is not None:
            return self.wide_residual_mass
        return self.residual_mass

    def entropy(self, k: int) -> float:
        """Target first-token entropy for step ``k`` (a list is clamped to its last entry)."""
        if isinstance(self.h_init, list):
            return self.h_init[min(k, len(self.h_init) - 1)]
        return self.h_init


def split_tokens(text: str, delimiter: str, at_start: bool = True) -> list[str]:
    """Cut ``text`` into tokens: each ``delimiter`` is a token of its own, and the text between two
    delimiters is cut by ``^\\s+|\\s*\\S+|\\s+`` (whitespace at its start, then a word with the
    whitespace before it; whitespace left at the end). With ``at_start`` False the text goes on
    a step already begun (a resumed stream), so its first word keeps the whitespace before it.
    ``"".join(split_tokens(text, d)) == text`` always holds."""
    tokens: list[str] = []
    for i, part in enumerate(text.split(delimiter)):
        if i:
            tokens.append(delimiter)
        tokens.extend((_WORDS if i or at_start else _GLUED).findall(part))
    return tokens


def continuation(script: Script, prompt: str) -> tuple[str, int]:
    """The whole text the model writes after ``prompt`` (up to EOS), and the step index ``k``.

    ``k`` counts the delimiters after the last ``"<think>\\n"``; with ``"</think>"`` there, the
    model writes the answer, else steps ``k, k+1, ...`` each followed by the delimiter, then
    ``"</think>" + delimiter + answer`` (only if ``end_with_think``; EOS otherwise).

    A prompt that ends inside that text (a resumed request) continues it where it stops."""
    _, think, body = prompt.rpartition("<think>\n")
    body = body if think else ""
    k = body.count(script.delimiter)
    answer = script.answer(prompt) if callable(script.answer) else script.answer
    if "</think>" in body:
        partial = body.rpartition("</think>")[2].removeprefix(script.delimiter)
        return answer.removeprefix(partial), k
    text = "".join(step + script.delimiter for step in script.steps[k:])
    if script.end_with_think:
        text += f"</think>{script.delimiter}{answer}"
    partial = body.split(script.delimiter)[-1]  # "a\n\n\n": step "a", then "\n" of the next
    return text.removeprefix(partial), k


def first_json_value(text: str) -> str:
    """What a server constraining its output to JSON would write: the text up to the end of
    its first JSON value (all of it when there is none; the client then fails to parse it)."""
    start = len(text) - len(text.lstrip())
    try:
        _, end = json.JSONDecoder().raw_decode(text, start)
    except ValueError:
        return text
    return text[:end]


def _entropy(p: float, n: int) -> float:
    """Entropy (nats) of ``p`` on one outcome and ``(1 - p) / (n - 1)`` on each of ``n - 1``."""
    h = -p * math.log(p) if p > 0 else 0.0
    return h - (1 - p) * math.log((1 - p) / (n - 1)) if p < 1 else h


def first_top_logprobs(token: str, n: int, h: float, mass: float) -> dict[str, float]:
    """Top-``n`` logprobs (at least the sampled ``token``) with total probability ``1 - mass`` and
    renormalised entropy ``h``, clamped to ``[0, log n]``. The sampled token has renormalised
    probability ``p >= 1 / n`` (found by bisection, as the entropy falls with ``p``), the other
    ``n - 1`` (``"<alt1>"``, ...) share the rest equally."""
    n = max(n, 1)
    lo, hi = 1.0 / n, 1.0
    if h <= 0:
        lo = 1.0
    for _ in range(200 if lo < hi else 0):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _entropy(mid, n) > h else (lo, mid)
    p, total = lo, 1.0 - mass
    rest = (1 - p) * total / (n - 1) if n > 1 else 0.0
    sampled = math.log(p * total)
    alt = min(math.log(rest), sampled) if rest > 0 else _MIN_LOGPROB  # ties: no rounding above
    return {token: sampled} | {f"<alt{i}>": alt for i in range(1, n)}


def later_top_logprobs(token: str, n: int) -> dict[str, float]:
    """Top-``n`` logprobs for a token after the first: the sampled one far ahead of the rest."""
    return {token: -0.01} | {f"<alt{i}>": -10.0 - i for i in range(1, max(n, 1))}


def token_logprobs(
    script: Script, token: str, offset: int, n_top: int, step: int | None
) -> dict[str, Any]:
    """vLLM's logprobs of one token; ``step`` is given for the first token of a response."""
    top = (
        later_top_logprobs(token, n_top)
        if step is None
        else first_top_logprobs(token, n_top, script.entropy(step), script.residual(n_top))
    )
    return {"text_offset": [offset], "token_logprobs": [top[token]], "tokens": [token],
            "top_logprobs": [top]}  # fmt: skip
