"""glimprouter bench: results lines, grading, errors, resume, summary, sweep, plots, analyze."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field, PrivateAttr

from langchain_glimprouter import BackendUnreachableError, InvalidArgumentError
from langchain_glimprouter.cli import main as cli
from langchain_glimprouter.cli.bench import command
from langchain_glimprouter.cli.bench import plots as P
from langchain_glimprouter.cli.bench import runner as B
from langchain_glimprouter.cli.bench import summary as S
from langchain_glimprouter.cli.bench.grading import BenchItem
from langchain_glimprouter.records import RoutingRecord, StepRecord
from scripted_server import ScriptedServer
from tests.support.pair import router_for

PNG = b"\x89PNG\r\n\x1a\n"

# The scripted large server answers "The answer is \boxed{42}." to every question.
ITEMS = [
    BenchItem(question="What is 6 * 7?", answer="42", id="a"),
    BenchItem(question="What is 40 + 2?", answer="42.0", id="b"),
    BenchItem(question="What is 3 + 4?", answer="7", id="c"),
    BenchItem(question="Which is 42?", answer="B", choices=("41", "42", "43"), id="d"),
]


def boxed_pair(servers: Any) -> tuple[ScriptedServer, ScriptedServer]:
    from scripted_server import Script
    from tests.support.pair import H_INIT, LARGE_STEPS, SMALL_STEPS

    pair: tuple[ScriptedServer, ScriptedServer] = servers(
        Script(steps=SMALL_STEPS, h_init=H_INIT),
        Script(steps=LARGE_STEPS, answer="So the answer is \\boxed{42}."),
    )
    return pair


def write_items(path: Path, items: list[BenchItem]) -> Path:
    with path.open("w") as f:
        for item in items:
            obj: dict[str, Any] = {"id": item.id, "question": item.question, "answer": item.answer}
            if item.choices:
                obj["choices"] = list(item.choices)
            f.write(json.dumps(obj) + "\n")
    return path


def lines_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# -- a fake router: scripted answers and routing records, no servers ------------------------------


def record(steps: list[tuple[str, float | None, float | None, int]], **extra: Any) -> RoutingRecord:
    """A routing record with ``steps`` of (model, h_init, score, tokens)."""
    kept = [
        StepRecord(
            index=i,
            model=m,
            h_init=h,
            first_token="x",
            residual_mass=0.0,
            tokens=t,
            text=f"step {i}",
            latency_s=0.01,
            score=s,
        )
        for i, (m, h, s, t) in enumerate(steps)
    ]
    large = sum(s.model == "large" for s in kept)
    fields: dict[str, Any] = {
        "threshold": 1.0, "estimator": "topk_renormalized", "probe": "stream",
        "n_steps": len(kept), "n_large_steps": large,
        "intervention_rate": large / len(kept) if kept else 0.0,
        "tokens": {"small": sum(s.tokens for s in kept if s.model == "small") + large,
                   "large": sum(s.tokens for s in kept if s.model == "large") + 3},
        "requests": {"small": len(kept), "large": large + 1},
        "wasted_small_tokens": large, "reasoning_tokens": sum(s.tokens for s in kept),
        "answer_tokens": 3, "chain_end": "think_end", "steps": kept,
    }  # fmt: skip
    fields.update(extra)
    return RoutingRecord(**fields)


class FakeRouter(BaseChatModel):
    """Answers each question (matched by a substring) with a scripted text and record."""

    answers: dict[str, str] = Field(default_factory=dict)
    fail: set[str] = Field(default_factory=set)
    block: set[str] = Field(default_factory=set)
    steps: list[tuple[str, float | None, float | None, int]] = Field(
        default_factory=lambda: [("small", 0.2, None, 5)]
    )
    _calls: list[str] = PrivateAttr(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "fake-router"

    def _answer(self, messages: list[BaseMessage]) -> ChatResult:
        question = str(messages[-1].content)
        self._calls.append(question)
        for key in self.fail:
            if key in question:
                raise BackendUnreachableError("refused", role="small", url="http://x/v1")
        text = next((v for k, v in self.answers.items() if k in question), "no idea")
        meta = {"glimprouter": record(self.steps).model_dump()}
        return ChatResult(
            generations=[ChatGeneration(message=AIMessage(content=text, response_metadata=meta))]
        )

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:  # fmt: skip
        return self._answer(messages)

    async def _agenerate(self, messages: list[BaseMessage], stop: Any = None,
                         run_manager: Any = None, **kwargs: Any) -> ChatResult:  # fmt: skip
        if any(key in str(messages[-1].content) for key in self.block):
            await asyncio.Event().wait()  # until cancelled
        await asyncio.sleep(0.001)
        return self._answer(messages)


def fake(**kwargs: Any) -> FakeRouter:
    kwargs.setdefault("answers", {"6 * 7": "\\boxed{42}", "40 + 2": "\\boxed{42}",
                                  "3 + 4": "The answer is 8.", "Which": "\\boxed{B}"})  # fmt: skip
    return FakeRouter(**kwargs)


# -- lines and grading ----------------------------------------------------------------------------


def test_lines_with_real_router_and_grading(servers: Any, tmp_path: Path) -> None:
    small, large = boxed_pair(servers)
    out = tmp_path / "run.jsonl"
    lines = B.run(ITEMS, router_for(small, large), out, concurrency=2)
    assert [line["id"] for line in lines] == ["a", "b", "c", "d"]
    header, *written = lines_of(out)
    assert header["config"]["threshold"] == 1.0
    assert header["config"]["small_model"] == "small-m"
    assert header["config"]["large_model"] == "large-m"
    assert header["config"]["strategy"] == "glimpse"
    assert sorted(w["id"] for w in written) == ["a", "b", "c", "d"]
    by_id = {line["id"]: line for line in written}
    assert [by_id[i]["correct"] for i in "abcd"] == [True, True, False, True]
    assert by_id["a"]["predicted"] == "42"
    assert by_id["c"]["predicted"] == "42"
    assert by_id["d"]["predicted"] == "B"  # the boxed option text, mapped to its letter
    line = by_id["a"]
    assert line["expected"] == "42"
    assert line["response"] == "So the answer is \\boxed{42}."
    assert line["strategy"] == "glimpse"
    assert line["threshold"] == 1.0
    # H_INIT = 0.2, 1.5, 0.1, 2.0 at threshold 1.0: steps 1 and 3 go large.
    assert line["n_steps"] == 4
    assert line["n_large_steps"] == 2
    assert line["intervention_rate"] == 0.5
    assert [s["model"] for s in line["steps"]] == ["small", "large", "small", "large"]
    assert [s["h_init"] for s in line["steps"]] == pytest.approx([0.2, 1.5, 0.1, 2.0])
    assert set(line["steps"][0]) == {"model", "h_init", "score", "tokens", "latency_s", "skipped",
                                     "decision", "escalation_requests", "escalation_s"}  # fmt: skip
    assert line["chain_end"] == "think_end"
    assert line["wasted_small_tokens"] >= 2
    assert line["latency_s"] > 0
    assert "error" not in line
    # The lines' requests add up to what the servers saw.
    assert sum(w["requests"]["small"] for w in written) == len(small.requests)
    assert sum(w["requests"]["large"] for w in written) == len(large.requests)
    assert "step by step" in small.requests[0].prompt  # the instruction was appended


def test_item_messages() -> None:
    plain = B.item_messages(ITEMS[0], system="Be brief.")
    assert plain[0].content == "Be brief."
    assert plain[1].content == f"What is 6 * 7?\n\n{B.INSTRUCTION}"
    choice = B.item_messages(ITEMS[3])
    assert choice[0].content == f"Which is 42?\n\n(A) 41\n(B) 42\n(C) 43\n\n{B.CHOICE_INSTRUCTION}"
    boxed = BenchItem(question="What is 1 + 1? Put it in \\boxed{}.", answer="2", id="x")
    assert B.item_messages(boxed)[0].content == boxed.question


def test_error_line_and_the_run_goes_on(tmp_path: Path) -> None:
    out = tmp_path / "run.jsonl"
    lines = B.run(ITEMS, fake(fail={"40 + 2"}), out, concurrency=4)
    by_id = {line["id"]: line for line in lines}
    assert by_id["b"]["error"] == (
        "BackendUnreachableError: [small backend at http://x/v1] refused"
    )
    assert by_id["b"]["correct"] is False
    assert by_id["b"]["n_steps"] is None
    assert by_id["b"]["steps"] == []
    assert by_id["a"]["correct"] is True
    assert by_id["d"]["correct"] is True
    assert by_id["d"]["strategy"] == "glimpse"
    assert len(lines_of(out)) == 5
    summary = S.summarize(lines)
    assert (summary.n, summary.errors, summary.correct) == (4, 1, 2)
    assert summary.accuracy == 0.5


def test_other_exceptions_abort(tmp_path: Path) -> None:
    class Broken(FakeRouter):
        def _answer(self, messages: list[BaseMessage]) -> ChatResult:
            raise KeyError("a bug")

    with pytest.raises(KeyError):
        B.run(ITEMS, Broken(), tmp_path / "run.jsonl")


def test_factory_and_bad_arguments(tmp_path: Path) -> None:
    lines = B.run(ITEMS[:1], lambda: fake(), tmp_path / "f.jsonl")
    assert lines[0]["correct"] is True
    with pytest.raises(InvalidArgumentError, match="concurrency"):
        B.run(ITEMS, fake(), tmp_path / "g.jsonl", concurrency=0)
    with pytest.raises(InvalidArgumentError, match="no questions"):
        B.run([], fake(), tmp_path / "g.jsonl")
    with pytest.raises(InvalidArgumentError, match="two questions have the id 'a'"):
        B.run([ITEMS[0], ITEMS[0]], fake(), tmp_path / "g.jsonl")


# -- resume ---------------------------------------------------------------------------------------


def test_resume_skips_done_ids_and_reruns_failed_ones(tmp_path: Path) -> None:
    out = tmp_path / "run.jsonl"
    first = fake(fail={"40 + 2"})
    B.run(ITEMS[:3], first, out)
    assert len(first._calls) == 3
    with pytest.raises(InvalidArgumentError, match="exists: pass --resume"):
        B.run(ITEMS, fake(), out)
    second = fake()
    lines = B.run(ITEMS, second, out, resume=True)
    # a and c were done; b had failed and runs again; d is new.
    assert sorted(second._calls) == sorted(
        m for m in (str(B.item_messages(i)[-1].content) for i in ITEMS[1:]) if "3 + 4" not in m
    )
    assert [line["id"] for line in lines] == ["a", "b", "c", "d"]
    assert all("error" not in line for line in lines)
    header, *written = lines_of(out)
    assert "config" in header
    assert sorted(w["id"] for w in written) == ["a", "b", "c", "d"]  # one line per id
    again = fake()
    B.run(ITEMS, again, out, resume=True)
    assert again._calls == []


def test_resume_refuses_changed_settings(servers: Any, tmp_path: Path) -> None:
    small, large = boxed_pair(servers)
    out = tmp_path / "run.jsonl"
    B.run(ITEMS[:2], router_for(small, large, max_tokens=64), out)
    with pytest.raises(InvalidArgumentError, match=r"other settings \(threshold: 1.0 in the file"):
        B.run(ITEMS, router_for(small, large, threshold=0.5, max_tokens=64), out, resume=True)
    with pytest.raises(InvalidArgumentError, match="max_tokens: 64 in the file, 2048 now"):
        B.run(ITEMS, router_for(small, large), out, resume=True)
    with pytest.raises(InvalidArgumentError, match="system"):
        B.run(ITEMS, router_for(small, large, max_tokens=64), out, resume=True, system="Hi.")
    # Other server URLs (a restarted local pair) are fine.
    small2, large2 = boxed_pair(servers)
    lines = B.run(ITEMS, router_for(small2, large2, max_tokens=64), out, resume=True)
    assert len(lines) == 4
    assert len(small.requests) == 2 * 5  # the first two questions only
    changed = [BenchItem(question="Something else", answer="1", id="a")]
    with pytest.raises(InvalidArgumentError, match="is not the data's question"):
        B.run(changed, router_for(small2, large2, max_tokens=64), out, resume=True)


def test_cancel_keeps_written_lines(tmp_path: Path) -> None:
    out = tmp_path / "run.jsonl"

    async def main() -> None:
        task = asyncio.ensure_future(B.arun(ITEMS, fake(block={"3 + 4"}), out, concurrency=1))
        for _ in range(500):
            await asyncio.sleep(0.01)
            if len(out.read_text().splitlines()) == 3:
                break
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    _, lines = B.read_results(out)
    assert [line["id"] for line in lines] == ["a", "b"]
    resumed = fake()
    assert len(B.run(ITEMS, resumed, out, resume=True)) == 4
    assert len(resumed._calls) == 2


def test_read_results_skips_a_cut_line(tmp_path: Path) -> None:
    out = tmp_path / "run.jsonl"
    B.run(ITEMS[:2], fake(), out)
    with out.open("a") as f:
        f.write('{"id": "c", "quest')
    config, lines = B.read_results(out)
    assert config["chat_model"] == "FakeRouter"
    assert [line["id"] for line in lines] == ["a", "b"]
    again = fake()
    B.run(ITEMS[:3], again, out, resume=True)
    assert len(again._calls) == 1
    assert all(json.loads(line) for line in out.read_text().splitlines())


# -- progress -------------------------------------------------------------------------------------


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_one_line_per_tenth_off_a_terminal(tmp_path: Path) -> None:
    items = [BenchItem(question=f"What is 6 * 7? ({i})", answer="42", id=str(i)) for i in range(20)]
    stream = io.StringIO()
    B.run(items, fake(), tmp_path / "run.jsonl", progress=stream)
    printed = stream.getvalue().splitlines()
    assert len(printed) == 10
    assert printed[0].startswith("[glimpse] 2/20 (10%)  accuracy 100.0%  errors 0  ETA ")
    assert printed[-1].startswith("[glimpse] 20/20 (100%)")
    assert "done in" in printed[-1]
    tty = Tty()
    B.run(items[:3], fake(), tmp_path / "tty.jsonl", progress=tty)
    assert tty.getvalue().count("\r") == 3
    assert tty.getvalue().endswith("\n")


# -- summary --------------------------------------------------------------------------------------


def hand_line(i: int, correct: bool, latency: float, steps: int, large: int, **kw: Any) -> Any:
    return {
        "id": str(i), "correct": correct, "latency_s": latency, "strategy": "glimpse",
        "threshold": 0.9, "n_steps": steps, "n_large_steps": large,
        "intervention_rate": large / steps if steps else 0.0,
        "tokens": {"small": 10 * i, "large": 20 * i},
        "requests": {"small": steps, "large": large + 1},
        "wasted_small_tokens": large,
    } | kw  # fmt: skip


def test_summary_numbers() -> None:
    lines = [
        hand_line(1, True, 1.0, 4, 1),
        hand_line(2, False, 2.0, 2, 2),
        hand_line(3, True, 6.0, 4, 0),
        {"id": "4", "correct": False, "latency_s": 30.0, "error": "BackendTimeoutError: slow",
         "strategy": "glimpse", "threshold": 0.9, "tokens": None, "requests": None},
    ]  # fmt: skip
    s = S.summarize(lines)
    assert (s.strategy, s.threshold, s.n, s.errors, s.correct) == ("glimpse", 0.9, 4, 1, 2)
    assert s.accuracy == 0.5
    assert s.latency_mean_s == pytest.approx(3.0)  # the failed call's 30 s left out
    assert s.latency_median_s == 2.0
    assert s.intervention_rate == pytest.approx(3 / 10)  # step-weighted
    assert s.intervention_rate_mean == pytest.approx((0.25 + 1.0 + 0.0) / 3)
    assert s.tokens == {"small": 60, "large": 120}
    assert s.requests == {"small": 10, "large": 6}
    assert s.tokens_per_question == {"small": 20.0, "large": 40.0}
    assert s.requests_per_question == pytest.approx({"small": 10 / 3, "large": 2.0})
    assert s.wasted_small_tokens == 3
    table = s.table()
    assert "glimpse, threshold 0.9: 4 questions, 1 failed" in table
    assert "accuracy             50.0% (2 of 4)" in table
    assert "mean 3.00 s   median 2.00 s" in table
    assert "30.0% of steps" in table
    assert "41.7%" in table
    assert "60" in table
    assert "120" in table
    row = s.row()
    assert list(row) == list(S.SWEEP_FIELDS)
    assert row["tokens_small"] == 60
    assert row["requests_large"] == 6


def test_summary_of_no_routing_record_and_of_all_failed() -> None:
    plain = S.summarize([{"id": "1", "correct": True, "latency_s": 1.0, "n_steps": None}], "x")
    assert plain.intervention_rate is None
    assert plain.tokens == {"small": 0, "large": 0}
    failed = S.summarize([{"id": "1", "correct": False, "error": "E: x", "latency_s": 1.0}])
    assert failed.latency_mean_s is None
    assert failed.tokens_per_question == {"small": 0.0, "large": 0.0}
    assert "mean -   median -" in failed.table()


# -- sweep ----------------------------------------------------------------------------------------


def test_sweep_csv_and_plots(servers: Any, tmp_path: Path) -> None:
    small, large = boxed_pair(servers)
    report = io.StringIO()
    summaries = asyncio.run(
        B.asweep(
            ITEMS[:2],
            lambda tau: router_for(small, large, threshold=tau),
            [0.0, 1.0, math.inf],
            tmp_path,
            baselines={
                "large_only": router_for(small, large, threshold=0.0),
                "small_only": lambda: router_for(small, large, threshold=math.inf),
            },
            report=report,
        )
    )
    assert [s.strategy for s in summaries] == ["glimpse"] * 3 + ["large_only", "small_only"]
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["glimpse_0.jsonl", "glimpse_1.jsonl", "glimpse_inf.jsonl",
                     "large_only.jsonl", "small_only.jsonl", "sweep.csv"]  # fmt: skip
    plots = P.write_sweep_plots(summaries, tmp_path)
    assert plots == [tmp_path / "pareto.png", tmp_path / "intervention.png"]
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["glimpse_0.jsonl", "glimpse_1.jsonl", "glimpse_inf.jsonl",
                     "intervention.png", "large_only.jsonl", "pareto.png", "small_only.jsonl",
                     "sweep.csv"]  # fmt: skip
    rows = S.read_sweep_csv(tmp_path / "sweep.csv")
    assert list(rows[0]) == list(S.SWEEP_FIELDS)
    assert [(r["threshold"], r["strategy"]) for r in rows] == [
        ("0.0", "glimpse"), ("1.0", "glimpse"), ("inf", "glimpse"),
        ("", "large_only"), ("", "small_only"),
    ]  # fmt: skip
    assert [r["intervention_rate"] for r in rows[:3]] == ["1.0", "0.5", "0.0"]
    assert rows[0]["tokens_small"] == "0"
    assert rows[0]["requests_small"] == "0"
    assert int(rows[1]["requests_large"]) == 2 * 3
    assert rows[1]["n"] == "2"
    assert float(rows[1]["accuracy"]) == 1.0
    assert float(rows[1]["latency_mean_s"]) > 0
    for name in ("pareto.png", "intervention.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG
    assert report.getvalue().count("\n") == 5
    assert "glimpse_1.jsonl: accuracy 100.0%" in report.getvalue()


def test_without_matplotlib_the_csv_is_still_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    assert not P.have_matplotlib()
    summary = S.summarize([hand_line(1, True, 1.0, 2, 1)])
    assert P.write_sweep_plots([summary], tmp_path) == []
    S.write_sweep_csv([summary], tmp_path / "sweep.csv")
    assert len(S.read_sweep_csv(tmp_path / "sweep.csv")) == 1
    assert not (tmp_path / "pareto.png").exists()


def test_run_name() -> None:
    assert B.run_name("glimpse", 0.9) == "glimpse_0.9.jsonl"
    assert B.run_name("glimpse", 0.0) == "glimpse_0.jsonl"
    assert B.run_name("glimpse", math.inf) == "glimpse_inf.jsonl"
    assert B.run_name("glimpse", "auto") == "glimpse_auto.jsonl"
    assert B.run_name("large_only", 0.9) == "large_only.jsonl"
    assert B.jsonable({"t": math.inf, "x": (1, 2)}) == {"t": "inf", "x": [1, 2]}


# -- analyze --------------------------------------------------------------------------------------


def write_recorded(path: Path, strategy: str, steps: list[list[tuple[float | None, Any]]]) -> Path:
    """A hand-written results file: each question a list of (h_init, score) steps."""
    with path.open("w") as f:
        f.write(json.dumps({"config": {"strategy": strategy}}) + "\n")
        for i, question in enumerate(steps):
            line = {"id": str(i), "strategy": strategy, "correct": True, "steps": [
                {"model": "small", "h_init": h, "score": s, "tokens": 3, "latency_s": 0.1}
                for h, s in question]}  # fmt: skip
            f.write(json.dumps(line) + "\n")
    return path


def test_analyze(tmp_path: Path) -> None:
    entropy = write_recorded(tmp_path / "step_entropy_0.5.jsonl", "step_entropy",
                             [[(0.01, 0.5), (2.0, 0.6)], [(0.02, 0.55), (None, 0.45)]])  # fmt: skip
    glimpse = write_recorded(
        tmp_path / "glimpse_0.9.jsonl", "glimpse", [[(0.03, 9.0), (1.9, None)]]
    )  # a glimpse run's score is not counted
    found = P.analyze([entropy, glimpse])
    assert sorted(found.h_init) == [0.01, 0.02, 0.03, 1.9, 2.0]
    assert sorted(found.step_entropy) == [0.45, 0.5, 0.55, 0.6]
    assert found.questions == 3
    text = found.text()
    assert "5 with H_init, 4 with a mean step entropy" in text
    assert "H_init (first token)   n=5  mean 0.792" in text
    assert "50% 0.030" in text  # the median of the H_init values
    assert "mean step entropy      n=4  mean 0.525" in text
    edges = found.edges(12)
    assert edges[0] == 0.01
    assert edges[-1] == 2.0
    counts = [line.split()[-2:] for line in text.splitlines() if " - " in line]
    assert sum(int(c[0]) for c in counts) == 5
    assert sum(int(c[1]) for c in counts) == 4
    png = found.plot(tmp_path / "plots")
    assert png == tmp_path / "plots" / "h_init_hist.png"
    assert png.read_bytes()[:8] == PNG


def test_analyze_without_step_entropy_and_without_steps(tmp_path: Path) -> None:
    glimpse = write_recorded(tmp_path / "g.jsonl", "glimpse", [[(0.1, None)]])
    assert "no step_entropy run among the files" in P.analyze([glimpse]).text()
    empty = write_recorded(tmp_path / "e.jsonl", "glimpse", [[]])
    with pytest.raises(InvalidArgumentError, match="no step with an H_init"):
        P.analyze([empty])
    with pytest.raises(InvalidArgumentError, match="cannot read the results file"):
        P.analyze([tmp_path / "missing.jsonl"])


# -- the command line -----------------------------------------------------------------------------


def server_args(small: ScriptedServer, large: ScriptedServer) -> list[str]:
    return ["--small-url", small.base_url, "--small-model", "small-m",
            "--large-url", large.base_url, "--large-model", "large-m"]  # fmt: skip


def test_cli_bench_end_to_end(
    servers: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    small, large = boxed_pair(servers)
    data = write_items(tmp_path / "items.jsonl", ITEMS)
    folder = tmp_path / "out"
    args = ["bench", *server_args(small, large), "--data", str(data), "--out", str(folder),
            "--threshold", "1.0", "--concurrency", "2", "--max-reasoning-tokens", "64"]  # fmt: skip
    out = io.StringIO()
    assert cli.main(args, out=out) == 0
    text = out.getvalue()
    path = folder / "glimpse_1.jsonl"
    assert f"Results: {path}" in text
    assert "Bench: glimpse, threshold 1.0: 4 questions, 0 failed" in text
    assert "accuracy             75.0% (3 of 4)" in text
    err = capsys.readouterr().err
    assert "[glimpse 1.0] 4/4 (100%)  accuracy 75.0%" in err
    header, *written = lines_of(path)
    assert header["config"]["max_reasoning_tokens"] == 64
    assert header["config"]["data"] == str(data)
    assert len(written) == 4
    n_requests = len(small.requests) + len(large.requests)
    # Again: refused without --resume; with it, nothing left to do.
    assert cli.main(args, out=io.StringIO()) == 2
    assert "exists: pass --resume" in capsys.readouterr().err
    assert cli.main([*args, "--resume"], out=io.StringIO()) == 0
    assert len(small.requests) + len(large.requests) == n_requests
    assert cli.main([*args[:-2], "--max-reasoning-tokens", "32", "--resume"], out=out) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot resume")
    assert "max_reasoning_tokens: 64 in the file, 32 now" in err
    assert err.count("\n") == 1


def test_cli_bench_sweep_with_baselines(
    servers: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    small, large = boxed_pair(servers)
    data = write_items(tmp_path / "items.jsonl", ITEMS[:2])
    folder = tmp_path / "sweep"
    out = io.StringIO()
    code = cli.main(["bench", *server_args(small, large), "--data", str(data), "--out",
                     str(folder), "--sweep", "0,1.0", "--baselines"], out=out)  # fmt: skip
    assert code == 0, capsys.readouterr().err
    rows = S.read_sweep_csv(folder / "sweep.csv")
    assert [(r["threshold"], r["strategy"]) for r in rows] == [
        ("0.0", "glimpse"), ("1.0", "glimpse"), ("", "large_only"), ("", "small_only")
    ]  # fmt: skip
    large_only = {r["strategy"]: r for r in rows}["large_only"]
    assert large_only["requests_small"] == "0"
    assert large_only["intervention_rate"] == "1.0"
    small_only = {r["strategy"]: r for r in rows}["small_only"]
    assert small_only["intervention_rate"] == "0.0"
    for name in ("pareto.png", "intervention.png"):
        assert (folder / name).read_bytes()[:8] == PNG
    text = out.getvalue()
    assert "strategy     threshold" in text
    assert f"Wrote {folder / 'pareto.png'}" in text


def test_cli_bench_strategy_and_target_rate(servers: Any, tmp_path: Path) -> None:
    small, large = boxed_pair(servers)
    data = write_items(tmp_path / "items.jsonl", ITEMS[:2])
    folder = tmp_path / "random"
    code = cli.main(["bench", *server_args(small, large), "--data", str(data), "--out",
                     str(folder), "--strategy", "random", "--target-rate", "0.5", "--seed", "3"],
                    out=io.StringIO())  # fmt: skip
    assert code == 0
    [path] = folder.iterdir()
    header, *written = lines_of(path)
    assert header["config"]["strategy"] == "random"
    assert header["config"]["target_rate"] == 0.5
    assert all(line["strategy"] == "random" for line in written)


def test_cli_bench_without_matplotlib(
    servers: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    small, large = boxed_pair(servers)
    data = write_items(tmp_path / "items.jsonl", ITEMS[:1])
    out = io.StringIO()
    code = cli.main(["bench", *server_args(small, large), "--data", str(data), "--out",
                     str(tmp_path / "s"), "--sweep", "1.0"], out=out)  # fmt: skip
    assert code == 0
    assert (tmp_path / "s" / "sweep.csv").exists()
    assert not (tmp_path / "s" / "pareto.png").exists()
    assert 'pip install "langchain-glimprouter[bench]"' in out.getvalue()


def test_cli_bench_analyze(tmp_path: Path) -> None:
    path = write_recorded(tmp_path / "r.jsonl", "step_entropy", [[(0.1, 0.4), (1.5, 0.5)]])
    out = io.StringIO()
    assert cli.main(["bench", "--analyze", str(path), "--out", str(tmp_path / "a")], out=out) == 0
    assert "2 with H_init, 2 with a mean step entropy" in out.getvalue()
    assert (tmp_path / "a" / "h_init_hist.png").read_bytes()[:8] == PNG


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "give --small-url, --small-model, --large-url and --large-model, or --local"),
        (["--local", "--small-url", "http://x/v1"], "--local starts its own two servers"),
        (["--local", "--limit", "0"], "--limit must be at least 1"),
        (["--local", "--concurrency", "0"], "--concurrency must be at least 1"),
        (["--local", "--threshold", "1", "--sweep", "0,1"], "give --threshold or --sweep"),
        (["--local", "--threshold", "-1"], "threshold must be >= 0"),
        (["--local", "--data", "/nonexistent.jsonl"], "cannot read the bench file"),
        (["--local", "--threshold", "auto"], "target_rate"),
        (["--analyze", "/nonexistent.jsonl"], "cannot read the results file"),
    ],
)
def test_cli_bench_errors(
    extra: list[str], message: str, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    started: list[bool] = []
    monkeypatch.setattr(
        "langchain_glimprouter.cli.servers.start_pair", lambda: started.append(True)
    )
    assert cli.main(["bench", *extra], out=io.StringIO()) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert message in err
    assert err.count("\n") == 1
    assert started == []  # refused before any server starts


@pytest.mark.parametrize("flag", [["--sweep", "0,x"], ["--sweep", "-1"], ["--threshold", "lo"]])
def test_cli_bench_bad_values(flag: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["bench", "--local", *flag])
    assert exc.value.code == 2
    assert "error: argument" in capsys.readouterr().err


def test_cli_bench_local_starts_and_stops_the_pair(
    servers: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--local: servers.start_pair() (here the scripted pair), the tiny-model budgets, stop."""
    small, large = boxed_pair(servers)
    stopped: list[str] = []

    class Local:
        def __init__(self, server: ScriptedServer, name: str) -> None:
            self.base_url, self.served_name, self.process = server.base_url, name, None

        def stop(self) -> None:
            stopped.append(self.served_name)

        def kill_leftovers(self) -> None:
            pass

    pair = [Local(small, "small-m"), Local(large, "large-m")]
    monkeypatch.setattr("langchain_glimprouter.cli.servers.start_pair", lambda: pair)
    monkeypatch.setattr(command, "stop_all", lambda servers: [s.stop() for s in servers])
    data = write_items(tmp_path / "items.jsonl", ITEMS[:1])
    out = io.StringIO()
    code = cli.main(["bench", "--local", "--data", str(data), "--out", str(tmp_path / "l")],
                    out=out)  # fmt: skip
    assert code == 0
    assert "wiring demo" in out.getvalue()
    assert sorted(stopped) == ["large-m", "small-m"]
    header = lines_of(tmp_path / "l" / "glimpse_0.9.jsonl")[0]["config"]
    assert (header["max_reasoning_tokens"], header["max_tokens"]) == (256, 96)


def test_csv_module_reads_the_sweep(tmp_path: Path) -> None:
    """sweep.csv is plain CSV: the standard reader gets the numbers back."""
    summaries = [S.summarize([hand_line(1, True, 1.5, 2, 1)]),
                 S.summarize([hand_line(1, False, 0.5, 2, 0)], "large_only")]  # fmt: skip
    path = S.write_sweep_csv(summaries, tmp_path / "x" / "sweep.csv")
    with path.open() as f:
        rows = list(csv.reader(f))
    assert rows[0] == list(S.SWEEP_FIELDS)
    assert rows[1][:5] == ["0.9", "glimpse", "1", "0", "1.0"]
    assert rows[2][1] == "large_only"
