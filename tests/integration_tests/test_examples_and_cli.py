"""The examples and the command line, run against the real vLLM servers."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from langchain_glimprouter.cli import main as cli
from langchain_glimprouter.cli.servers import LocalServer

from .conftest import Pair
from .test_vllm_routing import QUESTION, SYSTEM

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def example_env(pair: Pair) -> dict[str, str]:
    return {
        **os.environ,
        "GLIMPROUTER_SMALL_URL": pair.small.base_url,
        "GLIMPROUTER_SMALL_MODEL": pair.small.model,
        "GLIMPROUTER_LARGE_URL": pair.large.base_url,
        "GLIMPROUTER_LARGE_MODEL": pair.large.model,
        "GLIMPROUTER_THRESHOLD": "1.5",
    }


def run_example(pair: Pair, name: str) -> subprocess.CompletedProcess[str]:
    """Run ``examples/<name>`` against the pair; it must exit 0."""
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        env=example_env(pair),
        cwd=EXAMPLES,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return done


@pytest.mark.parametrize(
    "name", ["quickstart.py", "router.py", "lcel.py", "streaming.py", "llama_index_chat.py"]
)
def test_example_runs(vllm_pair: Pair, name: str) -> None:
    done = run_example(vllm_pair, name)
    assert "answer" in done.stdout or "usage" in done.stdout


def test_ask_prints_steps_answer_and_summary(vllm_pair: Pair) -> None:
    out = io.StringIO()
    code = cli.main(
        [
            # this prompt's first token is never EOS (not in SmolLM2's top 1000): a step 0
            "ask", QUESTION, "--system", SYSTEM,
            "--small-url", vllm_pair.small.base_url, "--small-model", vllm_pair.small.model,
            "--large-url", vllm_pair.large.base_url, "--large-model", vllm_pair.large.model,
            "--threshold", "1.5", "--max-reasoning-tokens", "96", "--max-tokens", "24",
        ],
        out=out,
    )  # fmt: skip
    text = out.getvalue()
    assert code == 0
    assert "step  0" in text
    assert "H_init=" in text
    assert "Answer (large model):" in text
    assert "Summary:" in text
    assert "requests small=" in text


def test_demo_view_with_calibrated_threshold(
    vllm_pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo's flow on the session's servers (the real demo starts its own pair)."""

    def running_pair() -> list[LocalServer]:
        servers = []
        for backend in (vllm_pair.small, vllm_pair.large):
            server = LocalServer(backend.model, int(backend.base_url.rsplit(":", 1)[1][:-3]))
            servers.append(server)  # no process: stop() leaves the session's servers alone
        return servers

    monkeypatch.setattr("langchain_glimprouter.cli.servers.start_pair", running_pair)
    out = io.StringIO()
    assert cli.main(["demo", "--max-reasoning-tokens", "96", "--max-tokens", "24"], out=out) == 0
    text = out.getvalue()
    assert "wiring demo" in text
    assert "not a reasoning model" in text
    assert "quantile of SmolLM2's own first-token entropies" in text
    assert "at the paper's 0.9 nats" in text
    assert "Summary:" in text


def test_agent_example_calls_a_tool_and_answers(vllm_pair: Pair) -> None:
    """examples/agent.py: create_agent over the router, a forced first tool call, then free."""
    done = run_example(vllm_pair, "agent.py")
    lines = done.stdout.splitlines()
    calls = [line.split()[2] for line in lines if line.startswith("tool call: ")]
    invalid = [line for line in lines if line.startswith("invalid tool call: ")]
    assert any(line.startswith("model call (tool_choice=any)") for line in lines), done.stdout
    if not calls:  # the forced call never comes back empty: the tiny model's miss, explained
        assert invalid, done.stdout
        assert all("(tool_choice forced a tool call, but " in line for line in invalid)
    assert set(calls) <= {"calculator", "convert_length"}, done.stdout
    results = [line for line in lines if line.startswith("tool result: ")]
    for name in calls:  # every call got its tool's result, printed from the ToolMessage
        assert any(line.startswith(f"tool result: {name} -> ") for line in results), done.stdout
    if results:  # a tool answered: the model is free again
        assert any(line.startswith("model call (tool_choice=auto)") for line in lines)
    steps = [line for line in lines if line.strip().startswith("step ")]
    assert steps, done.stdout
    assert all(" by the small model" in s or " by the large model" in s for s in steps)
    assert any(line.startswith("answer: ") for line in lines), done.stdout
    assert "not reasoning" in done.stdout
