"""The public Router, with no LangChain: its calls and events on scripted servers whose clients
are injected through the Router itself, and the routing core's program stepped by hand (no
driver, no client, no HTTP) for the decision of a step."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import SecretStr

from langchain_glimprouter import (
    AnswerDelta,
    Backend,
    ReasoningDelta,
    RoutedAnswer,
    Router,
    RouterConfig,
    StepDone,
    ToolCallDone,
)
from langchain_glimprouter.core.engine import route
from langchain_glimprouter.core.ops import Close, Emit, Open, Read, Request
from langchain_glimprouter.core.settings import RouterSettings, ServerFacts, route_settings
from langchain_glimprouter.core.tool_calls import InvalidCall, ParsedCall
from langchain_glimprouter.core.wire import parse_chunk
from langchain_glimprouter.errors import InvalidArgumentError
from scripted_server import CHATML, Script
from tests.support.fake_driver import FakeClient, FakeServer
from tests.support.pair import H_INIT, LARGE_STEPS, SMALL_STEPS

QUESTION = [{"role": "user", "content": "What is 6 times 7?"}]


def scripted_router(
    small: Script | None = None, large: Script | None = None, **settings: Any
) -> tuple[Router, FakeServer, FakeServer]:
    """A Router over two scripted servers, their clients given through ``client_factory``."""
    servers = {
        "small": FakeServer(small or Script(steps=SMALL_STEPS, h_init=H_INIT), model="small-m"),
        "large": FakeServer(
            large or Script(steps=LARGE_STEPS, answer="It is 42."), model="large-m"
        ),
    }

    def clients(
        role: str, backend: Backend, *, api_key: SecretStr | None, timeout: float, base_url: str
    ) -> FakeClient:
        return FakeClient(role, servers[role], backend)

    settings.setdefault("threshold", 1.0)
    router = Router(
        small=Backend(base_url=servers["small"].base_url, model="small-m"),
        large=Backend(base_url=servers["large"].base_url, model="large-m"),
        client_factory=clients,
        **settings,
    )
    return router, servers["small"], servers["large"]


def test_run_routes_each_step_by_its_glimpse() -> None:
    router, small, large = scripted_router()
    answer = router.run(QUESTION)
    models = [step.model for step in answer.record.steps]
    assert models == ["small" if h <= 1.0 else "large" for h in H_INIT[:4]]
    assert answer.content == "It is 42."
    assert answer.reasoning == "\n\n".join(
        [SMALL_STEPS[0], LARGE_STEPS[1], SMALL_STEPS[2], LARGE_STEPS[3]]
    )
    assert answer.model == "large-m"
    assert answer.finish_reason == "stop"
    assert (answer.tool_calls, answer.invalid_tool_calls) == ([], [])
    record = answer.record
    assert answer.usage.output_tokens == record.tokens["small"] + record.tokens["large"]
    assert answer.usage.total_tokens == answer.usage.input_tokens + answer.usage.output_tokens
    assert record.requests == {"small": len(small.requests), "large": len(large.requests)}


def test_stream_yields_the_chain_the_steps_and_the_answer_in_order() -> None:
    router, _, _ = scripted_router()
    events = list(router.stream(QUESTION))
    assert isinstance(events[-1], RoutedAnswer)
    kinds = [type(e).__name__ for e in events]
    last_step = max(i for i, e in enumerate(events) if isinstance(e, StepDone))
    first_answer = min(i for i, e in enumerate(events) if isinstance(e, AnswerDelta))
    assert last_step < first_answer, kinds
    chain = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    answer = "".join(e.text for e in events if isinstance(e, AnswerDelta))
    final = events[-1]
    assert chain == final.reasoning
    assert answer == final.content
    assert [e.record for e in events if isinstance(e, StepDone)] == final.record.steps


async def test_the_async_twins_give_the_same_answer() -> None:
    router, _, _ = scripted_router(seed=3)
    answer = await router.arun(QUESTION)
    events = [event async for event in router.astream(QUESTION)]
    final = events[-1]
    assert isinstance(final, RoutedAnswer)
    assert (final.content, final.reasoning) == (answer.content, answer.reasoning)
    assert [s.model for s in final.record.steps] == [s.model for s in answer.record.steps]


def test_per_call_settings_override_the_router_s_for_that_call_only() -> None:
    router, _, _ = scripted_router()
    assert {s.model for s in router.run(QUESTION, threshold=0).record.steps} == {"large"}
    assert {s.model for s in router.run(QUESTION, threshold=math.inf).record.steps} == {"small"}
    assert router.run(QUESTION).record.threshold == 1.0


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"threshold": -1}, "threshold"),
        ({"probe": "fast"}, "probe"),
        ({"stop_sequences": ["x"]}, "stop_sequences"),
        ({"tools": [{"type": "function"}]}, "tools"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"response_format": {"type": "xml"}}, "response_format"),
    ],
)
def test_a_bad_argument_fails_before_any_request(kwargs: dict[str, Any], param: str) -> None:
    router, small, large = scripted_router()
    with pytest.raises(InvalidArgumentError) as caught:
        router.stream(QUESTION, **kwargs)
    assert caught.value.param == param
    assert small.requests == large.requests == []


@pytest.mark.parametrize(
    ("messages", "where"),
    [
        ([], "non-empty"),
        ([{"role": "robot", "content": "hi"}], "role"),
        ([{"role": "user"}], "no 'content'"),
        ([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}], "text only"),
    ],
)
def test_messages_the_router_cannot_take_are_refused(
    messages: list[dict[str, Any]], where: str
) -> None:
    router, _, _ = scripted_router()
    with pytest.raises(InvalidArgumentError, match=where) as caught:
        router.run(messages)
    assert caught.value.param == "messages"


def test_openai_message_shapes_are_accepted() -> None:
    """What OpenAI clients send in a tool loop: an assistant message that calls a tool with no
    ``content`` key (LiteLLM) or a null one, content as text parts, ``name``, a tool result."""
    router, small, _ = scripted_router(small=Script(steps=SMALL_STEPS, h_init=0.1))
    call = {"id": "c1", "type": "function",
            "function": {"name": "lookup", "arguments": '{"q": "6*7"}'}}  # fmt: skip
    messages = [
        {"role": "developer", "content": "Be brief."},
        {
            "role": "user",
            "name": "ann",
            "content": [{"type": "text", "text": "What is 6 times 7?"}],
        },
        {"role": "assistant", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "42"}]},
    ]
    answer = router.run(messages)
    assert answer.content == "It is 42."
    prompt = small.requests[0].params["prompt"]
    assert "What is 6 times 7?" in prompt
    assert "Be brief." in prompt


CITY = {"type": "object", "properties": {"city": {"type": "string"}}}
WEATHER = {"type": "function", "function": {"name": "weather", "parameters": CITY}}


def test_tool_calls_arrive_whole_and_in_the_answer() -> None:
    call = '<tool_call>{"name": "weather", "arguments": {"city": "Paris"}}</tool_call>'
    large = Script(steps=LARGE_STEPS, answer=f"Let me check. {call}")
    router, _, _ = scripted_router(large=large)
    events = list(router.stream(QUESTION, tools=[WEATHER]))
    calls = [e.call for e in events if isinstance(e, ToolCallDone)]
    final = events[-1]
    assert isinstance(final, RoutedAnswer)
    assert [c.name for c in calls if isinstance(c, ParsedCall)] == ["weather"]
    assert final.tool_calls == calls
    assert final.tool_calls[0].args == {"city": "Paris"}
    assert final.content == "Let me check."
    assert call in final.answer_text


def test_a_forced_call_that_is_missing_is_an_invalid_call_saying_why() -> None:
    large = Script(steps=LARGE_STEPS, answer="no call here")
    router, _, _ = scripted_router(large=large)
    answer = router.run(QUESTION, tools=[WEATHER], tool_choice="required")
    assert answer.tool_calls == []
    assert [type(c) for c in answer.invalid_tool_calls] == [InvalidCall]
    assert "forced a tool call" in (answer.record.answer_error or "")


def test_rebind_shares_what_the_router_learned() -> None:
    router, _, _ = scripted_router()
    router.run(QUESTION)
    other = router.rebind(RouterConfig(**{**dict(router.config), "threshold": 0.0}))
    assert other.facts is router.facts
    assert other.clients("small") is router.clients("small")
    assert {s.model for s in other.run(QUESTION).record.steps} == {"large"}


def test_the_router_and_its_config_take_the_same_fields_as_the_chat_model() -> None:
    from langchain_glimprouter import GlimpRouterChatModel

    ours = set(RouterConfig.model_fields)
    assert ours <= set(GlimpRouterChatModel.model_fields)
    for name in RouterSettings.model_fields:
        assert RouterConfig.model_fields[name].default == (
            GlimpRouterChatModel.model_fields[name].default
        ), name
    router, _, _ = scripted_router()
    with pytest.raises(InvalidArgumentError, match="give a RouterConfig or its fields"):
        Router(router.config, threshold=1)


def test_importing_the_router_loads_no_langchain_nor_llama_index() -> None:
    code = (
        "import sys, json\n"
        "from langchain_glimprouter.router import Router\n"
        "from langchain_glimprouter import Router, RoutedAnswer, errors\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(json.loads(out.stdout))
    assert not {"langchain_core", "langchain", "llama_index"} & loaded


# -- the core's program, stepped by hand ----------------------------------------------------------


def glimpse(token: str, entropy_high: bool) -> dict[str, Any]:
    """A streamed completions chunk whose first token has a top-2 distribution: flat (ln 2 nats)
    or all but certain."""
    top = {token: math.log(0.5), "other": math.log(0.5)} if entropy_high else {token: 0.0}
    return {"choices": [{"text": token, "logprobs": {"tokens": [token], "top_logprobs": [top],
            "token_logprobs": [top[token]]}, "finish_reason": None}]}  # fmt: skip


def end(text: str, reason: str = "stop") -> dict[str, Any]:
    return {"choices": [{"text": text, "finish_reason": reason, "stop_reason": "\n\n"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 2}}  # fmt: skip


def step_by_hand(entropy_high: bool) -> list[Any]:
    """The operations the program yields for one conversation whose first glimpse is flat or
    certain, answered by hand: the first step is the glimpsed one, then the chain ends."""
    servers = {role: Backend(base_url=f"http://{role}.invalid/v1", model=role,
                             chat_template=CHATML) for role in ("small", "large")}  # fmt: skip
    settings = route_settings(RouterSettings(threshold=0.5).settings_dict())
    program = route(QUESTION, servers, settings, ServerFacts())
    streams: dict[str, Callable[[], dict[str, Any] | None]] = {}
    ops: list[Any] = []
    value: Any = None
    opened: list[str] = []
    while True:
        try:
            op = program.send(value)
        except StopIteration:
            return ops
        ops.append(op)
        value = None
        if isinstance(op, Request):
            value = {"data": []}
        elif isinstance(op, Open):
            opened.append(op.role)
            if len(opened) == 1:  # the small glimpse of step 0
                chunks = [glimpse("Six", entropy_high), end(" times seven")]
            elif len(opened) == 2 and op.role == "large":  # the large model's step 0
                chunks = [glimpse("Seven", False), end(" sixes")]
            elif op.body.get("stop") == ["\n\n"]:  # the next step: the chain ends
                chunks = [glimpse("</think>", False), end("", "stop")]
            else:  # the answer
                chunks = [glimpse("42", False), end(".")]
            queue = [parse_chunk(c) for c in chunks]
            streams["open"] = lambda q=queue: q.pop(0) if q else None
        elif isinstance(op, Read):
            value = streams["open"]()


def io_until_first_step(ops: list[Any]) -> list[str]:
    """The stream operations before the first finished step: "Open small", "Read", "Close"."""
    out = []
    for op in ops:
        if isinstance(op, Emit) and isinstance(op.event, StepDone):
            return out
        if isinstance(op, (Open, Read, Close)):
            out.append(f"Open {op.role}" if isinstance(op, Open) else type(op).__name__)
    raise AssertionError("no step finished")


def first_step(ops: list[Any]) -> Any:
    return next(op.event.record for op in ops if isinstance(op, Emit)
                and isinstance(op.event, StepDone))  # fmt: skip


def test_a_certain_glimpse_keeps_its_stream_and_a_flat_one_is_closed_for_the_large_model() -> None:
    certain = step_by_hand(entropy_high=False)
    # the glimpse is the start of the small model's step: the same stream, read to its end
    assert io_until_first_step(certain) == ["Open small", "Read", "Read", "Read"]
    step = first_step(certain)
    assert (step.model, step.text, step.first_token) == ("small", "Six times seven", "Six")
    assert step.h_init == pytest.approx(0.0)

    flat = step_by_hand(entropy_high=True)
    # aborted at the glimpse; the large model writes the step from the same context
    assert io_until_first_step(flat) == ["Open small", "Read", "Close", "Open large",
                                         "Read", "Read", "Read"]  # fmt: skip
    large = next(op for op in flat if isinstance(op, Open) and op.role == "large")
    small = next(op for op in flat if isinstance(op, Open))
    assert large.body["prompt"] == small.body["prompt"]  # one template here: the same text
    assert large.body["prompt"].endswith("<think>\n")
    step = first_step(flat)
    assert (step.model, step.text, step.first_token) == ("large", "Seven sixes", "Six")
    assert step.h_init == pytest.approx(math.log(2))
