"""An agent with two tools: langchain's create_agent over the router.

The first model turn must call a tool (tool_choice="any"); after the tool results the model
answers freely. Prints every routed step as it finishes, every tool call and tool result, and
the final answer.
"""

import ast
import operator
from collections.abc import Callable
from typing import Any, Literal

from _servers import router
from langchain.agents import create_agent
from langchain.agents.middleware import (
    ModelCallLimitMiddleware,
    ModelRequest,
    ModelResponse,
    wrap_model_call,
)
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import tool

from langchain_glimprouter import STEP_EVENT

_OPERATORS: dict[type, Callable[..., float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}


def _evaluate(node: ast.AST) -> float:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > 100:  # 9 ** 9 ** 9 would never end
            raise ValueError("exponent too large")
        return _OPERATORS[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_evaluate(node.operand))
    raise ValueError(f"unsupported expression: {ast.dump(node)[:60]}")


@tool
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression with + - * / ** and parentheses, e.g. "12 * 7"."""
    try:
        return f"{_evaluate(ast.parse(expression, mode='eval')):g}"
    except (SyntaxError, ValueError, ZeroDivisionError, OverflowError) as exc:
        # A tool result the model can read, rather than an exception that ends the agent.
        return f"error: cannot evaluate {expression!r} ({exc})"


_METERS = {"m": 1.0, "km": 1000.0, "mile": 1609.344, "foot": 0.3048, "inch": 0.0254}


@tool
def convert_length(
    value: float,
    from_unit: Literal["m", "km", "mile", "foot", "inch"],
    to_unit: Literal["m", "km", "mile", "foot", "inch"],
) -> str:
    """Convert a length from one unit to another."""
    return f"{value:g} {from_unit} = {value * _METERS[from_unit] / _METERS[to_unit]:.4g} {to_unit}"


@wrap_model_call
def call_a_tool_first(
    request: ModelRequest, handler: Callable[[ModelRequest], ModelResponse]
) -> ModelResponse:
    """Force a tool call until a tool has answered; then let the model answer freely.

    SmolLM2-135M never calls a tool on its own. tool_choice="any" makes the router constrain
    the answer with vLLM's structured outputs to a call of one of the tools (the reasoning
    before it is routed as usual), so the call is always well-formed. Forcing every turn would
    loop forever, so once a tool result is in the conversation the choice goes back to "auto".
    """
    answered = any(isinstance(m, ToolMessage) for m in request.messages)
    return handler(request.override(tool_choice="auto" if answered else "any"))


class PrintSteps(BaseCallbackHandler):
    """Prints each model call's tool_choice, and each routed step as it finishes (the
    router's glimprouter_step event)."""

    def on_chat_model_start(self, serialized: Any, messages: Any, **kwargs: Any) -> None:
        choice = kwargs.get("invocation_params", {}).get("tool_choice")
        print(f"model call (tool_choice={choice}):")

    def on_custom_event(self, name: str, data: Any, **kwargs: Any) -> None:
        if name == STEP_EVENT:
            h = "-" if data["h_init"] is None else f"{data['h_init']:.3f}"
            print(f"  step {data['index']} by the {data['model']} model, H_init={h}")


agent = create_agent(
    # Small budgets keep it fast on CPU. The answer's budget must also hold a whole forced call:
    # one cut at max_tokens (a tiny model may write a long number) is an invalid tool call.
    router(max_reasoning_tokens=64, max_tokens=96),
    tools=[calculator, convert_length],
    system_prompt="You are a helpful assistant. Use the tools for arithmetic and units.",
    # A tiny model may keep calling tools after "auto": stop after three model turns.
    middleware=[call_a_tool_first, ModelCallLimitMiddleware(run_limit=3)],
)

print("The tiny local model shows the wiring (routing, tool calls, results), not reasoning.")
question = "How many meters are 3 miles? And what is 12 * 7?"
print("question:", question)
final = None
for update in agent.stream(
    {"messages": [{"role": "user", "content": question}]},
    config={"callbacks": [PrintSteps()]},
    stream_mode="updates",
):
    for change in update.values():
        for message in (change or {}).get("messages", []):
            if isinstance(message, AIMessage):
                for call in message.tool_calls:
                    print(f"tool call: {call['name']} {call['args']}")
                for bad in message.invalid_tool_calls:
                    print(f"invalid tool call: {bad['args']!r} ({bad['error']})")
                if not message.tool_calls:
                    final = message
            elif isinstance(message, ToolMessage):
                print(f"tool result: {message.name} -> {message.content}")
print("answer:", final.text.strip() if final is not None else None)
