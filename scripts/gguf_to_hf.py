"""Convert a GGUF to a Hugging Face folder that vLLM's CPU build can serve (its GGUF kernels need
CUDA): dequantised weights, and the config and tokenizer read from the GGUF too, so nothing
comes from the hub. Shared by ``prepare_tiny_model.py`` and ``prepare_gemma_model.py``; run with
the vLLM environment's Python (it needs transformers, torch, gguf and accelerate). Idempotent: an
existing complete folder is left alone.
"""

from __future__ import annotations

import sys
from pathlib import Path


def convert(gguf: Path, out: Path, model_class: str, label: str, dtype: str | None = None) -> None:
    """Write ``gguf`` as a HF folder ``out`` with ``transformers.<model_class>``, in ``dtype``
    (a torch dtype's name; None: as loaded); ``label`` names the model in what it prints."""
    if (out / "config.json").exists() and any(out.glob("*.safetensors")):
        print(f"{label} already prepared in {out}")
        return
    import torch
    import transformers
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    folder, name = gguf.parent, gguf.name
    config = transformers.AutoConfig.from_pretrained(folder, gguf_file=name)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = getattr(transformers, model_class)(config)
    tensors = load_gguf_checkpoint(str(gguf), return_tensors=True, model_to_load=model)["tensors"]
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    missing = [m for m in missing if m != "lm_head.weight"]  # tied to the embeddings
    if missing or unexpected:
        sys.exit(f"weight mismatch: missing={missing} unexpected={unexpected}")
    model.tie_weights()
    if dtype is not None:
        model.to(getattr(torch, dtype))
    tmp = out.with_name(out.name + ".partial")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(out)
    print(f"{label} prepared in {out}")
