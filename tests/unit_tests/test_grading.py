"""Answer extraction, normalisation, grading, bench files and the shipped arithmetic set."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from langchain_glimprouter.cli.bench.grading import (
    BenchItem,
    Grade,
    default_items_path,
    extract_answer,
    grade,
    load_items,
    normalize,
)

ROOT = Path(__file__).resolve().parents[2]
GENERATOR = ROOT / "scripts" / "make_arithmetic_set.py"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"so the result is \boxed{\frac{1}{2}}.", r"\frac{1}{2}"),
        (r"\boxed{\left\{ 1, \{2\} \right\}}", r"\left\{ 1, \{2\} \right\}"),
        (r"first \boxed{3}, then on reflection \boxed{4}", "4"),
        (r"\boxed{7} and an unfinished \boxed{8", "7"),
        (r"\boxed{5} but \boxed{} is empty", "5"),
        (r"the area is \fbox{12}", "12"),
        (r"\boxed{ $42$ }", "42"),
        ("Step 1 ... The answer is 42.", "42"),
        ("**Answer:** $3.5$ km. Then more text", "3.5 km"),
        ("answer is: \n\n 17", "17"),
        ("The answer is 1. Later: the answer is 2.", "2"),
        (r"Answer: 9 but \boxed{10}", "10"),
    ],
)
def test_extract_answer(text: str, expected: str) -> None:
    assert extract_answer(text) == expected


@pytest.mark.parametrize("text", ["", "I do not know.", r"Put it in \boxed{}.", r"\boxed{1"])
def test_extract_answer_none(text: str) -> None:
    assert extract_answer(text) is None


EQUAL = [
    ("5", r"5 \text{ apples}"),
    ("5", r"5\text{apples}"),
    ("29", "29 apples."),
    ("1000", "1,000"),
    ("1000", r"1\,000"),
    ("1000", "1{,}000"),
    ("1234567", "1,234,567"),
    (r"\frac{1}{2}", r"\dfrac{1}{2}"),
    (r"\frac{1}{2}", r"\tfrac12"),
    (r"\frac{1}{2}", r"\frac12"),
    (r"\frac{1}{2}", "0.5"),
    (r"\frac{1}{2}", "2/4"),
    (r"\frac{1}{3}", r"\frac{2}{6}"),
    (r"-\frac{1}{3}", r"\frac{-1}{3}"),
    ("3.5", "3.50"),
    ("7", "7.0"),
    ("0", "-0"),
    ("0.5", ".5"),
    ("25", r"25\%"),
    ("25", "25%"),
    ("12", "$12$"),
    ("12", r"\$12"),
    ("12", "12."),
    ("90", r"90^\circ"),
    ("5", "x = 5"),
    (r"(1,2)", r"\left( 1, 2 \right)"),
    (r"\sqrt{2}", r"\sqrt {2}"),
    ("yes", r"\text{yes}"),
    ("-3", "−3"),
]

NOT_EQUAL = [
    ("12", "1.2"),
    (r"\frac{1}{2}", "2"),
    (r"\frac{1}{3}", "0.33"),
    ("1000", "1.000"),
    ("1,2", "12"),
    ("-5", "5"),
    ("25", "0.25"),
    (r"\sqrt{2}", "2"),
    ("x", "y"),
]


@pytest.mark.parametrize(("a", "b"), EQUAL)
def test_normalize_equal(a: str, b: str) -> None:
    assert normalize(a) == normalize(b)


@pytest.mark.parametrize(("a", "b"), NOT_EQUAL)
def test_normalize_not_equal(a: str, b: str) -> None:
    assert normalize(a) != normalize(b)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("3.50", "3.5"),
        ("7.0", "7"),
        ("-0", "0"),
        ("1,000", "1000"),
        (r"\frac{1}{2}", "0.5"),
        (r"\frac{4}{6}", r"\frac{2}{3}"),
        (r"\frac{3}{0}", r"\frac{3}{0}"),
        ("123456789012345678901234567890123", "123456789012345678901234567890123"),
        ("10^{3}", "10^{3}"),
    ],
)
def test_normalize_canonical_form(raw: str, expected: str) -> None:
    assert normalize(raw) == expected


FREE = BenchItem(question="?", answer="29")


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (r"\boxed{29}", Grade("29", True)),
        (r"\boxed{29.0000001}", Grade("29.0000001", True)),
        (r"\boxed{29.001}", Grade("29.001", False)),
        (r"$\boxed{29 \text{ apples}}$", Grade("29", True)),
        (r"\boxed{30} no wait \boxed{29}", Grade("29", True)),
        (r"\boxed{29} no wait \boxed{30}", Grade("30", False)),
        ("So the answer is 29.", Grade("29", True)),
        ("I give up.", Grade(None, False)),
    ],
)
def test_grade_free_answer(response: str, expected: Grade) -> None:
    assert grade(response, FREE) == expected


def test_grade_fraction_reference() -> None:
    item = BenchItem(question="?", answer=r"\frac{1}{3}")
    assert grade(r"\boxed{\dfrac{2}{6}}", item).correct
    assert grade(r"\boxed{0.3333333}", item).correct
    assert not grade(r"\boxed{0.33}", item).correct


CHOICE = BenchItem(question="?", answer="B", choices=("12", "15", r"\frac{1}{2}", "7"))


@pytest.mark.parametrize(
    ("response", "predicted"),
    [
        (r"\boxed{B}", "B"),
        (r"\boxed{(B)}", "B"),
        (r"\boxed{b}", "B"),
        (r"\boxed{\text{B}}", "B"),
        (r"\boxed{B. 15}", "B"),
        (r"\boxed{15}", "B"),
        (r"\boxed{15 \text{ apples}}", "B"),
        (r"\boxed{0.5}", "C"),
        (r"\boxed{A} hmm, no: \boxed{B}", "B"),
        ("The answer is B.", "B"),
        ("The answer is (B) because 3 times 5 is 15.", "B"),
        ("Answer: D", "D"),
        ("Not (A), not (C); it must be (B).", "B"),
        ("(A) and (E) are both odd", "A"),
        (r"\boxed{E}", "E"),
        (r"\boxed{99}", "99"),
        ("no idea", None),
    ],
)
def test_grade_multiple_choice(response: str, predicted: str | None) -> None:
    assert grade(response, CHOICE) == Grade(predicted, predicted == "B")


def write(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "bench.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_load_items(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        json.dumps({"question": "1+1?", "answer": 2}),
        "",
        json.dumps({"question": "Half?", "answer": 0.5, "id": "half", "source": "x"}),
        json.dumps({"question": "Pick", "answer": "C", "choices": ["a", "b", "c"]}),
    )
    assert load_items(path) == [
        BenchItem(question="1+1?", answer="2", id="q0001"),
        BenchItem(question="Half?", answer="0.5", id="half"),
        BenchItem(question="Pick", answer="C", choices=("a", "b", "c"), id="q0004"),
    ]
    assert load_items(str(path)) == load_items(path)


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ('{"question": "q", "answer": 1', "not JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"answer": "1"}', "missing key 'question'"),
        ('{"question": "q"}', "missing key 'answer'"),
        ('{"question": "q", "answer": true}', "'answer' must be"),
        ('{"question": "q", "answer": "12", "choices": ["a", "b"]}', "not a letter A-B"),
        ('{"question": "q", "answer": "C", "choices": ["a", "b"]}', "not a letter A-B"),
        ('{"question": "q", "answer": "A", "choices": "ab"}', "'choices' must be"),
        ('{"question": "q", "answer": "1", "id": 7}', "'id' must be"),
        (
            '{"question": "q", "answer": "2", "id": "first"}',
            "duplicate id 'first' (first on line 1)",
        ),
    ],
)
def test_load_items_errors(tmp_path: Path, bad_line: str, message: str) -> None:
    path = write(tmp_path, '{"question": "q", "answer": "1", "id": "first"}', "", bad_line)
    with pytest.raises(ValueError, match=r"bench\.jsonl:3: ") as excinfo:
        load_items(path)
    assert message in str(excinfo.value)


def test_load_items_generated_id_collides(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '{"question": "q", "answer": "1", "id": "q0002"}',
        '{"question": "r", "answer": "2"}',
    )
    with pytest.raises(ValueError, match=r":2: duplicate id 'q0002'"):
        load_items(path)


def test_shipped_set() -> None:
    path = default_items_path()
    assert path.is_file()
    assert path.parent.name == "data"
    items = load_items(path)
    assert len(items) == 40
    assert [item.id for item in items] == [f"arith-{i:03d}" for i in range(1, 41)]
    choice_items = [item for item in items if item.choices]
    assert len(choice_items) == 8
    assert all(len(item.choices) == 4 for item in choice_items)
    assert all(len(set(item.choices)) == 4 for item in choice_items)
    assert len({item.question for item in items}) == 40
    for item in items:
        assert item.question.endswith(r"in \boxed{}."), item.id
        assert grade(rf"\boxed{{{item.answer}}}", item) == Grade(item.answer, True), item.id
        if item.choices:
            wrong = next(letter for letter in "ABCD" if letter != item.answer)
            choice_text = item.choices["ABCD".index(item.answer)]
            assert grade(rf"\boxed{{{choice_text}}}", item).correct, item.id
        else:
            assert int(item.answer) > 0, item.id
            wrong = str(int(item.answer) + 1)
        assert not grade(rf"\boxed{{{wrong}}}", item).correct, item.id


def test_generator_reproduces_shipped_file(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "arithmetic.jsonl"
    subprocess.run([sys.executable, str(GENERATOR), str(out)], check=True, capture_output=True)
    assert out.read_bytes() == default_items_path().read_bytes()
