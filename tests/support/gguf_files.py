"""Tiny GGUF files written byte by byte, for the GGUF reader and the llama.cpp launcher tests."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{{ eos_token }}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


TOKENS = ["<unk>", "<s>", "</s>", "hello", "▁world"]


def gguf_string(text: str, size: str) -> bytes:
    data = text.encode()
    return struct.pack(size, len(data)) + data


def gguf_value(value: Any, size: str) -> tuple[int, bytes]:
    """(GGUF type, encoded value) of a Python value."""
    if isinstance(value, bool):
        return 7, struct.pack("<?", value)
    if isinstance(value, int):
        return (4, struct.pack("<I", value)) if value >= 0 else (11, struct.pack("<q", value))
    if isinstance(value, float):
        return 6, struct.pack("<f", value)
    if isinstance(value, str):
        return 8, gguf_string(value, size)
    if isinstance(value, list):
        kind, _ = gguf_value(value[0], size)
        items = b"".join(gguf_value(item, size)[1] for item in value)
        return 9, struct.pack("<I", kind) + struct.pack(size, len(value)) + items
    raise TypeError(value)


def write_gguf(path: Path, metadata: dict[str, Any], version: int = 3) -> Path:
    """A GGUF file with ``metadata`` and no tensors (a few bytes of tensor data after it)."""
    size = "<I" if version == 1 else "<Q"
    out = b"GGUF" + struct.pack("<I", version) + struct.pack(size, 0)
    out += struct.pack(size, len(metadata))
    for key, value in metadata.items():
        kind, data = gguf_value(value, size)
        out += gguf_string(key, size) + struct.pack("<I", kind) + data
    path.write_bytes(out + b"\0" * 32)
    return path


def model_metadata(**extra: Any) -> dict[str, Any]:
    return {
        "general.architecture": "llama",
        "llama.context_length": 8192,
        "llama.rope.freq_base": 10000.0,
        "tokenizer.ggml.tokens": TOKENS,
        "tokenizer.ggml.scores": [0.0, -1.5, -2.0, -3.0, -4.0],
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.chat_template": TEMPLATE,
        **extra,
    }
