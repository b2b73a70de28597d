"""vLLM's OpenAI-compatible server: it renders the model's chat template with ``POST /tokenize``
(the messages, ``add_generation_prompt``) and ``POST /detokenize`` (the ids back to text), takes
``structured_outputs`` and its own extras on ``/v1/completions``, tokenizes a prompt with
``/tokenize``, and caps the logprobs a request may ask for (``--max-logprobs``)."""

from __future__ import annotations

import re

from langchain_glimprouter.core.dialects.base import Conversation, Hints, ServerDialect
from langchain_glimprouter.core.ops import RETRYABLE_STATUS, Program, Request
from langchain_glimprouter.errors import (
    BackendResponseError,
    ContextLengthExceededError,
    GlimpRouterError,
    LogprobsCapError,
    PromptRenderingError,
)

_CAP_RE = re.compile(r"greater than max allowed: (\d+)")


class VllmDialect(ServerDialect):
    """vLLM (and servers that speak its extensions): the defaults are its own."""

    name = "vllm"
    renders_with: str | None = "vLLM /tokenize"
    hints = Hints(
        logprobs="start vLLM with --max-logprobs >= {k}",
        structured_outputs="vLLM's `structured_outputs`",
    )

    def render(self, talk: Conversation) -> Program[str]:
        model, role = talk.spec.model, talk.role
        body = {"model": model, **talk.template_body(), "add_generation_prompt": True}
        ids = yield Request(role, "POST", "/tokenize", body)
        detok = yield Request(
            role, "POST", "/detokenize", {"model": model, "tokens": ids["tokens"]}
        )
        return str(detok["prompt"])

    def tokenize(
        self, role: str, model: str, text: str, add_special_tokens: bool
    ) -> Program[list[int] | None] | None:
        return self._tokenize(role, model, text, add_special_tokens)

    def _tokenize(
        self, role: str, model: str, text: str, add_special_tokens: bool
    ) -> Program[list[int] | None]:
        body = {"model": model, "prompt": text, "add_special_tokens": add_special_tokens}
        try:
            answer = yield Request(role, "POST", "/tokenize", body)
        except BackendResponseError as exc:
            if exc.status_code is None or exc.status_code in RETRYABLE_STATUS:
                raise
            return None  # no such endpoint, or not this request's shape
        ids = answer.get("tokens")
        if not isinstance(ids, list) or not ids or not all(isinstance(i, int) for i in ids):
            return None
        return ids

    def server_error(
        self, role: str, url: str, status: int, message: str
    ) -> GlimpRouterError | None:
        lowered = message.lower()
        if "maximum context length" in lowered or "context length" in lowered:
            return ContextLengthExceededError(
                f"{message} Shorten the conversation, lower max_reasoning_tokens / max_tokens, "
                "or serve the model with a larger --max-model-len.",
                role=role,
                url=url,
                status_code=status,
            )
        if status == 400 and "chat template" in lowered:
            # vLLM's ChatTemplateResolutionError: "As of transformers v4.44, default chat
            # template is no longer allowed, so you must provide a chat template if the
            # tokenizer does not define one." (a base model, or a converted tokenizer)
            return PromptRenderingError(
                f"{message} The model has no chat template of its own (a base model, or a "
                "tokenizer converted without one). Pass its Jinja template as "
                "Backend(chat_template=...) (CLI: --small-chat-template / "
                "--large-chat-template FILE; for a model converted from a GGUF, --small-gguf / "
                "--large-gguf FILE takes the file's or its family's shipped one), or serve it "
                "with vLLM's --chat-template.",
                role=role,
                url=url,
            )
        if "logprobs" in lowered and (cap := _CAP_RE.search(message)):
            return LogprobsCapError(
                f"[{role} backend at {url}] {message} Set top_logprobs <= {cap.group(1)}, or "
                "restart vLLM with a larger --max-logprobs.",
                cap=int(cap.group(1)),
            )
        return None


VLLM = VllmDialect()
