"""Strict JSON both ways: a request body read as RFC 8259 JSON only (:func:`loads_request`), and
what the proxy writes made strict (:func:`finite`, :func:`dumps`).

Python's :mod:`json` reads more than JSON: ``NaN``, ``Infinity`` and ``-Infinity``, numbers
too large for a float (``1e400`` becomes ``inf``), and ``\\ud800`` escapes that decode to lone
surrogates, which no UTF-8 encoder takes. Each would reach a backend, a log or the response and
fail there as a 500. Here each is a 400 that names the field where it was found, as is a body
nested deeper than :data:`MAX_DEPTH` (which would otherwise exhaust the parser's recursion).

What the proxy writes never holds a non-finite number: :func:`finite` writes an infinity as the
string ``"inf"`` (``"-inf"``), which is how the routing record carries ``threshold=inf`` (the
baseline that sends every step to the small model), and NaN as null.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from langchain_glimprouter.proxy.errors import ApiError

MAX_DEPTH = 64
"""The deepest nesting of arrays and objects a request may have (OpenAI's and vLLM's bodies
need a handful; a JSON schema or a tool's parameters a few dozen at most)."""
_SURROGATE = re.compile("[\ud800-\udfff]")


class _NotFinite:
    """What a non-finite number of the body is read as, until :func:`_check` finds where."""

    def __init__(self, text: str) -> None:
        self.text = text


def _number(text: str) -> float | _NotFinite:
    value = float(text)
    return value if math.isfinite(value) else _NotFinite(text)


def loads_request(body: bytes | bytearray) -> Any:
    """``body`` as strict JSON, or an :class:`ApiError` 400 naming the field at fault."""
    try:
        value = json.loads(body, parse_constant=_NotFinite, parse_float=_number)
    except RecursionError:
        raise _too_deep(None) from None
    except ValueError as exc:  # UnicodeDecodeError is one
        raise ApiError(400, f"the request body is not valid JSON ({exc}).") from None
    _check(value)
    return value


def _too_deep(where: str | None) -> ApiError:
    return ApiError(
        400,
        f"the request body is nested more than {MAX_DEPTH} levels deep"
        + (f" (at {where})" if where else "")
        + "; no OpenAI request needs that.",
        code="invalid_value",
        param=_field(where),
    )


def _check(value: Any) -> None:
    """Refuse a non-finite number, a lone surrogate (in a key or a string) or nesting beyond
    :data:`MAX_DEPTH`, walking iteratively (so that depth itself cannot fail)."""
    pending: list[tuple[Any, str, int]] = [(value, "", 0)]
    while pending:
        item, where, depth = pending.pop()
        if isinstance(item, (dict, list)):
            if depth >= MAX_DEPTH:
                raise _too_deep(where or None)
            pairs = item.items() if isinstance(item, dict) else enumerate(item)
            for key, child in pairs:
                if isinstance(key, str):
                    if _SURROGATE.search(key):
                        raise _surrogate(where or None)
                    inner = f"{where}.{key}" if where else key
                else:
                    inner = f"{where}[{key}]"
                pending.append((child, inner, depth + 1))
        elif isinstance(item, _NotFinite):
            raise ApiError(
                400,
                f"{where or 'the body'} is {item.text}: JSON numbers must be finite "
                "(NaN and Infinity are not JSON).",
                code="invalid_value",
                param=_field(where),
            )
        elif isinstance(item, str) and _SURROGATE.search(item):
            raise _surrogate(where or None)


def _field(where: str | None) -> str | None:
    """The top-level field of a path (``messages`` of ``messages[0].content``)."""
    return re.split(r"[.\[]", where, maxsplit=1)[0] if where else None


def _surrogate(where: str | None) -> ApiError:
    return ApiError(
        400,
        f"{where or 'a key of the body'} holds a lone UTF-16 surrogate (an unpaired \\ud800-"
        "\\udfff escape), which is not text: send valid Unicode.",
        code="invalid_value",
        param=_field(where),
    )


def finite(value: Any) -> Any:
    """``value`` with every infinity as the string ``"inf"`` or ``"-inf"`` and NaN as None
    (the rest as it is), for JSON that strict parsers read."""
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item) for item in value]
    return value


def dumps(value: Any) -> str:
    """``value`` as strict JSON (non-finite numbers written by :func:`finite`)."""
    return json.dumps(finite(value), ensure_ascii=False, allow_nan=False)
