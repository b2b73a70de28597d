"""The Router alone: GlimpRouter on OpenAI-style messages, with no LangChain loaded.

``Router.stream`` yields each piece as it comes (the chain's deltas, each finished step, the
answer's deltas and tool calls) and ends with the ``RoutedAnswer``; ``Router.run`` returns that
answer; ``arun``/``astream`` are the async twins. Per-call settings override the router's.
"""

import asyncio
import sys

from _servers import backends, threshold

from langchain_glimprouter import AnswerDelta, RoutedAnswer, Router, StepDone

small, large = backends()
router = Router(
    small=small, large=large, threshold=threshold(), max_reasoning_tokens=256, max_tokens=128
)
messages = [{"role": "user", "content": "Find the sum of all positive divisors of 2024."}]

answer = None
for event in router.stream(messages):
    if isinstance(event, StepDone):
        step = event.record
        print(f"step {step.index}: {step.model:<5} H_init={step.h_init}  {step.text[:50]!r}")
    elif isinstance(event, AnswerDelta):
        print(event.text, end="", flush=True)
    elif isinstance(event, RoutedAnswer):
        answer = event
assert answer is not None
print()
print("answer:", answer.content)
print(
    f"{answer.record.n_steps} steps, intervention rate {answer.record.intervention_rate:.0%}, "
    f"usage {answer.usage}"
)

# The same question with every step on the large model (threshold=0), asynchronously.
baseline = asyncio.run(router.arun(messages, threshold=0))
print(f"large model alone: {baseline.record.n_large_steps} of {baseline.record.n_steps} steps")

assert "langchain_core" not in sys.modules, "the Router loads no LangChain"
print("langchain_core loaded: no")
