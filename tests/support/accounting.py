"""What a routing record says the servers did (requests, streams closed before their end), for
tests that hold a record to a server's own counters. Counted from the step records, the request
that found the chain's end at a step start (``end_step``) included: whatever the model wrote,
the record accounts for every request."""

from __future__ import annotations

from typing import Any


def written(rec: dict[str, Any]) -> list[dict[str, Any]]:
    """Every step request's record: the steps, then the ``end_step`` if there was one."""
    return rec["steps"] + ([rec["end_step"]] if rec.get("end_step") else [])


def glimpse_requests(rec: dict[str, Any]) -> dict[str, int]:
    """Completions requests of a ``strategy="glimpse"`` call per backend: a glimpse per step
    (unless threshold=0: no glimpse), a second small request per small step with the separate
    probe, a large request per large step, the escalations, and the answer (large)."""
    steps = written(rec)
    large = sum(s["model"] == "large" for s in steps)
    small = 0
    if rec["threshold"] > 0:
        small = len(steps) + rec["escalations"]
        if rec["probe"] == "separate":
            small += len(steps) - large
    return {"small": small, "large": large + 1}


def closed_early(rec: dict[str, Any]) -> dict[str, int]:
    """At most how many streams per backend the router closed before the server ended them:
    the glimpse of each large step (``strategy="glimpse"``, stream probe), and the streams that
    reached ``</think>`` (nothing after it is read; a draft the large model rewrote may have
    reached it too). A server may decode a few tokens of such a stream that the record never
    sees."""
    steps = written(rec)
    closed = {"small": 0, "large": 0}
    if rec["strategy"] == "glimpse" and rec["threshold"] > 0 and rec["probe"] == "stream":
        closed["small"] = sum(s["model"] == "large" and s["h_init"] is not None for s in steps)
    if rec["chain_end"] == "think_end":
        closed["small"] += 1
        closed["large"] += 1
    return closed


def assert_all_small(rec: dict[str, Any]) -> None:
    """Every step of a ``threshold=inf`` call: written by the small model, with a glimpse
    measured on a real first token (H_init >= 0, a residual mass in [0, 1])."""
    assert rec["n_large_steps"] == 0
    for step in rec["steps"]:
        assert step["model"] == "small"
        assert step["h_init"] is not None
        assert step["h_init"] >= 0
        assert 0.0 <= step["residual_mass"] <= 1.0
        assert step["first_token"]
