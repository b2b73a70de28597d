"""What routing saved on the large model, per call: the record's savings fields (from the
kept steps, the answer's writer and the large streams' timing), the proxy's response headers
on both APIs and its savings metrics, and the summary line of ``glimprouter ask``."""

from __future__ import annotations

import io
import itertools
import math
from typing import Any

import pytest

from langchain_glimprouter.cli.ask import print_routed, saved_line
from langchain_glimprouter.core import savings as savings_module
from langchain_glimprouter.core.savings import LargeTime, StreamClock, savings
from langchain_glimprouter.proxy import create_app
from langchain_glimprouter.records import RoutingRecord, StepRecord
from tests.support.pair import router_for
from tests.support.proxy import QUESTION, asgi_client, proxy_router

TICK = 0.25


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """``time.perf_counter`` of the savings module: 0, TICK, 2 TICK, ... per call."""
    ticks = itertools.count()
    monkeypatch.setattr(savings_module.time, "perf_counter", lambda: next(ticks) * TICK)


def step(model: str, tokens: int) -> StepRecord:
    return StepRecord(index=0, model=model, h_init=None, first_token=None, residual_mass=None,
                      tokens=tokens, text="x", latency_s=0.0)  # fmt: skip


@pytest.mark.usefixtures("clock")
def test_a_stream_is_timed_from_its_first_token_to_its_last_chunk() -> None:
    large = LargeTime()
    stream = StreamClock()  # opened at 0
    for tokens in (1, 2, 3, 4, 4):  # four tokens, then the finish chunk: read at 1..5 TICK
        stream.read(tokens)
    large.add(stream, 4)
    assert (large.seconds, large.decode_s, large.decode_tokens) == (5 * TICK, 4 * TICK, 3)
    unread = StreamClock()  # a stream that brought nothing adds no time
    large.add(unread, 0)
    one = StreamClock()  # one token: its time is counted, but no decoding observed
    one.read(1)
    large.add(one, 1)
    assert (large.decode_s, large.decode_tokens) == (4 * TICK, 3)
    assert large.seconds == 5 * TICK + 1 * TICK


def test_the_savings_count_the_small_models_kept_steps_at_the_large_rate() -> None:
    steps = [step("small", 10), step("large", 4), step("small", 20)]
    record = RoutingRecord(
        threshold=1.0, estimator="e", probe="stream", answer_tokens=6, steps=steps
    )
    timed = LargeTime(seconds=3.0, decode_s=1.0, decode_tokens=8)
    assert savings(record, "large", timed) == {
        "large_tokens_saved": 30,
        "large_share": 10 / 40,
        "large_s": 3.0,
        "large_s_per_token": 0.125,
        "large_seconds_saved": 30 * 0.125,
    }
    small_only = savings(record, "small", LargeTime())  # the answer is the small model's too
    assert small_only["large_tokens_saved"] == 36
    assert small_only["large_share"] == 4 / 40
    assert small_only["large_s_per_token"] is None
    assert small_only["large_seconds_saved"] is None  # no large decoding observed
    empty = RoutingRecord(threshold=1.0, estimator="e", probe="stream")
    assert savings(empty, "large", LargeTime())["large_share"] == 0.0


@pytest.mark.parametrize(
    ("settings", "large_share"),
    [
        ({"threshold": 1.0}, None),  # small, large, small, large: between 0 and 1
        ({"threshold": 0.0}, 1.0),  # every step large: nothing saved
        ({"threshold": math.inf}, None),  # every step small, the answer large
    ],
)
def test_a_routed_call_records_its_savings(
    servers: Any, settings: dict[str, Any], large_share: float | None
) -> None:
    small, large = servers()
    rec = router_for(small, large, **settings).invoke(QUESTION).response_metadata["glimprouter"]
    by_small = sum(s["tokens"] for s in rec["steps"] if s["model"] == "small")
    by_large = sum(s["tokens"] for s in rec["steps"] if s["model"] == "large")
    by_large += rec["answer_tokens"]
    assert rec["large_tokens_saved"] == by_small
    assert rec["large_share"] == pytest.approx(by_large / (by_small + by_large))
    if large_share is not None:
        assert rec["large_share"] == large_share
    else:
        assert 0 < rec["large_share"] < 1
    # The large backend's streams (steps and answer) decoded several tokens each: observed.
    assert rec["large_s_per_token"] > 0
    assert rec["large_s"] > 0
    assert rec["large_seconds_saved"] == pytest.approx(by_small * rec["large_s_per_token"])


def test_the_small_only_baseline_saves_every_token_and_observes_no_large_rate(
    servers: Any,
) -> None:
    small, large = servers()
    router = router_for(small, large, strategy="small_only")
    rec = router.invoke(QUESTION).response_metadata["glimprouter"]
    written = sum(s["tokens"] for s in rec["steps"]) + rec["answer_tokens"]
    assert rec["large_tokens_saved"] == written > 0
    assert rec["large_share"] == 0.0
    assert (rec["large_s"], rec["large_s_per_token"], rec["large_seconds_saved"]) == (
        0.0,
        None,
        None,
    )


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/responses"])
async def test_a_plain_answer_has_the_savings_headers(servers: Any, path: str) -> None:
    small, large = servers()
    app = create_app(proxy_router(small, large))
    body: dict[str, Any] = {"model": "glimprouter"}
    body |= {"messages": QUESTION} if path.endswith("completions") else {"input": QUESTION}
    async with asgi_client(app) as client:
        response = await client.post(path, json=body)
    assert response.status_code == 200, response.text
    rec = response.json()["glimprouter"]
    assert response.headers["x-glimprouter-saved-tokens"] == str(rec["large_tokens_saved"])
    assert float(response.headers["x-glimprouter-large-share"]) == pytest.approx(
        rec["large_share"], rel=1e-3
    )
    assert rec["large_tokens_saved"] > 0


async def test_the_metrics_count_the_savings(servers: Any) -> None:
    small, large = servers()
    app = create_app(proxy_router(small, large))
    records = []
    async with asgi_client(app) as client:
        for stream in (False, True):
            body = {"model": "glimprouter", "messages": QUESTION, "stream": stream}
            response = await client.post("/v1/chat/completions", json=body)
            records.append(response)
        text = (await client.get("/metrics")).text
    plain = records[0].json()["glimprouter"]
    values = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("glimprouter_proxy_")
    }
    # The scripted pair routes both calls alike: twice the plain call's numbers.
    assert values["glimprouter_proxy_large_tokens_saved_total"] == 2 * plain["large_tokens_saved"]
    assert values["glimprouter_proxy_saved_share_count"] == 2
    assert values["glimprouter_proxy_saved_share_sum"] == pytest.approx(
        2 * (1 - plain["large_share"])
    )
    assert values["glimprouter_proxy_large_seconds_saved_total"] > 0
    assert values["glimprouter_proxy_large_seconds_total"] > 0


def test_ask_prints_what_the_call_saved(servers: Any) -> None:
    small, large = servers()
    out = io.StringIO()
    record = print_routed(router_for(small, large), "What is 6 times 7?", None, out)
    line = next(line for line in out.getvalue().splitlines() if line.startswith("  saved"))
    ms = record["large_s_per_token"] * 1000
    assert line == (
        f"  saved    {record['large_tokens_saved']} large-model tokens not generated (small "
        f"tokenizer), large share {record['large_share']:.0%} of the output; "
        f"~{record['large_seconds_saved']:.2f} s of large-model time at its {ms:.1f} ms/token "
        "on this call"
    )
    small_only = {**record, "large_seconds_saved": None, "large_s_per_token": None}
    assert saved_line(small_only).endswith("no large decoding observed to time them")
