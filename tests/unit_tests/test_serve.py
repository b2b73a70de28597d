"""``glimprouter serve``: the server command lines, the vocabulary check, and start/stop with
fake vLLM servers (a few lines of http.server behind ``--python``; no vLLM is started)."""

from __future__ import annotations

import io
import json
import os
import queue
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from langchain_glimprouter.cli import main as cli
from langchain_glimprouter.cli.servers import (
    LocalServer,
    ServeError,
    check_same_vocabulary,
    free_port,
    port_in_use,
    vllm_command,
)

QWEN3, R1 = "Qwen/Qwen3-4B", "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B"


@pytest.fixture(autouse=True)
def glimprouter_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home with a (fake) tiny model folder, so that the defaults are local folders."""
    home = tmp_path / "home"
    (home / "smollm2-135m").mkdir(parents=True)
    (home / "smollm2-135m" / "config.json").write_text('{"vocab_size": 49152}')
    monkeypatch.setenv("GLIMPROUTER_HOME", str(home))
    monkeypatch.delenv("GLIMPROUTER_VLLM_PYTHON", raising=False)
    monkeypatch.delenv("VLLM_LOGGING_LEVEL", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    return home


def plan(*argv: str) -> tuple[LocalServer, LocalServer, list[str]]:
    return cli.serve_pair(cli._parser().parse_args(["serve", *argv]))


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
    snippet = cli.serve_snippet(small, large, 32)
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

FAKE_VLLM = """
import argparse, http.server, os, threading, time
parser = argparse.ArgumentParser()
parser.add_argument("-m")
parser.add_argument("--host")
parser.add_argument("--port", type=int)
args, _ = parser.parse_known_args()
state = os.environ["FAKE_VLLM_DIR"]
with open(os.path.join(state, f"{args.port}.pid"), "w") as f:
    f.write(str(os.getpid()))
ready_at = time.monotonic() + float(os.environ.get("FAKE_VLLM_READY_AFTER", "0"))

class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ok = self.path == "/health" and time.monotonic() >= ready_at
        if ok:
            open(os.path.join(state, f"{args.port}.healthy"), "w").close()
        self.send_response(200 if ok else 503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *a):
        pass

def crash():
    print("fake engine crashed: CUDA out of memory", flush=True)
    os._exit(3)

if os.environ.get("FAKE_VLLM_CRASH_PORT") == str(args.port):
    threading.Timer(0.6, crash).start()
print("fake vLLM serving", args.port, flush=True)
http.server.HTTPServer((args.host, args.port), Health).serve_forever()
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class Serve:
    """``glimprouter serve`` in a child process on two fake vLLM servers."""

    def __init__(self, state: Path, ready_after: float = 0.0, crash_large: bool = False) -> None:
        self.state = state
        script = state / "fake_vllm.py"
        script.write_text(FAKE_VLLM)
        python = state / "python"
        python.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} {script} "$@"\n')
        python.chmod(0o755)
        small_port = free_port()
        large_port = free_port()
        while large_port == small_port:
            large_port = free_port()
        self.ports = small_port, large_port
        env = {**os.environ, "FAKE_VLLM_DIR": str(state), "FAKE_VLLM_READY_AFTER": str(ready_after)}
        if crash_large:
            env["FAKE_VLLM_CRASH_PORT"] = str(large_port)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "langchain_glimprouter.cli", "serve", "--cpu",
             "--python", str(python), "--small-port", str(small_port),
             "--large-port", str(large_port)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # Ctrl-C as usual
        )  # fmt: skip
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.out: list[str] = []
        self.err: list[str] = []
        self.readers = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for reader in self.readers:
            reader.start()

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        self.err.extend(self.process.stderr)

    def wait_for(self, text: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.out):
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {text!r} in {self.out}") from None
            assert line is not None, f"serve exited: {self.finish()}"
            self.out.append(line)

    def pids(self) -> list[int]:
        return [int((self.state / f"{port}.pid").read_text()) for port in self.ports]

    def finish(self, timeout: float = 20.0) -> str:
        """Wait for serve to exit; return its stderr (its stdout lines end in ``self.out``)."""
        self.process.wait(timeout=timeout)
        for reader in self.readers:
            reader.join(timeout=5)
        while (line := self.lines.get(timeout=5)) is not None:
            self.out.append(line)
        return "".join(self.err)

    def cleanup(self) -> None:
        """Kill whatever this test started and is still running (by process id)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for pidfile in self.state.glob("*.pid"):
            pid = int(pidfile.read_text())
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Serve]]:
    started: list[Serve] = []

    def start(**kwargs: Any) -> Serve:
        state = tmp_path / f"fake-{len(started)}"
        state.mkdir()
        started.append(Serve(state, **kwargs))
        return started[-1]

    yield start
    for running in started:
        running.cleanup()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_serve_waits_for_health_prints_the_snippet_and_stops_both(
    serve: Callable[..., Serve], sig: signal.Signals
) -> None:
    running = serve(ready_after=0.7)
    running.wait_for("Press Ctrl-C")
    # Both answered /health with 200 before the snippet was printed.
    assert all((running.state / f"{port}.healthy").exists() for port in running.ports)
    text = "\n".join(running.out)
    assert "GlimpRouterChatModel(" in text
    for port, name in zip(running.ports, ("smollm2-small", "smollm2-large"), strict=True):
        assert f'Backend(base_url="http://127.0.0.1:{port}/v1", model="{name}")' in text
    pids = running.pids()
    assert all(_alive(pid) for pid in pids)
    running.process.send_signal(sig)
    running.finish()
    assert running.process.returncode == 0
    assert any("Stopped." in line for line in running.out)
    assert not any(_alive(pid) for pid in pids)


def test_serve_stops_the_other_server_when_one_dies(serve: Callable[..., Serve]) -> None:
    running = serve(crash_large=True)
    err = running.finish()
    assert running.process.returncode == 1
    assert "the large server (smollm2-large) exited with code 3" in err
    assert "fake engine crashed: CUDA out of memory" in err  # the tail of its log
    assert not any(_alive(pid) for pid in running.pids())


def test_port_in_use_means_a_listening_socket() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert port_in_use("127.0.0.1", port)
    assert not port_in_use("127.0.0.1", port)
