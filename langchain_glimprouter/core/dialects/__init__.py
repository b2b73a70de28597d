"""Server kinds, one module each: how a kind renders a conversation into prompt text, what goes
into its requests (extras, the structured-output field), how it tokenizes and how its errors
are worded, behind one :class:`~.base.Dialect` protocol.

- :mod:`.jinja`: a client-side chat template (``chat_template`` set); the server only completes.
- :mod:`.vllm`: vLLM, which renders with ``/tokenize`` + ``/detokenize``.
- :mod:`.llamacpp`: llama.cpp's ``llama-server``, which renders with ``/apply-template``.

A new kind is a module with a class like theirs, named in :data:`DIALECTS` at the place its
rendering is tried.
"""

from __future__ import annotations

from langchain_glimprouter.core.dialects.base import NOT_SUPPORTED, Dialect, Hints
from langchain_glimprouter.core.dialects.jinja import JINJA
from langchain_glimprouter.core.dialects.llamacpp import LLAMACPP
from langchain_glimprouter.core.dialects.vllm import VLLM

DIALECTS: tuple[Dialect, ...] = (JINJA, VLLM, LLAMACPP)
"""Every kind, in the order rendering tries them: a client-side template first, then the
servers' own rendering endpoints (a server without one answers 404 and the next is tried)."""

DEFAULT: Dialect = VLLM
"""The kind of a server not yet rendered for."""

_BY_NAME = {dialect.name: dialect for dialect in DIALECTS}


def dialect_named(name: str | None) -> Dialect:
    """The kind called ``name`` (:data:`DEFAULT` for None)."""
    return DEFAULT if name is None else _BY_NAME[name]


__all__ = ["DEFAULT", "DIALECTS", "NOT_SUPPORTED", "Dialect", "Hints", "dialect_named"]
