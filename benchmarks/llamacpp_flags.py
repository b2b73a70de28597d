"""What the llama.cpp launcher's flags cost and buy, on llama-cpp-python's server (issue 31).

1. ``--logits_all``: the router's glimpse needs the top-k logprobs of streamed tokens. For
   each setting (``true``, ``false``) a server is started on the same GGUF and asked
   (a) for a streamed completion with ``logprobs=20`` (do the top-k come back, or an error?)
   and (b) for ``--prompts`` fresh prompts of about 400 tokens each with ``max_tokens=1`` (a
   different first word each, so the server's one-slot prefix cache never hits): wall-clock
   time per prompt token (``usage.prompt_tokens``), median over the prompts. (The server's
   log line ``prompt eval time`` is no measure here: with ``--logits_all true`` it reported
   0.3 ms for 366 tokens on some requests.)
   Both servers run one after the other, alternating ``--rounds`` times.
2. Seeds: one prompt with ``seed=7, temperature=1``, sent after another prompt (a fresh
   evaluation) and again right after itself (the whole prompt in the prefix cache but its last
   token): whether the same seed gives the same text each way.

Run (it starts real servers; take the lock the test suite takes)::

    flock /tmp/glimp-real.lock .venv/bin/python -m benchmarks.llamacpp_flags [--gguf FILE]

(default: SmolLM2-135M's GGUF of ``make llamacpp-env``; writes
benchmarks/results/llamacpp_flags.json).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks._common import load_average, results_path, run_header, write_results
from langchain_glimprouter.cli.servers import free_port
from tests.support.llamacpp import LlamaCppServer, tiny_gguf

WORDS = ("Alpha", "Bravo", "Charlie", "Delta", "Echo", "Foxtrot", "Golf", "Hotel", "India",
         "Juliet", "Kilo", "Lima", "Mike", "November", "Oscar", "Papa")  # fmt: skip
FILLER = " The quick brown fox jumps over the lazy dog while the cat watches." * 26


def start(gguf: str, logits_all: bool) -> LlamaCppServer:
    server = LlamaCppServer(f"flags-{logits_all}", free_port(), model=gguf)
    server.extra_args = ["--logits_all", "true" if logits_all else "false"]
    server.start()
    server.wait_ready(timeout=180, poll=0.2)
    return server


def streamed_logprobs(server: LlamaCppServer) -> dict[str, Any]:
    """A streamed completion with logprobs=20: how many top-k the first token has, or the
    error."""
    body = {"model": server.served_name, "prompt": "One, two,", "max_tokens": 3, "stream": True,
            "logprobs": 20}  # fmt: skip
    tops: list[int] = []
    with httpx.stream("POST", server.base_url + "/completions", json=body, timeout=120) as reply:
        if reply.status_code != 200:
            return {"status": reply.status_code, "error": reply.read().decode()[:300]}
        for line in reply.iter_lines():
            if line.startswith("data: {"):
                event = json.loads(line[6:])
                if "error" in event:
                    return {"status": 200, "error": str(event["error"])[:300]}
                logprobs = event["choices"][0].get("logprobs") or {}
                tops += [len(top or {}) for top in logprobs.get("top_logprobs") or []]
    return {"status": 200, "top_k_per_token": tops}


def prompt_ms_per_token(server: LlamaCppServer, prompts: int) -> list[float]:
    """Wall-clock ms per prompt token of ``prompts`` fresh prompts answered with one token
    (``usage.prompt_tokens`` of each; the one generated token is in the time too)."""
    times = []
    for i in range(prompts):
        body = {"model": server.served_name, "prompt": WORDS[i % len(WORDS)] + str(i) + FILLER,
                "max_tokens": 1}  # fmt: skip
        started = time.perf_counter()
        answer = httpx.post(server.base_url + "/completions", json=body, timeout=300)
        elapsed = time.perf_counter() - started
        answer.raise_for_status()
        times.append(1000 * elapsed / answer.json()["usage"]["prompt_tokens"])
    return times


def seeded_texts(server: LlamaCppServer) -> dict[str, str]:
    """The same seeded request: after another prompt (evaluated afresh), then right after
    itself (its prompt in the prefix cache), then afresh again."""
    body = {"model": server.served_name, "prompt": "Once upon a time, in a small village,",
            "max_tokens": 24, "temperature": 1.0, "seed": 7}  # fmt: skip
    other = {**body, "prompt": "Completely different words here.", "max_tokens": 1}

    def text() -> str:
        answer = httpx.post(server.base_url + "/completions", json=body, timeout=120).json()
        return str(answer["choices"][0]["text"])

    url = server.base_url + "/completions"
    httpx.post(url, json=other, timeout=120)
    fresh = text()
    cached = text()
    httpx.post(url, json=other, timeout=120)
    return {"fresh": fresh, "cached": cached, "fresh_again": text()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gguf", default=str(tiny_gguf()))
    parser.add_argument("--prompts", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=results_path("llamacpp_flags"))
    args = parser.parse_args()
    load_before = load_average()
    runs: dict[str, dict[str, Any]] = {"true": {"ms_per_token": []}, "false": {"ms_per_token": []}}
    for _ in range(args.rounds):
        for setting in (True, False):
            server = start(args.gguf, setting)
            try:
                run = runs[str(setting).lower()]
                run["streamed_logprobs"] = streamed_logprobs(server)
                run["ms_per_token"] += prompt_ms_per_token(server, args.prompts)
                run["seeds"] = seeded_texts(server)
            finally:
                server.stop()
    for run in runs.values():
        times = run["ms_per_token"]
        run["median_ms_per_prompt_token"] = round(statistics.median(times), 3) if times else None
    ratio = None
    if runs["true"]["median_ms_per_prompt_token"] and runs["false"]["median_ms_per_prompt_token"]:
        ratio = (
            runs["true"]["median_ms_per_prompt_token"] / runs["false"]["median_ms_per_prompt_token"]
        )
    results = {
        **run_header(),
        "gguf": Path(args.gguf).name,
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "logits_all": runs,
        "prompt_time_ratio_true_over_false": None if ratio is None else round(ratio, 2),
    }
    write_results(args.out, results)
    print(json.dumps({k: v for k, v in results.items() if k != "logits_all"}, indent=1))
    for name, run in runs.items():
        print(f"--logits_all {name}: {run['median_ms_per_prompt_token']} ms/prompt token; "
              f"streamed logprobs {run['streamed_logprobs']}; seeds {run['seeds']}")  # fmt: skip


if __name__ == "__main__":
    main()
