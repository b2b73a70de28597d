"""Generate ``langchain_glimprouter/data/arithmetic.jsonl``, the default ``glimprouter bench`` set.

40 items: 32 two- or three-step arithmetic word problems with integer answers and 8 multiple-choice
ones (4 options, the answer a letter). Deterministic (fixed seed, standard library only): running
it again writes the same bytes. The bench shows the options of a multiple-choice item itself; the
question text does not list them.

Usage: python scripts/make_arithmetic_set.py [OUT_FILE]
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Callable
from pathlib import Path

SEED = 20250611
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "langchain_glimprouter/data/arithmetic.jsonl"
FREE_SUFFIX = " Put the final answer in \\boxed{}."
CHOICE_SUFFIX = " Choose one of the options and put its letter in \\boxed{}."

Problem = tuple[str, int]
"""A question (without the answer instruction) and its integer answer."""
ChoiceProblem = tuple[str, int, list[int]]
"""A question, its answer, and plausible wrong answers (miscalculations)."""


def apples(rng: random.Random) -> Problem:
    boxes, per_box = rng.randint(3, 9), rng.randint(6, 15)
    sold = rng.randint(5, boxes * per_box - 5)
    return (
        f"A farmer packs {boxes} boxes with {per_box} apples in each box and then sells "
        f"{sold} apples. How many apples does he have left?",
        boxes * per_box - sold,
    )


def trains(rng: random.Random) -> Problem:
    v1, t1 = rng.randrange(40, 101, 5), rng.randint(2, 5)
    v2, t2 = rng.randrange(40, 101, 5), rng.randint(2, 4)
    return (
        f"A train travels at {v1} km/h for {t1} hours, then at {v2} km/h for {t2} more hours. "
        "How many kilometres does it travel in total?",
        v1 * t1 + v2 * t2,
    )


def discount(rng: random.Random) -> Problem:
    price, pct, count = rng.randrange(20, 201, 20), rng.choice([10, 20, 25, 50]), rng.randint(2, 5)
    return (
        f"A jacket costs {price} dollars. During a sale every jacket is {pct}% off. How many "
        f"dollars do {count} jackets cost during the sale?",
        count * price * (100 - pct) // 100,
    )


def ages(rng: random.Random) -> Problem:
    maria, gap, times = rng.randint(12, 20), rng.randint(2, 5), rng.randint(3, 5)
    return (
        f"Maria is {maria} years old. Her brother is {gap} years younger than she is, and their "
        f"uncle is {times} times as old as her brother. How old is their uncle?",
        times * (maria - gap),
    )


def savings(rng: random.Random) -> Problem:
    weekly, weeks = rng.randint(5, 25), rng.randint(6, 20)
    spent = rng.randint(20, weekly * weeks - 10)
    return (
        f"Leo saves {weekly} dollars every week for {weeks} weeks and then spends {spent} "
        "dollars on a bike. How many dollars does he have left?",
        weekly * weeks - spent,
    )


def pages(rng: random.Random) -> Problem:
    per_day, days, left = rng.randint(12, 30), rng.randint(3, 9), rng.randint(10, 120)
    return (
        f"A book has {per_day * days + left} pages. Nina reads {per_day} pages a day for {days} "
        "days. How many pages does she still have to read?",
        left,
    )


def cookies(rng: random.Random) -> Problem:
    while True:
        trays, per_tray = rng.randint(3, 8), rng.randint(12, 36)
        bag = rng.choice([4, 5, 6, 8, 10, 12])
        if trays * per_tray % bag == 0:
            break
    return (
        f"A baker bakes {trays} trays of {per_tray} cookies each and packs all of them into "
        f"bags of {bag}. How many bags does he fill?",
        trays * per_tray // bag,
    )


def fence(rng: random.Random) -> Problem:
    length = rng.randint(8, 30)
    width, cost = rng.randint(5, length), rng.randint(3, 12)
    return (
        f"A rectangular garden is {length} m long and {width} m wide. Fencing costs {cost} "
        "dollars per metre. How many dollars does it cost to fence all the way around it?",
        2 * (length + width) * cost,
    )


def tank(rng: random.Random) -> ChoiceProblem:
    capacity, rate, minutes = rng.randrange(200, 601, 50), rng.randint(5, 15), rng.randint(5, 12)
    filled = rate * minutes
    return (
        f"An empty tank holds {capacity} litres. Water flows in at {rate} litres per minute for "
        f"{minutes} minutes. How many more litres are needed to fill the tank?",
        capacity - filled,
        [filled, capacity + filled, capacity - filled + rate],
    )


def teams(rng: random.Random) -> ChoiceProblem:
    while True:
        classes, size, absent = rng.randint(3, 6), rng.randint(20, 30), rng.randint(2, 9)
        count = rng.randint(4, 8)
        if (classes * size - absent) % count == 0:
            break
    per_team = (classes * size - absent) // count
    return (
        f"A school has {classes} classes of {size} students. {absent} students are absent, and "
        f"the others are split equally into {count} teams. How many students are in each team?",
        per_team,
        [classes * size // count, per_team + absent, per_team * 2],
    )


def marbles(rng: random.Random) -> ChoiceProblem:
    ana, times = rng.randint(6, 20), rng.randint(2, 4)
    fewer = rng.randint(2, ana)
    ben = times * ana
    return (
        f"Ana has {ana} marbles. Ben has {times} times as many as Ana, and Carl has {fewer} "
        "fewer than Ben. How many marbles do the three of them have together?",
        ana + ben + ben - fewer,
        [ben + ben - fewer, ana + ben + ben + fewer, ana + ben + ben],
    )


def bus(rng: random.Random) -> ChoiceProblem:
    while True:
        start, off, on = rng.randint(20, 50), rng.randint(3, 15), rng.randint(3, 15)
        if (start - off + on) % 2 == 0:
            break
    left = (start - off + on) // 2
    return (
        f"A bus leaves with {start} passengers. At the first stop {off} get off and {on} get "
        "on; at the second stop half of the passengers get off. How many passengers are left?",
        left,
        [start - off + on, (start + off - on) // 2, left + on],
    )


FREE: list[Callable[[random.Random], Problem]] = [
    apples,
    trains,
    discount,
    ages,
    savings,
    pages,
    cookies,
    fence,
]
CHOICE: list[Callable[[random.Random], ChoiceProblem]] = [tank, teams, marbles, bus]


def options(rng: random.Random, answer: int, wrong: list[int], letter: str) -> list[str]:
    """Four option texts: the answer at ``letter`` and three distinct wrong ones."""
    picked: list[int] = []
    for value in [*wrong, answer + 1, answer - 1, answer + 10, answer * 2]:
        if value > 0 and value != answer and value not in picked and len(picked) < 3:
            picked.append(value)
    rng.shuffle(picked)
    picked.insert("ABCD".index(letter), answer)
    return [str(v) for v in picked]


def generate() -> list[dict[str, object]]:
    """The 40 items in file order; a question drawn twice is drawn again."""
    rng = random.Random(SEED)
    items: list[dict[str, object]] = []
    seen: set[str] = set()
    for _ in range(4):
        for make in FREE:
            question, answer = make(rng)
            while question in seen:
                question, answer = make(rng)
            seen.add(question)
            items.append({"question": question + FREE_SUFFIX, "answer": str(answer)})
    letters = list("ABCDABCD")  # each letter answers two of the 8 multiple-choice items
    rng.shuffle(letters)
    for _ in range(2):
        for make_choice in CHOICE:
            question, answer, wrong = make_choice(rng)
            while question in seen:
                question, answer, wrong = make_choice(rng)
            seen.add(question)
            letter = letters.pop()
            choices = options(rng, answer, wrong, letter)
            items.append(
                {"question": question + CHOICE_SUFFIX, "answer": letter, "choices": choices}
            )
    return [{"id": f"arith-{i:03d}", **item} for i, item in enumerate(items, 1)]


def main(out: Path) -> None:
    text = "".join(json.dumps(item, ensure_ascii=False) + "\n" for item in generate())
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT)
