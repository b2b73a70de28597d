"""GlimpRouterChatModel's LangChain model profile (``BaseChatModel.profile``): what agents and
``init_chat_model`` users read about its capabilities, in agreement with what it declares to the
standard suites and with langchain-core's ``ModelProfile`` keys."""

from __future__ import annotations

import warnings
from typing import get_type_hints

import pytest
from langchain_core.language_models.model_profile import ModelProfile

from langchain_glimprouter import Backend, GlimpRouterChatModel
from tests.support.standard_capabilities import StandardCapabilities

SMALL = Backend(base_url="http://127.0.0.1:9/v1", model="small-m")
LARGE = Backend(base_url="http://127.0.0.1:9/v1", model="large-m")


def model(**fields: object) -> GlimpRouterChatModel:
    return GlimpRouterChatModel(small=SMALL, large=LARGE, **fields)  # type: ignore[arg-type]


def test_the_profile_says_what_the_router_offers() -> None:
    profile = model().profile
    assert profile is not None
    assert {key for key, value in profile.items() if value is True} == {
        "text_inputs",
        "text_outputs",
        "reasoning_output",
        "tool_calling",
        "tool_choice",
        "tool_call_streaming",
        "structured_output",
        "temperature",
    }
    assert not any(
        key.endswith(("_inputs", "_outputs", "_tool_message")) and value
        for key, value in profile.items()
        if key not in {"text_inputs", "text_outputs"}
    )


def test_the_context_window_is_left_unknown_until_given() -> None:
    # Learnt from the server's /v1/models at the first call; nothing is known at construction.
    assert "max_input_tokens" not in (model().profile or {})
    given: ModelProfile = {**(model().profile or {}), "max_input_tokens": 32768}
    assert model(profile=given).profile == given


def test_every_key_is_one_langchain_core_declares() -> None:
    declared = set(get_type_hints(ModelProfile))
    assert set(model().profile or {}) <= declared
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # langchain-core warns on keys it does not know
        model()


def test_the_profile_agrees_with_the_standard_suites_declarations() -> None:
    profile = model().profile or {}
    declared = StandardCapabilities()
    assert profile["tool_choice"] is declared.has_tool_choice
    assert profile["structured_output"] is declared.has_structured_output
    assert profile["image_inputs"] is declared.supports_image_inputs
    assert profile["image_tool_message"] is declared.supports_image_tool_message
    assert profile["pdf_inputs"] is declared.supports_pdf_inputs
    assert profile["pdf_tool_message"] is declared.supports_pdf_tool_message
    assert profile["audio_inputs"] is declared.supports_audio_inputs


@pytest.mark.parametrize(
    "derived",
    [
        lambda m: m.model_copy(update={"threshold": 0.2}),
        lambda m: m.bind(threshold=0.2).bound,  # type: ignore[attr-defined]
        lambda m: m.bind_tools([]).bound,  # type: ignore[attr-defined]
    ],
    ids=["model_copy", "bind", "bind_tools"],
)
def test_copies_and_bindings_keep_the_profile(derived: object) -> None:
    original = model()
    assert derived(original).profile == original.profile  # type: ignore[operator]


def test_the_profile_is_not_part_of_the_models_identity() -> None:
    # BaseChatModel excludes it from serialisation: the cache key and traces do not change.
    assert "profile" not in model().model_dump()
