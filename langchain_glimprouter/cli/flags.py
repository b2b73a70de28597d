"""What the commands share: the router's settings as flags, the two servers as flags, and the
conversation of one question.

The router flags are derived from the router's settings, declared once in
:class:`~langchain_glimprouter.core.settings.RouterSettings`: type, choices, default, help and
whether there is a flag at all come from the field, so a flag cannot drift from the setting it
sets.
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from pydantic import ValidationError

from langchain_glimprouter.backend import Backend
from langchain_glimprouter.chat_models import GlimpRouterChatModel
from langchain_glimprouter.core.settings import SETTING_NAMES, RouterSettings, setting_of
from langchain_glimprouter.errors import InvalidArgumentError
from langchain_glimprouter.gguf import GGUFError, gguf_chat_template
from langchain_glimprouter.router import ROLES, RouterConfig

R = TypeVar("R")

NOT_FLAGS = {
    name: setting_of(info).no_flag_because
    for name, info in RouterSettings.model_fields.items()
    if setting_of(info).no_flag_because
}
"""Router settings with no flag, and why: the CLI routes with their defaults."""
FLAGS: dict[str, tuple[str, ...]] = {
    name: ("--" + name.replace("_", "-"), *setting_of(info).flag_aliases)
    for name, info in RouterConfig.model_fields.items()
    if name in (*SETTING_NAMES, "timeout") and name not in NOT_FLAGS
}
"""The flags of each router setting (and of the read timeout), e.g.
``("--max-reasoning-tokens",)``: the setting's name, then its aliases."""


def threshold_arg(text: str) -> float | str:
    """``--threshold``: nats, or ``auto``."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a threshold in nats or 'auto', got {text!r}"
        ) from None


def _kind(annotation: Any) -> dict[str, Any]:
    """argparse's ``type``/``choices`` for a field's annotation."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is Literal:
        return {"choices": list(typing.get_args(annotation))}
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        literal = [a for a in args if typing.get_origin(a) is Literal]
        if float in args and literal:
            return {"type": threshold_arg}
        if len(args) == 1:
            return _kind(args[0])
    if annotation in (int, float, str):
        return {"type": annotation}
    raise TypeError(f"no flag type for {annotation!r}")


def add_router_flags(
    parser: argparse.ArgumentParser,
    defaults: Mapping[str, Any] | None = None,
    without: Collection[str] = (),
    notes: Mapping[str, str] | None = None,
) -> None:
    """One flag per router setting (``dest`` is the field name), but those in ``without``;
    ``defaults`` replace the fields' (None: the command decides), ``notes`` end the help."""
    defaults, notes = defaults or {}, notes or {}
    names = [name for name in FLAGS if name not in without]
    parser.set_defaults(router_flags=tuple(names))
    for name in names:
        field = RouterConfig.model_fields[name]
        default = defaults.get(name, field.default)
        words = (field.description or "").split(". ")[0].rstrip(".")
        note = notes.get(name, f"default {default!r}" if default is not None else "")
        text = f"{words} ({note})" if note else words
        parser.add_argument(
            *FLAGS[name],
            dest=name,
            default=default,
            help=text.replace("%", "%%"),
            **_kind(field.annotation),
        )


def router_values(args: argparse.Namespace) -> dict[str, Any]:
    """The router settings the command's router flags hold (but None: the field's default)."""
    return {name: value for name in args.router_flags if (value := getattr(args, name)) is not None}


def build_router(
    small: Backend,
    large: Backend,
    values: Mapping[str, Any],
    kind: Callable[..., R] = GlimpRouterChatModel,  # type: ignore[assignment]
) -> R:
    """The router (a chat model, or a ``Router`` for the proxy) of ``values``, with pydantic's
    complaint about a bad value turned into an InvalidArgumentError."""
    try:
        return kind(small=small, large=large, **values)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise InvalidArgumentError(f"invalid router settings: {problems}") from None


BACKEND_FLAGS = ("session_header",)
"""Backend fields with a flag per server (``--small-session-header``,
``--large-session-header``), derived as the router flags are: help from the field."""


def add_server_flags(
    parser: argparse.ArgumentParser, required: bool = True, system: bool = True
) -> None:
    """``--small-url``, ``--small-model``, ``--large-url``, ``--large-model``, the
    :data:`BACKEND_FLAGS` of each, the template flags of each (``--small-chat-template``,
    ``--small-gguf``, ...; see :func:`template_settings`) and (unless ``system`` is false: the
    messages come from elsewhere) ``--system``."""
    parser.add_argument("--small-url", required=required, help="e.g. http://localhost:8001/v1")
    parser.add_argument("--small-model", required=required)
    parser.add_argument("--large-url", required=required)
    parser.add_argument("--large-model", required=required)
    for role in ROLES:
        for name in BACKEND_FLAGS:
            words = (Backend.model_fields[name].description or "").split(". ")[0].rstrip(".")
            text = f"for the {role} server: {words[:1].lower()}{words[1:]} (default none)"
            parser.add_argument(
                f"--{role}-{name.replace('_', '-')}",
                dest=f"{role}_{name}",
                default=None,
                metavar=name.rsplit("_", 1)[-1].upper(),
                help=text.replace("%", "%%"),
            )
    for role in ROLES:
        parser.add_argument(
            f"--{role}-chat-template",
            dest=f"{role}_chat_template",
            default=None,
            metavar="FILE",
            help=f"for the {role} server: a Jinja chat template file, rendered client-side (for a "
            "server that renders none, such as llama-cpp-python's; default: the server renders)",
        )
        parser.add_argument(
            f"--{role}-gguf",
            dest=f"{role}_gguf",
            default=None,
            metavar="FILE",
            help=f"for the {role} server: the GGUF file it serves; its chat template (or the "
            "shipped one of its model family when it has none) and BOS/EOS tokens are rendered "
            f"client-side (with --{role}-chat-template: that file's template, the GGUF's tokens)",
        )
    if system:
        parser.add_argument("--system", default=None, help="optional system message")


def backends(
    args: argparse.Namespace, started: Sequence[tuple[str, str]] = ()
) -> tuple[Backend, Backend]:
    """The small and the large backend of the server flags; ``started``: the URL and served
    model of each when the command started its own servers (the other flags still apply)."""
    flags = [(args.small_url, args.small_model), (args.large_url, args.large_model)]
    small, large = started or flags

    def backend(role: str, url: str, model: str) -> Backend:
        settings = {name: getattr(args, f"{role}_{name}") for name in BACKEND_FLAGS}
        return Backend(base_url=url, model=model, **settings, **template_settings(args, role))

    return backend("small", *small), backend("large", *large)


def template_settings(args: argparse.Namespace, role: str) -> dict[str, Any]:
    """The ``Backend`` template fields of ``role``'s ``--ROLE-chat-template`` and ``--ROLE-gguf``
    flags (none set: none, the server renders); a file that cannot be read is an
    InvalidArgumentError naming the flag."""
    template_file = getattr(args, f"{role}_chat_template", None)
    gguf_file = getattr(args, f"{role}_gguf", None)
    settings: dict[str, Any] = {}
    if gguf_file is not None:
        try:
            settings = gguf_chat_template(gguf_file)
        except (OSError, GGUFError) as exc:
            raise InvalidArgumentError(f"--{role}-gguf: {exc}", param=f"{role}_gguf") from None
    if template_file is not None:
        try:
            text = Path(template_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidArgumentError(
                f"--{role}-chat-template: cannot read {template_file}: {exc}",
                param=f"{role}_chat_template",
            ) from None
        settings["chat_template"] = text
    return settings


def messages(question: str, system: str | None) -> list[BaseMessage]:
    """One question, after an optional system message."""
    head: list[BaseMessage] = [SystemMessage(system)] if system else []
    return [*head, HumanMessage(question)]
