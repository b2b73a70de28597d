"""A conversation and its tools as the step loop reads them: OpenAI-style dicts, checked and
normalised once (what OpenAI's and vLLM's servers accept: ``content`` as text, as a list of text
parts, absent or null on an assistant message that calls tools; ``name``; tool messages)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from langchain_glimprouter.errors import InvalidArgumentError

ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
ALIASES = {"developer": "system"}
"""Roles the chat templates know under another name (OpenAI's ``developer`` is a system
message to open models)."""


def _bad(message: str) -> InvalidArgumentError:
    return InvalidArgumentError(message, param="messages")


def text_of(content: Any, where: str) -> str:
    """A message's content as text: a string, None (no text), or a list of text parts (past
    reasoning parts are not re-sent). Any other part is refused, saying what to send."""
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        raise _bad(f"{where}.content must be a string or a list of parts.")
    texts: list[str] = []
    for i, part in enumerate(content):
        kind = part.get("type") if isinstance(part, Mapping) else None
        if isinstance(part, str):
            texts.append(part)
        elif kind in ("text", "input_text", "output_text") and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind in ("reasoning", "thinking", "reasoning_text"):
            continue
        else:
            raise _bad(
                f"{where}.content[{i}] is a {kind or type(part).__name__!r} part; the router takes "
                "text only: send text, or describe the content in words."
            )
    return "".join(texts)


def _tool_calls(raw: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(raw, list):
        raise _bad(f"{where}.tool_calls must be a list.")
    calls = []
    for i, call in enumerate(raw):
        function = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            raise _bad(f"{where}.tool_calls[{i}] must be {{'function': {{'name': ..., ...}}}}.")
        arguments = function.get("arguments")
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments if arguments is not None else {}, ensure_ascii=False)
        calls.append({
            "id": str(call.get("id") or f"call_{i}"),
            "type": "function",
            "function": {"name": function["name"], "arguments": arguments},
        })  # fmt: skip
    return calls


def openai_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The conversation as the step loop reads it: each message a dict with ``role`` and text
    ``content`` (and ``tool_calls``, ``tool_call_id``, ``name`` where given). Raises
    :class:`~langchain_glimprouter.errors.InvalidArgumentError` (``param="messages"``)."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence) or not messages:
        raise _bad("messages must be a non-empty list of {'role': ..., 'content': ...} dicts.")
    out: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, Mapping):
            raise _bad(f"{where} must be an object with 'role' and 'content'.")
        role = message.get("role")
        if role not in ROLES:
            raise _bad(f"{where}.role must be one of {sorted(ROLES)} (got {role!r}).")
        if "content" not in message and not (role == "assistant" and message.get("tool_calls")):
            raise _bad(f"{where} has no 'content'.")
        content = text_of(message.get("content"), where)
        entry: dict[str, Any] = {"role": ALIASES.get(role, role), "content": content}
        if role == "assistant" and message.get("tool_calls"):
            entry["tool_calls"] = _tool_calls(message["tool_calls"], where)
        if role == "tool":
            entry["tool_call_id"] = str(message.get("tool_call_id") or "")
        if isinstance(message.get("name"), str) and role in ("user", "assistant", "tool"):
            entry["name"] = message["name"]
        out.append(entry)
    return out


def check_tools(tools: Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    """OpenAI function tools (``{"type": "function", "function": {"name": ..., "parameters":
    {...}}}``), as dicts; anything else is refused (``param="tools"``)."""
    out: list[dict[str, Any]] = []
    for i, tool in enumerate(tools or ()):
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if (
            not isinstance(tool, Mapping)
            or tool.get("type") != "function"
            or not isinstance(function, Mapping)
            or not isinstance(function.get("name"), str)
            or not isinstance(function.get("parameters", {}), Mapping)
        ):
            raise InvalidArgumentError(
                f"tools[{i}] must be {{'type': 'function', 'function': {{'name': ..., "
                "'parameters': {...}}}.",
                param="tools",
            )
        out.append(dict(tool))
    return out
