"""Server kinds (core/dialects), driven as core programs with no HTTP: which kind renders a
server's prompt, that the kind found is remembered per server, and what each kind puts in
requests and errors."""

from __future__ import annotations

from typing import Any

import pytest

from langchain_glimprouter import Backend
from langchain_glimprouter.core.dialects import DIALECTS, dialect_named
from langchain_glimprouter.core.ops import Program, Request
from langchain_glimprouter.core.prompts import RenderCache, render
from langchain_glimprouter.core.servers import ServerSpec
from langchain_glimprouter.errors import (
    BackendResponseError,
    LogprobsCapError,
    PromptRenderingError,
)
from langchain_glimprouter.http.failures import error_from_response
from tests.support.programs import Server, drive

MESSAGES = [{"role": "user", "content": "hi"}]


def run(program: Program[str], server: Server) -> tuple[str, list[str]]:
    """Run a rendering program against ``server``: its text and the paths it asked for."""
    text, sent = drive(program, server)
    return text, [op.path for op in sent]


def llama_server(op: Request) -> dict[str, Any]:
    """llama.cpp's llama-server, as far as rendering goes: no /tokenize of messages."""
    if op.path == "/apply-template":
        return {"prompt": "<|user|>hi<|assistant|>"}
    raise BackendResponseError("HTTP 404", role=op.role, url="u", status_code=404)


def test_a_server_without_vllm_rendering_is_rendered_by_llamacpp_once_found() -> None:
    spec = Backend(base_url="http://llama:8080/v1", model="m").spec()
    cache = RenderCache()
    text, paths = run(render("small", spec, MESSAGES, cache), llama_server)
    assert text == "<|user|>hi<|assistant|><think>\n"
    assert paths == ["/tokenize", "/apply-template"]
    assert cache.methods == {"http://llama:8080/v1": "llamacpp"}
    other = [*MESSAGES, {"role": "assistant", "content": "x"}, {"role": "user", "content": "y"}]
    _, paths = run(render("small", spec, other, cache), llama_server)
    assert paths == ["/apply-template"]  # the kind is known: vLLM's rendering is not tried


def test_a_server_that_renders_nothing_says_how_to_give_a_template() -> None:
    def nothing(op: Request) -> dict[str, Any]:
        raise BackendResponseError("HTTP 404", role=op.role, url="u", status_code=404)

    spec = ServerSpec(urls=("http://plain:8000/v1",), model="m")
    with pytest.raises(PromptRenderingError, match=r"no vLLM /tokenize, no llama.cpp /apply-t"):
        run(render("large", spec, MESSAGES, RenderCache()), nothing)


def test_a_client_side_template_needs_no_rendering_request() -> None:
    """Rendered here; the server is asked once only how it tokenizes the prompt (its BOS, see
    test_templates.py), which this one cannot say."""
    template = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}<a>"
    spec = ServerSpec(urls=("http://any/v1",), model="m", chat_template=template)
    cache = RenderCache()
    text, paths = run(render("small", spec, MESSAGES, cache), llama_server)
    assert (text, paths) == ("<user>hi<a><think>\n", ["/tokenize", "/extras/tokenize"])
    other = [{"role": "user", "content": "again"}]
    assert run(render("small", spec, other, cache), llama_server)[1] == []
    assert cache.methods == {"http://any/v1": "jinja"}


def test_each_kind_has_a_name_and_its_wording() -> None:
    assert [d.name for d in DIALECTS] == ["jinja", "vllm", "llamacpp"]
    assert dialect_named(None) is dialect_named("vllm")
    for dialect in DIALECTS:
        assert "structured_outputs" in dialect.constrain({"type": "object"})
        assert dialect.body_extras()["add_special_tokens"] is False
        assert "{k}" in dialect.hints.logprobs
    assert dialect_named("llamacpp").tokenize("small", "m", "x", False) is None
    assert dialect_named("vllm").tokenize("small", "m", "x", False) is not None


def test_vllm_words_its_logprobs_cap() -> None:
    body = '{"error": {"message": "logprobs 30 is greater than max allowed: 20"}}'
    error = error_from_response("small", "http://s/v1", 400, body)
    assert isinstance(error, LogprobsCapError)
    assert error.cap == 20
    assert "--max-logprobs" in str(error)
