"""What GlimpRouterChatModel declares to LangChain's standard test suites (unit and
integration), in one place."""

from __future__ import annotations

from langchain_glimprouter import GlimpRouterChatModel


class StandardCapabilities:
    """The capabilities GlimpRouterChatModel declares to LangChain's standard suites."""

    @property
    def chat_model_class(self) -> type[GlimpRouterChatModel]:
        return GlimpRouterChatModel

    @property
    def has_tool_choice(self) -> bool:
        return True

    @property
    def has_structured_output(self) -> bool:
        return True

    @property
    def supports_json_mode(self) -> bool:
        return True

    # Skipped by the suite, each for the reason given here (listed in docs/compatibility.md):
    @property
    def supports_image_inputs(self) -> bool:
        return False  # text only: an image part raises InvalidArgumentError before any request

    @property
    def supports_image_tool_message(self) -> bool:
        return False  # text only, as above

    @property
    def supports_pdf_inputs(self) -> bool:
        return False  # text only, as above

    @property
    def supports_pdf_tool_message(self) -> bool:
        return False  # text only, as above

    @property
    def supports_audio_inputs(self) -> bool:
        return False  # text only, as above

    @property
    def supports_anthropic_inputs(self) -> bool:
        return False  # Anthropic-format image/document blocks are not text either

    @property
    def enable_vcr_tests(self) -> bool:
        return False  # test_stream_time replays recorded HTTP; ours runs on live local servers
