"""Exactly one BOS token in front of a prompt rendered client-side, whatever the server.

The same chat template needs its BOS written on one server and left out on another: vLLM sends
a prompt as it is (the router asks for ``add_special_tokens=False``), while llama-cpp-python puts
the model's BOS in front of every prompt itself when the GGUF says ``add_bos_token`` (and
ignores ``add_special_tokens``). A template that writes ``{{ bos_token }}`` then doubles it there
(Gemma 3: ids ``[2, 2, ...]``), and one given an empty ``bos_token`` leaves the model without
its BOS on vLLM (Gemma then degenerates into repeating itself).

So the first prompt rendered client-side for a server (per template and variables) is
tokenized as the server reads a completions prompt (vLLM's ``/tokenize``, else
llama-cpp-python's ``/extras/tokenize``, which adds what its completions add) and:

- starts with the same token twice, the template's ``bos_token`` in front: the server added
  its own, so the template's is dropped from every prompt for that server (the correction is
  kept; no request more per call);
- starts with the same token twice otherwise: :class:`PromptRenderingError` (a template that
  writes the BOS literally, on a server that adds one);
- the template writes ``{{ bos_token }}``, that is empty and the server adds none:
  :class:`PromptRenderingError` naming the fix (the model's BOS as ``bos_token``).

A server with neither endpoint cannot be checked: the prompt goes as rendered (documented in
docs/servers.md).
"""

from __future__ import annotations

import re
from typing import Any

from langchain_glimprouter.core.ops import RETRYABLE_STATUS, Program, Request
from langchain_glimprouter.core.servers import ServerSpec
from langchain_glimprouter.errors import BackendResponseError, PromptRenderingError

_WRITES_BOS = re.compile(r"\{\{-?\s*bos_token\s*-?\}\}")

LLAMACPP_PYTHON = "llama-cpp-python"
VLLM = "vLLM"


def _tokenizers(model: str, text: str) -> tuple[tuple[str, str, dict[str, Any]], ...]:
    """(server kind, path, body) of each tokenize request tried, in order."""
    return (
        (VLLM, "/tokenize", {"model": model, "prompt": text, "add_special_tokens": False}),
        (LLAMACPP_PYTHON, "/extras/tokenize", {"model": model, "input": text}),
    )


def count_prompt(role: str, model: str, prompt: str | list[int]) -> Program[int | None]:
    """The tokens of a completions ``prompt`` as llama-cpp-python reads it (its BOS included),
    for a server whose streams report no usage; None when it cannot say."""
    if isinstance(prompt, list):
        return len(prompt)
    found = yield from server_ids(role, model, prompt, (LLAMACPP_PYTHON,))
    return None if found is None else len(found[0])


def server_ids(
    role: str, model: str, text: str, kinds: tuple[str, ...] = (VLLM, LLAMACPP_PYTHON)
) -> Program[tuple[list[int], str] | None]:
    """``text``'s ids as the server reads a completions prompt of it, and the kind of server
    that answered (one of ``kinds``); None when none of them answers with ids."""
    for kind, path, body in _tokenizers(model, text):
        if kind not in kinds:
            continue
        try:
            answer = yield Request(role, "POST", path, body)
        except BackendResponseError as exc:
            if exc.status_code is None or exc.status_code in RETRYABLE_STATUS:
                raise
            continue  # no such endpoint, or not this request's shape
        ids = answer.get("tokens")
        valid = isinstance(ids, list) and all(isinstance(i, int) for i in ids)
        if valid and (ids or not text):  # an empty answer to text: another request shape
            return ids, kind
    return None


def check_bos(role: str, spec: ServerSpec, text: str) -> Program[tuple[str, str | None]]:
    """Check the BOS of ``text``, rendered client-side for ``spec``'s server (see the module
    docstring): the prefix to drop from every prompt rendered for it ("" for none), and the
    kind of server whose tokenizer answered (None: neither)."""
    found = yield from server_ids(role, spec.model, text)
    if found is None:
        return "", None
    ids, kind = found
    bos = str(spec.chat_template_kwargs.get("bos_token") or "")
    if len(ids) >= 2 and ids[0] == ids[1]:
        if bos and text.startswith(bos) and not text[len(bos) :].startswith(bos):
            return bos, kind
        raise PromptRenderingError(
            f"the prompt starts with the same token twice as the server ({kind}) reads it "
            f"(ids {ids[:3]}...): a doubled BOS. The server puts its own BOS in front of every "
            "prompt; remove the one the chat template writes (or pass it as "
            "chat_template_kwargs={'bos_token': ...} so that the router can drop it).",
            role=role,
            url=spec.base_url,
        )
    if not bos and _WRITES_BOS.search(spec.chat_template or ""):
        adds = False
        if kind == LLAMACPP_PYTHON:
            empty = yield from server_ids(role, spec.model, "", (LLAMACPP_PYTHON,))
            adds = bool(empty and empty[0])
        if not adds:
            raise PromptRenderingError(
                "the chat template writes {{ bos_token }}, bos_token is empty and the server "
                f"({kind}) adds no BOS of its own, so the model would read its prompt without "
                "its BOS token. Pass the model's BOS as chat_template_kwargs={'bos_token': "
                f"'<bos>'}} (gguf_chat_template(path) or the CLI's --{role}-gguf FILE read it "
                "from the GGUF).",
                role=role,
                url=spec.base_url,
            )
    return "", kind
