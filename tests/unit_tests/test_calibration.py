"""Choosing the threshold: calibrate(), glimprouter calibrate, and the demo's warm-up."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from langchain_core.messages import HumanMessage, SystemMessage

from langchain_glimprouter import InvalidArgumentError
from langchain_glimprouter.calibration import (
    CALIBRATION_QUESTIONS,
    acalibrate,
    calibrate,
    load_questions,
    upper_quantile,
)
from langchain_glimprouter.cli import main as cli
from scripted_server import Script, ScriptedServer
from tests.support.pair import SMALL_STEPS, router_for

# Eight steps, first-token entropies 0.1 ... 0.8; the ninth glimpse finds "</think>".
STEPS = [f"small writes step {i}" for i in range(8)]
H8 = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.05]


def _pair(servers: Any, h_init: list[float], steps: list[str] = STEPS) -> Any:
    return servers(Script(steps=steps, h_init=h_init))


def _cli_args(small: ScriptedServer, large: ScriptedServer) -> list[str]:
    return ["--small-url", small.base_url, "--small-model", "small-m",
            "--large-url", large.base_url, "--large-model", "large-m"]  # fmt: skip


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([1, 2, 3, 4], 0.75, 3),  # one of four above 3
        ([1, 2, 3, 4], 0.5, 2),
        ([1, 2, 3, 4], 0.7, 3),  # 2 would leave 50% above, more than 30%
        ([4, 3, 2, 1], 0.1, 1),
        ([1, 2, 2, 2, 3], 0.5, 2),  # ties: one of five above 2
        ([1, 1, 1, 5], 0.9, 5),  # 25% above 1 is too many for 10%
        ([5.0], 0.75, 5.0),
    ],
)
def test_upper_quantile(values: list[float], q: float, expected: float) -> None:
    assert upper_quantile(values, q) == expected
    assert sum(v > expected for v in values) / len(values) <= 1 - q + 1e-12


def test_upper_quantile_is_exact_at_float_edges() -> None:
    """0.29 * 100 is 28.999...: 29 of 100 values above the threshold are still allowed."""
    values = list(range(100))
    assert upper_quantile(values, 1 - 0.29) == 70
    assert upper_quantile(values, 1 - 0.3) == 69


@pytest.mark.parametrize(
    ("target", "threshold", "realised"),
    [(0.25, 0.6, 0.25), (0.5, 0.4, 0.5), (0.1, 0.8, 0.0), (0.125, 0.7, 0.125), (0.9, 0.1, 0.875)],
)
def test_threshold_for_known_entropies(
    servers: Any, target: float, threshold: float, realised: float
) -> None:
    small, large = _pair(servers, H8)
    found = calibrate(router_for(small, large), ["q1", "q2", "q3"], target)
    assert found.threshold == pytest.approx(threshold)
    assert found.realised_rate == realised
    assert found.realised_rate <= target
    assert found.target_rate == target
    assert found.n_questions == 3
    assert found.n_steps == 24  # the "</think>" glimpse writes no step and is not counted
    assert found.values == pytest.approx(sorted(H8[:8] * 3))
    assert found.rate_at(found.threshold) == found.realised_rate
    # every question has the same chain: another sample of questions cannot move the threshold
    assert found.threshold_ci == pytest.approx((found.threshold, found.threshold))


def test_every_question_routed_small_only(servers: Any) -> None:
    small, large = _pair(servers, H8)
    router = router_for(small, large, threshold=0.0)  # the router's own threshold is overridden
    questions = [f"question {i}" for i in range(5)]
    found = calibrate(router, questions, 0.25, max_concurrency=2)
    assert found.n_questions == 5
    # the large server got exactly one request per question: the answer, cut to one token
    assert len(large.requests) == 5
    assert all(r.prompt.endswith("</think>\n\n") for r in large.requests)
    assert all(r.params["max_tokens"] == 1 for r in large.requests)
    assert sorted(q for r in small.requests for q in questions if q in r.prompt) == sorted(
        questions * 9  # eight steps and the glimpse that finds "</think>"
    )


def test_large_steps_are_none_in_the_records(servers: Any) -> None:
    small, large = _pair(servers, H8)
    router = router_for(small, large)
    messages = router.batch(["q"], threshold=math.inf, max_tokens=1)
    record = messages[0].response_metadata["glimprouter"]
    assert record["n_large_steps"] == 0
    assert record["n_steps"] == 8


def test_quantiles(servers: Any) -> None:
    small, large = _pair(servers, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 0.0],
                         [f"step {i}" for i in range(10)])  # fmt: skip
    found = calibrate(router_for(small, large), ["q"], 0.2)
    assert found.threshold == pytest.approx(0.8)
    assert list(found.quantiles) == [0.1, 0.25, 0.5, 0.75, 0.9]
    assert [found.quantiles[q] for q in found.quantiles] == pytest.approx([0.1, 0.3, 0.5, 0.8, 0.9])


async def test_acalibrate_with_messages(servers: Any) -> None:
    small, large = _pair(servers, H8)
    conversation = [SystemMessage("Reason step by step."), HumanMessage("What is 2 + 2?")]
    found = await acalibrate(router_for(small, large), [conversation, "q"], 0.25, max_concurrency=1)
    assert found.threshold == pytest.approx(0.6)
    assert found.n_questions == 2
    assert any("Reason step by step." in r.prompt for r in small.requests)


@pytest.mark.parametrize("target", [0.0, 1.0, -0.1, 1.5, math.nan])
def test_target_rate_outside_0_1(servers: Any, target: float) -> None:
    small, large = _pair(servers, H8)
    with pytest.raises(InvalidArgumentError, match="between 0 and 1"):
        calibrate(router_for(small, large), ["q"], target)
    assert small.requests == []


def test_no_questions(servers: Any) -> None:
    small, large = _pair(servers, H8)
    with pytest.raises(InvalidArgumentError, match="non-empty list of questions"):
        calibrate(router_for(small, large), [], 0.25)
    with pytest.raises(InvalidArgumentError, match="non-empty list of questions"):
        calibrate(router_for(small, large), "one question, not a list", 0.25)
    with pytest.raises(InvalidArgumentError, match="max_concurrency"):
        calibrate(router_for(small, large), ["q"], 0.25, max_concurrency=0)


def test_no_h_init_observed(servers: Any) -> None:
    """A chain that ends at once ("</think>" first) records no step, so nothing to calibrate."""
    small, large = _pair(servers, [0.3], steps=[])
    with pytest.raises(InvalidArgumentError, match="no H_init was observed over 2 question"):
        calibrate(router_for(small, large), ["q1", "q2"], 0.25)


def test_rounded_threshold_keeps_the_realised_rate(servers: Any) -> None:
    small, large = _pair(servers, H8)
    found = calibrate(router_for(small, large), ["q"], 0.25)
    rounded = found.rounded_threshold()
    assert rounded >= found.threshold
    assert rounded == pytest.approx(0.6, abs=1e-4)
    assert len(repr(rounded)) <= len("0.6001")
    assert found.rate_at(rounded) == found.realised_rate
    close = found.__class__(**{**found.__dict__, "values": (0.1, 0.6, 0.60001), "threshold": 0.6})
    assert close.rounded_threshold() == 0.6  # 0.6001 would keep 0.60001 small: left exact


# -- glimprouter calibrate ------------------------------------------------------------------------


def test_cli_prints_threshold_and_router(servers: Any) -> None:
    small, large = _pair(servers, H8)
    out = io.StringIO()
    code = cli.main(["calibrate", *_cli_args(small, large), "--target-rate", "0.25",
                     "--concurrency", "3"], out=out)  # fmt: skip
    assert code == 0
    text = out.getvalue()
    n = len(CALIBRATION_QUESTIONS)
    assert f"Sample: {n} questions, {8 * n} step starts" in text
    assert "Threshold for a large-step rate of 25%: 0.6" in text
    assert f"realised on the sample: 25.0% ({2 * n} of {8 * n} step starts above it)" in text
    assert "H_init quantiles (nats): 10% 0.100  25% 0.200  50% 0.400  75% 0.600  90% 0.800" in text
    assert "bootstrap 95% interval over the questions: 0.600–0.600 nats" in text
    assert f'small=Backend(base_url="{small.base_url}", model="small-m")' in text
    threshold = float(text.split("    threshold=")[1].split(",")[0])
    assert threshold == pytest.approx(0.6, abs=1e-4)
    # the built-in questions were routed, every one small only
    assert len(large.requests) == n
    assert any(CALIBRATION_QUESTIONS[0] in r.prompt for r in small.requests)


def test_cli_json(servers: Any, tmp_path: Path) -> None:
    small, large = _pair(servers, H8)
    questions = tmp_path / "questions.jsonl"
    questions.write_text('{"question": "first"}\n\n{"question": "second", "id": 2}\n')
    out = io.StringIO()
    argv = ["calibrate", *_cli_args(small, large), "--target-rate", "0.5", "--json",
            "--questions", str(questions), "--system", "Think."]  # fmt: skip
    assert cli.main(argv, out=out) == 0
    found = json.loads(out.getvalue())
    assert found["threshold"] == pytest.approx(0.4)
    assert found["realised_rate"] == 0.5
    assert (found["n_questions"], found["n_steps"], found["target_rate"]) == (2, 16, 0.5)
    assert list(found["quantiles"]) == ["10%", "25%", "50%", "75%", "90%"]
    assert found["threshold_ci"] == pytest.approx([0.4, 0.4])
    assert len(large.requests) == 2
    assert all("Think." in r.prompt for r in small.requests)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--target-rate", "1"], "between 0 and 1"),
        (["--target-rate", "0.25", "--questions", "/nonexistent/q.txt"], "cannot read"),
        (["--target-rate", "0.25", "--concurrency", "0"], "max_concurrency"),
    ],
)
def test_cli_errors_exit_2(
    servers: Any, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    small, large = _pair(servers, H8)
    assert cli.main(["calibrate", *_cli_args(small, large), *argv], out=io.StringIO()) == 2
    assert message in capsys.readouterr().err


def test_cli_no_h_init_exits_2(servers: Any, capsys: pytest.CaptureFixture[str]) -> None:
    small, large = _pair(servers, [0.3], steps=[])
    argv = ["calibrate", *_cli_args(small, large), "--target-rate", "0.25"]
    assert cli.main(argv, out=io.StringIO()) == 2
    assert "no H_init was observed" in capsys.readouterr().err


# -- questions files ------------------------------------------------------------------------------


def test_load_questions_plain_and_jsonl(tmp_path: Path) -> None:
    plain = tmp_path / "plain.txt"
    plain.write_text("What is 2 + 2?\n\n  How many legs has a spider?  \n")
    assert load_questions(plain) == ["What is 2 + 2?", "How many legs has a spider?"]
    jsonl = tmp_path / "q.jsonl"
    jsonl.write_text('{"question": "a {braced} one", "answer": 1}\n{"question": " b "}\n')
    assert load_questions(jsonl) == ["a {braced} one", "b"]
    mixed = tmp_path / "mixed.txt"
    mixed.write_text('plain question\n{"question": "json question"}\n')
    assert load_questions(mixed) == ["plain question", "json question"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"question": "ok"}\n{not json\n', r"q.txt:2: a line starting with '\{' must be a JSON"),
        ('{"prompt": "no question key"}\n', 'q.txt:1: the JSON object has no string "question"'),
        ('{"question": 3}\n', 'no string "question"'),
        ("\n  \n", "holds no question"),
    ],
)
def test_load_questions_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "q.txt"
    path.write_text(text)
    with pytest.raises(InvalidArgumentError, match=message):
        load_questions(path)


def test_builtin_questions() -> None:
    assert len(CALIBRATION_QUESTIONS) >= 10
    assert len(set(CALIBRATION_QUESTIONS)) == len(CALIBRATION_QUESTIONS)


# -- the demo's warm-up uses calibrate() ----------------------------------------------------------


def test_demo_calibrates_on_the_warm_up_question(
    servers: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    small, large = servers(Script(steps=SMALL_STEPS, h_init=[0.5, 1.5, 1.0, 2.0, 0.0]))

    def scripted_pair() -> list[Any]:
        return [SimpleNamespace(base_url=s.base_url, served_name=n, stop=lambda: None)
                for s, n in ((small, "small-m"), (large, "large-m"))]  # fmt: skip

    monkeypatch.setattr("langchain_glimprouter.cli.servers.start_pair", scripted_pair)
    out = io.StringIO()
    assert cli.main(["demo"], out=out) == 0
    text = out.getvalue()
    # 70% quantile of [0.5, 1.0, 1.5, 2.0]: 1.5 (one of four above it)
    assert (
        "quantile of SmolLM2's own first-token entropies on a warm-up question (4 steps, " in text
    )
    assert "median 1.00 nats) = 1.500 nats." in text
    assert "at the paper's 0.9 nats, 75% of these steps would go to the large model" in text
    assert "Summary: 4 steps, 1 by the large model" in text
