"""``glimprouter serve``: the server command lines and the vocabulary check (start and stop with
fake servers: loopback_tests/test_serve_processes.py)."""

from __future__ import annotations

import io
import json
import shlex
from pathlib import Path

import pytest

from langchain_glimprouter.cli import main as cli
from langchain_glimprouter.cli import serve
from langchain_glimprouter.cli.servers import (
    LocalServer,
    ServeError,
    vllm_command,
)
from langchain_glimprouter.cli.vocabulary import check_same_vocabulary

QWEN3, R1 = "Qwen/Qwen3-4B", "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B"


pytestmark = pytest.mark.usefixtures("glimprouter_home")


def plan(*argv: str) -> tuple[LocalServer, LocalServer, list[str]]:
    return serve.serve_pair(cli.parser().parse_args(["serve", *argv]))


def flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def fake_model(folder: Path, vocab: dict[str, int], special: dict[str, int]) -> str:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"vocab_size": len(vocab) + len(special)}))
    added = [{"id": i, "content": t, "special": True} for t, i in special.items()]
    tokenizer = {"model": {"type": "BPE", "vocab": vocab}, "added_tokens": added}
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer))
    return str(folder)


VOCAB = {"a": 0, "b": 1, "c": 2}
SPECIAL = {"<s>": 3, "</s>": 4}


def test_cpu_pair_commands(glimprouter_home: Path) -> None:
    small, large, warnings = plan("--cpu")
    assert warnings == []
    tiny = str(glimprouter_home / "smollm2-135m")
    for server, name, port, core in ((small, "smollm2-small", "8001", "0"),
                                     (large, "smollm2-large", "8002", "1")):  # fmt: skip
        command = server.command()
        assert command[:3] == [str(glimprouter_home / "vllm-venv/bin/python"), "-m",
                               "vllm.entrypoints.openai.api_server"]  # fmt: skip
        assert flag(command, "--model") == tiny
        assert flag(command, "--served-model-name") == name
        assert flag(command, "--port") == port
        assert flag(command, "--host") == "127.0.0.1"
        assert flag(command, "--max-model-len") == "4096"
        assert int(flag(command, "--max-logprobs")) >= 20
        assert "--enable-prefix-caching" in command
        assert not any(arg.startswith("--reasoning-parser") for arg in command)
        assert "--gpu-memory-utilization" not in command
        assert "--speculative-config" not in command
        assert server.environment() == {
            "VLLM_LOGGING_LEVEL": "WARNING",
            "VLLM_CPU_KVCACHE_SPACE": "1",
            "HF_HUB_OFFLINE": "1",
            "VLLM_CPU_OMP_THREADS_BIND": core,
        }
    assert small.base_url == "http://127.0.0.1:8001/v1"
    assert large.base_url == "http://127.0.0.1:8002/v1"


def test_gpu_pair_with_a_memory_split() -> None:
    small, large, _ = plan("--no-cpu", "--small", QWEN3, "--large", R1, "--python", "/opt/py",
                           "--gpu-memory-split", "0.25,0.65", "--top-logprobs", "32",
                           "--max-model-len", "16384", "--host", "0.0.0.0",
                           "--large-port", "9000")  # fmt: skip
    for server, model, share in ((small, QWEN3, "0.25"), (large, R1, "0.65")):
        command = server.command()
        assert command[0] == "/opt/py"
        assert flag(command, "--model") == model
        assert flag(command, "--served-model-name") == model
        assert flag(command, "--gpu-memory-utilization") == share
        assert flag(command, "--max-logprobs") == "32"
        assert flag(command, "--max-model-len") == "16384"
        assert flag(command, "--host") == "0.0.0.0"
        assert "--enable-prefix-caching" in command
        assert not any(arg.startswith("--reasoning-parser") for arg in command)
        assert server.environment() == {"VLLM_LOGGING_LEVEL": "WARNING"}  # no CPU variables
    assert large.base_url == "http://127.0.0.1:9000/v1"
    snippet = serve.serve_snippet(small, large, 32)
    assert f'model="{R1}"' in snippet
    assert "top_logprobs=32" in snippet


def test_served_names_and_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    small, large, _ = plan("--cpu", "--small-name", "s", "--large-name", "l")
    assert (small.served_name, large.served_name) == ("s", "l")
    with pytest.raises(ServeError, match="--gpu-memory-split is for GPUs"):
        plan("--cpu", "--gpu-memory-split", "0.25,0.65")
    with pytest.raises(ServeError, match="both 8001"):
        plan("--cpu", "--large-port", "8001")
    with pytest.raises(SystemExit):
        plan("--no-cpu", "--gpu-memory-split", "0.5,0.6")
    assert "at most 1" in capsys.readouterr().err
    with pytest.raises(ServeError, match="reasoning-parser"):
        vllm_command("python", "m", "m", 1, extra_args=["--reasoning-parser=deepseek_r1"])


def test_compact_json_fixes_the_structured_outputs_backend() -> None:
    small, large, _ = plan("--cpu", "--compact-json")
    for server in (small, large):
        config = json.loads(flag(server.command(), "--structured-outputs-config"))
        assert config == {"backend": "xgrammar", "disable_any_whitespace": True}
    small, _, _ = plan("--cpu")
    assert "--structured-outputs-config" not in small.command()  # vLLM's auto backend


def test_max_logprobs_above_top_logprobs_for_escalations() -> None:
    small, large, _ = plan("--cpu", "--max-logprobs", "1000")
    assert {flag(s.command(), "--max-logprobs") for s in (small, large)} == {"1000"}
    small, _, _ = plan("--cpu", "--top-logprobs", "32", "--max-logprobs", "8")
    assert flag(small.command(), "--max-logprobs") == "32"  # never below the glimpse's k


def test_the_demo_pair_command_is_unchanged(glimprouter_home: Path) -> None:
    server = LocalServer("smollm2-small", 8123, cpu=0)
    assert server.command() == [
        str(glimprouter_home / "vllm-venv/bin/python"), "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(glimprouter_home / "smollm2-135m"), "--served-model-name", "smollm2-small",
        "--host", "127.0.0.1", "--port", "8123", "--max-model-len", "4096",
        "--max-logprobs", "20", "--enable-prefix-caching",
    ]  # fmt: skip
    assert server.environment()["VLLM_CPU_OMP_THREADS_BIND"] == "0"
    assert server.base_url == "http://127.0.0.1:8123/v1"


def test_speculative_drafts_with_the_small_model_on_the_large_server(tmp_path: Path) -> None:
    draft = fake_model(tmp_path / "draft", VOCAB, SPECIAL)
    target = fake_model(tmp_path / "target", VOCAB, SPECIAL)
    small, large, warnings = plan("--no-cpu", "--small", draft, "--large", target,
                                  "--speculative", "--num-speculative-tokens", "5")  # fmt: skip
    assert warnings == []
    assert "--speculative-config" not in small.command()
    config = json.loads(flag(large.command(), "--speculative-config"))
    assert config == {"method": "draft_model", "model": draft, "num_speculative_tokens": 5}
    assert flag(large.command(), "--model") == target


def test_speculative_refuses_different_vocab_sizes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    draft = fake_model(tmp_path / "draft-model", VOCAB, SPECIAL)
    target = fake_model(tmp_path / "target-model", {**VOCAB, "d": 5}, SPECIAL)
    # Refused before anything starts: no vLLM Python at this path is ever looked for.
    code = cli.main(["serve", "--small", draft, "--large", target, "--speculative",
                     "--force-speculative", "--python", "/nonexistent/python"])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert draft in err
    assert target in err
    assert "vocab_size 5" in err
    assert "vocab_size 6" in err


def test_speculative_tokenizer_differences_and_hub_ids(tmp_path: Path) -> None:
    draft = fake_model(tmp_path / "draft", VOCAB, SPECIAL)
    other = fake_model(tmp_path / "other", VOCAB, {"<s>": 3, "<eos>": 4})
    with pytest.raises(ServeError, match="special tokens differ") as refused:
        check_same_vocabulary(draft, other)
    assert "'</s>'" in str(refused.value)
    assert "'<eos>'" in str(refused.value)
    assert check_same_vocabulary(draft, other, force=True)  # a warning, not an error
    with pytest.raises(ServeError, match=r"not local folders.*--force-speculative"):
        check_same_vocabulary(QWEN3, R1)
    _, large, warnings = plan("--no-cpu", "--small", QWEN3, "--large", R1, "--speculative",
                              "--force-speculative")  # fmt: skip
    assert "did not check" in warnings[0]
    assert json.loads(flag(large.command(), "--speculative-config"))["model"] == QWEN3


def test_dry_run_prints_both_commands_and_the_snippet() -> None:
    out = io.StringIO()
    assert cli.main(["serve", "--cpu", "--dry-run", "--small-port", "7001"], out=out) == 0
    text = out.getvalue()
    lines = [line for line in text.splitlines() if "vllm.entrypoints.openai.api_server" in line]
    assert len(lines) == 2
    assert "VLLM_CPU_OMP_THREADS_BIND=0" in lines[0]
    assert "--served-model-name smollm2-small" in lines[0]
    assert "--served-model-name smollm2-large" in lines[1]
    assert "GlimpRouterChatModel(" in text
    assert 'base_url="http://127.0.0.1:7001/v1"' in text
    assert 'base_url="http://127.0.0.1:8002/v1"' in text
    assert "--reasoning-parser" not in text
    # Each printed command line runs as printed in a shell (the JSON config stays one argument).
    out = io.StringIO()
    cli.main(["serve", "--cpu", "--dry-run", "--speculative"], out=out)
    large_line = [line for line in out.getvalue().splitlines() if "--speculative-config" in line]
    config = flag(shlex.split(large_line[0]), "--speculative-config")
    assert json.loads(config)["method"] == "draft_model"


# -- start and stop, with fake servers ----------------------------------------------------------
