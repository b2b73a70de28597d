"""The llama-cpp-python launcher with a server process that dies at start (a fake python)."""

from __future__ import annotations

from pathlib import Path

import pytest

from langchain_glimprouter.cli.servers import ServerExited
from tests.support.gguf_files import TEMPLATE, model_metadata, write_gguf
from tests.support.llamacpp import LlamaCppServer


def test_a_server_that_dies_is_reported_with_its_kind(llamacpp_home: Path, tmp_path: Path) -> None:
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'cannot load the model' >&2\nexit 3\n")
    fake.chmod(0o755)
    model = write_gguf(tmp_path / "m.gguf", model_metadata())
    server = LlamaCppServer("tiny", 8126, model=str(model), python=fake).start()
    with pytest.raises(ServerExited, match=r"llama-cpp-python server tiny exited \(code 3\)"):
        server.wait_ready(timeout=30, poll=0.05)
    assert "cannot load the model" in server.log_tail()
    assert server.log_path is not None
    assert server.log_path.name == "llamacpp-tiny-8126.log"
    backend = server.backend(timeout=5.0)
    assert backend.chat_template == TEMPLATE
    assert backend.model == "tiny"
    assert backend.timeout == 5.0
