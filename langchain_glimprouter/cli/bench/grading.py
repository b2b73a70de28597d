"""Answer extraction and grading for ``glimprouter bench`` (standard library only).

A bench file is JSONL, one question a line (see :func:`load_items`). A response is graded by
its last ``\\boxed{...}`` (else a trailing "answer is X" phrase), normalised so that equal
answers written differently ("3.50", "\\frac{7}{2}", "$3.5$") compare equal.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from decimal import Decimal, localcontext
from fractions import Fraction
from importlib.resources import files
from pathlib import Path

__all__ = [
    "BenchItem",
    "Grade",
    "default_items_path",
    "extract_answer",
    "grade",
    "load_items",
    "normalize",
]

REL_TOL = 1e-6
"""Relative tolerance of numeric comparison in :func:`grade`."""


@dataclass(frozen=True)
class BenchItem:
    """One bench question and its reference answer."""

    question: str
    answer: str
    """The reference answer ("29", "\\frac{1}{2}"); a letter "A", "B", ... when ``choices``."""
    choices: tuple[str, ...] = ()
    """Multiple-choice option texts, lettered A, B, ... in this order; empty for free answers."""
    id: str = ""
    """Stable id; :func:`load_items` fills "q0001"... from the line number when absent."""


@dataclass(frozen=True)
class Grade:
    """The verdict on one response."""

    predicted: str | None
    """The normalised extracted answer (a letter for multiple choice when one was found);
    None when the response holds no answer."""
    correct: bool


def load_items(path: str | os.PathLike[str]) -> list[BenchItem]:
    """Read a JSONL bench file: one object a line with "question" (str), "answer" (str, int or
    float), optional "choices" (list of str; "answer" is then a letter) and optional "id" (str).

    Blank lines are skipped and other keys ignored. Raises ValueError naming the file and line.
    """
    items: list[BenchItem] = []
    seen: dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                item = _parse_item(line, lineno)
            except ValueError as e:
                raise ValueError(f"{os.fspath(path)}:{lineno}: {e}") from None
            if item.id in seen:
                raise ValueError(
                    f"{os.fspath(path)}:{lineno}: duplicate id {item.id!r} "
                    f"(first on line {seen[item.id]})"
                )
            seen[item.id] = lineno
            items.append(item)
    return items


def _parse_item(line: str, lineno: int) -> BenchItem:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"not JSON ({e})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    for key in ("question", "answer"):
        if key not in obj:
            raise ValueError(f"missing key {key!r}")
    question, answer = obj["question"], obj["answer"]
    if not isinstance(question, str) or not question.strip():
        raise ValueError("'question' must be a non-empty string")
    if isinstance(answer, bool) or not isinstance(answer, (str, int, float)):
        raise ValueError(f"'answer' must be a string or a number, got {answer!r}")
    answer = str(answer).strip()
    if not answer:
        raise ValueError("'answer' is empty")
    choices = obj.get("choices", [])
    if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
        raise ValueError("'choices' must be a list of strings")
    if choices:
        letters = _letters(len(choices))
        if answer not in letters:
            raise ValueError(
                f"answer {answer!r} is not a letter {letters[0]}-{letters[-1]} "
                f"for {len(choices)} choices"
            )
    item_id = obj.get("id", f"q{lineno:04d}")
    if not isinstance(item_id, str) or not item_id:
        raise ValueError("'id' must be a non-empty string")
    return BenchItem(question=question, answer=answer, choices=tuple(choices), id=item_id)


def _letters(n: int) -> str:
    if n > 26:
        raise ValueError(f"{n} choices: at most 26 are supported")
    return "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[:n]


def default_items_path() -> Path:
    """The shipped 40 arithmetic questions, ``langchain_glimprouter/data/arithmetic.jsonl``."""
    return Path(str(files("langchain_glimprouter") / "data" / "arithmetic.jsonl"))


_BOX = re.compile(r"\\(?:boxed|fbox)\s*\{")
_PHRASE = re.compile(r"\banswer(?:\s+is|\s*:)\s*(?:\*\*)?\s*:?\s*", re.IGNORECASE)


def _last_boxed(text: str) -> str | None:
    """The content of the last non-empty, closed ``\\boxed{}``/``\\fbox{}``, else None."""
    found = None
    for m in _BOX.finditer(text):
        depth, start = 1, m.end()
        for i in range(start, len(text)):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                if text[start:i].strip():
                    found = text[start:i]
                break
    return found


def _strip_math(s: str) -> str:
    """Drop ``$...$`` pairs and an enclosing ``\\(...\\)`` or ``\\[...\\]``; strip spaces."""
    s = re.sub(r"(?<!\\)(\$\$?)(.+?)(?<!\\)\1", r"\2", s).strip()
    for left, right in (("\\(", "\\)"), ("\\[", "\\]")):
        if len(s) >= len(left) + len(right) and s.startswith(left) and s.endswith(right):
            s = s[len(left) : -len(right)].strip()
    return s


def extract_answer(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` or ``\\fbox{...}`` (nested braces kept; empty
    boxes are skipped), else what follows the last "answer is" / "Answer:" up to the end of its
    sentence, else None. Surrounding ``$...$`` and whitespace are stripped."""
    boxed = _last_boxed(text)
    if boxed is not None:
        return _strip_math(boxed)
    phrases = list(_PHRASE.finditer(text))
    if not phrases:
        return None
    rest = text[phrases[-1].end() :].split("\n", 1)[0]
    rest = re.split(r"\.\s", rest, maxsplit=1)[0].strip().rstrip(".").strip()
    rest = _strip_math(rest.strip("*").strip())
    return rest or None


_TEXT = re.compile(r"\\(?:text|textbf|textit|textrm|mbox)\s*\{([^{}]*)\}(?:\^\{?\d\}?)?")
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)")
_THOUSANDS = re.compile(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d*)?")
_FRACTION = re.compile(r"([-+]?)(?:\\frac\{([-+]?\d+)\}\{([-+]?\d+)\}|([-+]?\d+)/([-+]?\d+))")


def normalize(answer: str) -> str:
    """Canonical form of an answer, so that equal answers written differently compare equal.

    Drops math delimiters, ``\\left``/``\\right``, LaTeX spacing, spaces, ``\\text{...}`` units
    (unwrapped when nothing else is left), trailing words after a number ("5 apples"), a
    "x =" prefix, degree and percent signs, dollars, thousands separators and a trailing ".";
    turns ``\\dfrac``/``\\tfrac`` into ``\\frac`` and ``\\frac12`` into ``\\frac{1}{2}``. A number
    becomes its shortest decimal ("3.50" -> "3.5", "-0" -> "0"); an integer fraction
    (``\\frac{a}{b}`` or "a/b") becomes that decimal when it terminates ("\\frac{1}{2}" -> "0.5"),
    else its reduced ``\\frac``. Anything else is returned cleaned.
    """
    s = _strip_math(answer.replace("\u2212", "-"))
    s = re.sub(r"\\(?:left|right)(?![a-zA-Z])", "", s)
    s = re.sub(r"\\[!,;: ]|\\quad|\\qquad|~", "", s)
    s = re.sub(r"\^\s*\{?\\circ\}?|°|\\?%|\\\$|\$", "", s)
    without_text = _TEXT.sub("", s).strip()
    s = without_text if without_text else _TEXT.sub(r"\1", s).strip()
    s = re.sub(r"\\[dtc]frac(?![a-zA-Z])", r"\\frac", s)
    s = re.sub(r"^[a-zA-Z]\s*=\s*(?=[^=]+$)", "", s)
    s = re.sub(r"^([-+]?[\d.,]*\d)\s+[a-zA-Z][a-zA-Z/\s]*\.?$", r"\1", s)
    s = re.sub(r"\s+", "", s).replace("{,}", ",").rstrip(".")
    if len(s) > 2 and s.startswith("{") and s.endswith("}") and _balanced(s[1:-1]):
        s = s[1:-1]
    s = re.sub(r"\\frac([^{\\])([^{\\])", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\frac(\{[^{}]*\})([^{\\])", r"\\frac\1{\2}", s)
    s = re.sub(r"\\frac([^{\\])\{", r"\\frac{\1}{", s)
    if _THOUSANDS.fullmatch(s):
        s = s.replace(",", "")
    value = _value(s)
    if value is None:
        return s
    return _canonical(value)


def _balanced(s: str) -> bool:
    depth = 0
    for ch in s:
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if depth < 0:
            return False
    return depth == 0


def _value(s: str) -> Fraction | None:
    """The exact value of a number or an integer fraction written as in :func:`normalize`."""
    if _NUMBER.fullmatch(s):
        return Fraction(Decimal(s))
    m = _FRACTION.fullmatch(s)
    if m is None:
        return None
    num, den = (m[2], m[3]) if m[2] is not None else (m[4], m[5])
    if int(den) == 0:
        return None
    value = Fraction(int(num), int(den))
    return -value if m[1] == "-" else value


def _canonical(value: Fraction) -> str:
    den = value.denominator
    while den % 2 == 0:
        den //= 2
    while den % 5 == 0:
        den //= 5
    if den == 1:  # a terminating decimal: exact with this many digits
        with localcontext() as ctx:
            ctx.prec = len(str(value.numerator)) + value.denominator.bit_length() + 2
            text = format(Decimal(value.numerator) / Decimal(value.denominator), "f")
        return text.rstrip("0").rstrip(".") if "." in text else text
    sign = "-" if value < 0 else ""
    return f"{sign}\\frac{{{abs(value.numerator)}}}{{{value.denominator}}}"


def _letter(text: str, choices: tuple[str, ...]) -> str | None:
    """The option letter a text names ("B", "(b)", "B.", "(B) 12", "B because ...") or the
    letter of the option whose text it equals; None when it names none."""
    t = _TEXT.sub(r"\1", text).strip().strip("*").strip()
    m = re.fullmatch(r"\(?([A-Za-z])\)?[.:),]?", t) or re.match(r"\(?([A-Z])\)?[.:),]?\s", t)
    if m is not None:
        return m[1].upper()
    cleaned = normalize(text)
    for letter, choice in zip(_letters(len(choices)), choices, strict=True):
        if _same(cleaned, normalize(choice)):
            return letter
    return None


def _same(a: str, b: str) -> bool:
    """Equal normalised answers, numbers within :data:`REL_TOL` of each other."""
    if a == b:
        return True
    x, y = _value(a), _value(b)
    return x is not None and y is not None and abs(x - y) <= REL_TOL * max(abs(x), abs(y))


def grade(response: str, item: BenchItem) -> Grade:
    """Grade a response against ``item``.

    Multiple choice (``item.choices`` non-empty): the letter comes from the last box
    (``\\boxed{B}``, ``\\boxed{(B)}``, or a boxed option text mapped to its letter), else from
    the "answer is B" phrase, else from the last "(B)" naming an option; correct iff it equals
    ``item.answer``. A box or phrase that names no option is kept, normalised, as ``predicted``
    (never correct). Otherwise :func:`extract_answer` and :func:`normalize` on both sides; two
    numbers are equal within a relative :data:`REL_TOL`.
    """
    extracted = extract_answer(response)
    predicted: str | None
    if item.choices:
        if extracted is not None:
            letter = _letter(extracted, item.choices)
            predicted = letter if letter is not None else normalize(extracted)
        else:
            valid = _letters(len(item.choices))
            named = re.findall(rf"\(([{valid}])\)", response)
            predicted = named[-1] if named else None
        return Grade(predicted=predicted, correct=predicted == item.answer)
    if extracted is None:
        return Grade(predicted=None, correct=False)
    predicted = normalize(extracted)
    return Grade(predicted=predicted, correct=_same(predicted, normalize(item.answer)))
