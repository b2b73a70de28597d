"""The step events of GlimpRouterLLM, collected from LlamaIndex's root dispatcher (unit and
integration tests)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent

from langchain_glimprouter.llama_index import GlimpRouterStepEvent


class Steps(BaseEventHandler):
    """Collects the step events that reach the root dispatcher."""

    seen: list[GlimpRouterStepEvent]

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        if isinstance(event, GlimpRouterStepEvent):
            self.seen.append(event)


@contextmanager
def listening() -> Iterator[Steps]:
    """A :class:`Steps` handler on the root dispatcher, removed on exit."""
    root = get_dispatcher()
    handler = Steps(seen=[])
    root.add_event_handler(handler)
    try:
        yield handler
    finally:
        root.event_handlers.remove(handler)
