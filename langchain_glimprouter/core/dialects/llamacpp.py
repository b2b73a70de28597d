"""llama.cpp's C++ server (``llama-server``): it renders the model's chat template with
``POST /apply-template``. Its ``/tokenize`` takes another request than vLLM's, so the core does
not tokenize with it (a close ``topk_bounds`` call after skipped whitespace is decided on the
estimate). Its requests carry vLLM's extras (the defaults), which it ignores.
llama-cpp-python's server has no rendering endpoint: it is served with a client-side template
(:mod:`.jinja`)."""

from __future__ import annotations

from langchain_glimprouter.core.dialects.base import Conversation, Hints, ServerDialect
from langchain_glimprouter.core.ops import Program, Request


class LlamaCppDialect(ServerDialect):
    """llama.cpp's ``llama-server``."""

    name = "llamacpp"
    renders_with: str | None = "llama.cpp /apply-template"
    hints = Hints(
        logprobs="use a llama.cpp server that returns {k} top logprobs per token",
        structured_outputs="vLLM's `structured_outputs`, which llama.cpp's server ignores",
    )

    def render(self, talk: Conversation) -> Program[str]:
        answer = yield Request(talk.role, "POST", "/apply-template", talk.template_body())
        return str(answer["prompt"])


LLAMACPP = LlamaCppDialect()
