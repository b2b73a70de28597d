"""LlamaIndex: GlimpRouterLLM on the two servers, one chat, and a handler printing each step.

Needs the extra: pip install "langchain-glimprouter[llama-index]". (Not named llama_index.py:
a script of that name would shadow the llama_index package for itself.)
"""

from typing import Any

from _servers import backends, threshold
from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent

from langchain_glimprouter import Router
from langchain_glimprouter.llama_index import GlimpRouterLLM, GlimpRouterStepEvent


class PrintSteps(BaseEventHandler):
    """Prints every finished reasoning step as the router decides it."""

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        if isinstance(event, GlimpRouterStepEvent):
            print(f"step {event.index} by the {event.model} model, H_init={event.h_init}")


get_dispatcher().add_event_handler(PrintSteps())
small, large = backends()
router = Router(
    small=small, large=large, threshold=threshold(), max_reasoning_tokens=256, max_tokens=96
)
llm = GlimpRouterLLM(router=router)  # no LangChain on this path
question = ChatMessage(role=MessageRole.USER, content="How many minutes are there in a week?")
response = llm.chat([question])

record = response.raw["glimprouter"]
print("answer:", response.message.content)
print(f"{record['n_steps']} steps, intervention rate {record['intervention_rate']:.0%}")
print("usage:", {k: v for k, v in response.additional_kwargs.items() if k.endswith("_tokens")})
