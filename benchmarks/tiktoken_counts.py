"""Is tiktoken the right tool for the router's token counts? Its counts against the served
model's own tokenizer, on the shipped question sets.

tiktoken's own encodings (cl100k_base, o200k_base) are OpenAI's models' vocabularies, fetched from
the network on first use; the router's counts are of the *served* model's tokens (the
reasoning budget, ``get_num_tokens``, the context check). So the fair test is tiktoken running the
served model's own BPE: this script builds a ``tiktoken.Encoding`` from the tiny model's
``tokenizer.json`` (byte-level BPE, GPT-2 pre-tokenization; ranks = vocabulary ids) and compares
it, text by text, with Hugging Face ``tokenizers`` on the same file (what vLLM's ``/tokenize``
runs), and times both.

Run with the vLLM environment's Python (it has ``tokenizers``; tiktoken comes with the openai
SDK's extras or ``pip install tiktoken``)::

    ~/.cache/glimprouter/vllm-venv/bin/python -m benchmarks.tiktoken_counts
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import tiktoken
from tokenizers import Tokenizer

from benchmarks._common import ROOT, TINY_MODEL_DIR, load_package_module

TOKENIZER = TINY_MODEL_DIR / "tokenizer.json"
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def byte_decoder() -> dict[str, int]:
    """GPT-2's printable stand-ins for the 256 byte values, reversed."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs, strict=True)}


def encoding_from(path: Path) -> tiktoken.Encoding:
    spec = json.loads(path.read_text())
    decode = byte_decoder()
    added = {t["content"]: t["id"] for t in spec["added_tokens"]}
    ranks = {
        bytes(decode[ch] for ch in token): rank
        for token, rank in spec["model"]["vocab"].items()
        if token not in added
    }
    return tiktoken.Encoding(
        "smollm2", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens=added
    )


def texts() -> list[str]:
    # questions.py imports nothing: load it without importing the package (no LangChain here)
    calibration = load_package_module("questions").CALIBRATION_QUESTIONS
    assert isinstance(calibration, tuple)

    data = ROOT / "langchain_glimprouter" / "data" / "arithmetic.jsonl"
    items = [json.loads(line) for line in data.read_text().splitlines() if line.strip()]
    out = [str(item["question"]) for item in items]
    out += [str(q) for q in calibration]
    # a reasoning-like text with blank lines, digits, unicode and code
    out.append("Let me think.\n\n12 × 7 = 84, so 84 − 6 = 78.\n\n`x = f(3)` → 9; café, naïve.")
    return out


def main() -> int:
    enc = encoding_from(TOKENIZER)
    hf = Tokenizer.from_file(str(TOKENIZER))
    corpus = texts()
    diffs = []
    for text in corpus:
        a, b = enc.encode(text, disallowed_special=()), hf.encode(text, add_special_tokens=False)
        if a != b.ids:
            diffs.append((text[:60], len(a), len(b.ids)))
    times: dict[str, list[float]] = {"tiktoken": [], "tokenizers": []}
    for _ in range(5):
        t = time.perf_counter()
        for text in corpus:
            enc.encode(text, disallowed_special=())
        times["tiktoken"].append((time.perf_counter() - t) / len(corpus))
        t = time.perf_counter()
        for text in corpus:
            hf.encode(text, add_special_tokens=False)
        times["tokenizers"].append((time.perf_counter() - t) / len(corpus))
    n_tokens = sum(len(hf.encode(t, add_special_tokens=False).ids) for t in corpus)
    print(f"{len(corpus)} texts, {n_tokens} tokens (SmolLM2-135M's tokenizer.json)")
    print(f"identical token ids: {len(corpus) - len(diffs)} of {len(corpus)}")
    for text, a, b in diffs[:10]:
        print(f"  differs: {text!r}: tiktoken {a}, tokenizers {b}")
    for name, values in times.items():
        print(f"{name}: median {statistics.median(values) * 1e6:.1f} µs per text")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
