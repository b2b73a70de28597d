"""The real langsmith SDK posts each reasoning step as a child run of the chat model's run, to a
capture server on 127.0.0.1 that stands in for LangSmith."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
import uvicorn
from langchain_core.tracers.langchain import LangChainTracer
from langsmith import Client
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.support.pair import LARGE_STEPS, SMALL_STEPS, router_for

QUESTION = "What is 6 times 7?"
INFO = {
    "version": "0.10.0",
    "batch_ingest_config": {
        "use_multipart_endpoint": False,
        "size_limit": 100,
        "size_limit_bytes": None,
        "scale_up_qsize_trigger": 1000,
        "scale_up_nthreads_limit": 1,
        "scale_down_nempty_trigger": 4,
    },
}
"""What GET /info answers; JSON batches (/runs/batch) rather than multipart, which the capture
server would need python-multipart to read."""


class CaptureServer:
    """A stand-in for the LangSmith API: the run payloads it was sent, by request."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.posted: list[dict[str, Any]] = []
        self.patched: list[dict[str, Any]] = []
        self.app = Starlette(
            routes=[
                Route("/info", self._info, methods=["GET"]),
                Route("/runs/batch", self._batch, methods=["POST"]),
                Route("/runs", self._post, methods=["POST"]),
                Route("/runs/{run_id}", self._patch, methods=["PATCH"]),
            ]
        )

    async def _info(self, request: Request) -> Response:
        return JSONResponse(INFO)

    async def _batch(self, request: Request) -> Response:
        body = await self._body(request)
        self.posted += body.get("post") or []
        self.patched += body.get("patch") or []
        return JSONResponse({})

    async def _post(self, request: Request) -> Response:
        self.posted.append(await self._body(request))
        return JSONResponse({})

    async def _patch(self, request: Request) -> Response:
        self.patched.append({**await self._body(request), "id": request.path_params["run_id"]})
        return JSONResponse({})

    async def _body(self, request: Request) -> dict[str, Any]:
        raw = await request.body()
        self.bodies.append(raw)
        body: dict[str, Any] = json.loads(raw)
        return body

    def runs(self) -> dict[str, dict[str, Any]]:
        """Every run by id, its patches applied over its post."""
        runs: dict[str, dict[str, Any]] = {}
        for run in [*self.posted, *self.patched]:
            runs.setdefault(str(run["id"]), {}).update(run)
        return runs


@pytest.fixture
def langsmith() -> Iterator[tuple[Client, CaptureServer]]:
    """A real ``langsmith.Client`` and the capture server on 127.0.0.1 it posts to."""
    capture = CaptureServer()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(capture.app, log_level="warning"))
    thread = threading.Thread(target=server.run, args=([sock],), daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    client = Client(api_url=f"http://127.0.0.1:{port}", api_key="test", info=INFO)
    yield client, capture
    client.flush()
    server.should_exit = True
    thread.join(timeout=5)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ["invoke", "stream", "ainvoke", "astream"])
async def test_steps_are_child_runs_in_langsmith(
    servers: Any, langsmith: tuple[Client, CaptureServer], mode: str
) -> None:
    client, capture = langsmith
    model = router_for(*servers(), api_key=SecretStr("sk-very-secret"))
    config: Any = {"callbacks": [LangChainTracer(client=client, project_name="glimprouter")]}
    if mode == "invoke":
        model.invoke(QUESTION, config=config)
    elif mode == "stream":
        list(model.stream(QUESTION, config=config))
    elif mode == "ainvoke":
        await model.ainvoke(QUESTION, config=config)
    else:
        [chunk async for chunk in model.astream(QUESTION, config=config)]
    client.flush()

    runs = capture.runs()
    (model_run,) = [r for r in runs.values() if r["name"] == "GlimpRouterChatModel"]
    steps = sorted(
        (r for r in runs.values() if r.get("parent_run_id") == model_run["id"]),
        key=lambda r: r["dotted_order"],
    )
    assert len(runs) == 5
    assert model_run["outputs"]["generations"][0][0]["message"]["kwargs"]["content"] == (
        "The answer is 42."
    )
    routed = [("small", "small-m"), ("large", "large-m")] * 2
    for i, (step, (role, served)) in enumerate(zip(steps, routed, strict=True)):
        assert step["name"] == f"glimprouter step {i} ({role})"
        assert step["run_type"] == "llm"
        assert step["session_name"] == "glimprouter"
        assert step["trace_id"] == model_run["trace_id"]
        assert step["dotted_order"].startswith(model_run["dotted_order"] + ".")
        text = (SMALL_STEPS if role == "small" else LARGE_STEPS)[i]
        assert step["outputs"]["generations"][0][0]["text"] == text
        assert step["inputs"] == {
            "prompts": [f"reasoning step {i}, written by the {role} model ({served})"]
        }
        meta = step["extra"]["metadata"]
        assert (meta["index"], meta["model"], meta["ls_model_name"]) == (i, role, served)
        assert meta["h_init"] == pytest.approx([0.2, 1.5, 0.1, 2.0][i])
        assert meta["tokens"] == meta["usage_metadata"]["output_tokens"] > 0
        assert meta["threshold"] == 1.0
        started, ended = (datetime.fromisoformat(step[k]) for k in ("start_time", "end_time"))
        assert (ended - started).total_seconds() == pytest.approx(meta["latency_s"], abs=1e-5)
    assert all(b"sk-very-secret" not in body for body in capture.bodies)
