"""LangChain's standard unit tests for chat models (package ``langchain-tests``)."""

from __future__ import annotations

from typing import Any

from langchain_tests.unit_tests import ChatModelUnitTests

from langchain_glimprouter import Backend
from tests.support.standard_capabilities import StandardCapabilities


class TestGlimpRouterChatModelUnit(StandardCapabilities, ChatModelUnitTests):
    @property
    def chat_model_params(self) -> dict[str, Any]:
        # Nothing listens here: the unit suite never sends a request.
        return {
            "small": Backend(base_url="http://127.0.0.1:9/v1", model="small-m"),
            "large": Backend(base_url="http://127.0.0.1:9/v1", model="large-m"),
        }

    @property
    def model_override_value(self) -> str:
        return "another-large-model"
