"""``with_structured_output``: the answer constrained to a schema by the server, parsed, and
refused with :class:`~langchain_glimprouter.IncompleteAnswerError` when the router found it cut
short (the parsers would read partial JSON leniently)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any, Literal, cast

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessageChunk,
    BaseMessage,
)
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.output_parsers.openai_tools import (
    JsonOutputKeyToolsParser,
    PydanticToolsParser,
)
from langchain_core.runnables import (
    Runnable,
    RunnableConfig,
    RunnableGenerator,
    RunnableLambda,
    RunnableMap,
)
from langchain_core.utils.function_calling import convert_to_json_schema, convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass

from langchain_glimprouter.errors import IncompleteAnswerError, InvalidArgumentError
from langchain_glimprouter.records import PROVIDER

StructuredOutputMethod = Literal["function_calling", "json_schema", "json_mode"]


class AnswerCheck:
    """Watches a model's output (one message, or chunks) for the routing record's verdict."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.error: str | None = None

    def see(self, message: BaseMessage) -> None:
        self.text.append(message.text)
        # A chunk's invalid calls are derived from its tool-call chunks: read one or the other.
        calls = (
            message.tool_call_chunks
            if isinstance(message, AIMessageChunk)
            else getattr(message, "invalid_tool_calls", [])
        )
        self.text += [c["args"] or "" for c in calls]
        record = message.response_metadata.get(PROVIDER)
        if isinstance(record, dict) and record.get("answer_error"):
            self.error = str(record["answer_error"])

    def check(self) -> None:
        if self.error is not None:
            raise IncompleteAnswerError(
                f"the structured answer is incomplete: {self.error}.", answer="".join(self.text)
            )


def with_parsing_error(parser: Runnable[Any, Any]) -> Runnable[dict[str, Any], dict[str, Any]]:
    """``{"raw": message}`` to ``{"raw", "parsed", "parsing_error"}`` (include_raw=True)."""

    def parse(inputs: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
        try:
            parsed = parser.invoke(inputs["raw"], config)
        except Exception as exc:
            return {"raw": inputs["raw"], "parsed": None, "parsing_error": exc}
        return {"raw": inputs["raw"], "parsed": parsed, "parsing_error": None}

    async def aparse(inputs: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
        try:
            parsed = await parser.ainvoke(inputs["raw"], config)
        except Exception as exc:
            return {"raw": inputs["raw"], "parsed": None, "parsing_error": exc}
        return {"raw": inputs["raw"], "parsed": parsed, "parsing_error": None}

    return RunnableLambda(parse, afunc=aparse, name="parse_with_raw")


def complete_answers(messages: Iterator[BaseMessage]) -> Iterator[BaseMessage]:
    """Pass the model's output through; raise IncompleteAnswerError at its end if the router
    found the constrained answer incomplete."""
    watch = AnswerCheck()
    for message in messages:
        watch.see(message)
        yield message
    watch.check()


async def acomplete_answers(messages: AsyncIterator[BaseMessage]) -> AsyncIterator[BaseMessage]:
    watch = AnswerCheck()
    async for message in messages:
        watch.see(message)
        yield message
    watch.check()


def structured_output(
    model: BaseChatModel,
    schema: dict[str, Any] | type | None,
    method: StructuredOutputMethod,
    include_raw: bool,
) -> Runnable[Any, dict[str, Any] | Any]:
    """The runnable of ``model.with_structured_output(schema, method=..., include_raw=...)``."""
    if method not in ("function_calling", "json_schema", "json_mode"):
        raise InvalidArgumentError(
            f"method must be 'function_calling', 'json_schema' or 'json_mode' (got {method!r})."
        )
    if schema is None and method != "json_mode":
        raise InvalidArgumentError(f"method={method!r} needs a schema.")
    pydantic = isinstance(schema, type) and is_basemodel_subclass(schema)
    traced = {"kwargs": {"method": method}, "schema": schema}
    parser: Runnable[Any, Any]
    llm: Runnable[Any, Any]
    if method == "function_calling":
        tool = convert_to_openai_tool(cast(Any, schema))
        name = tool["function"]["name"]
        llm = model.bind_tools([tool], tool_choice=name, ls_structured_output_format=traced)
        parser = (
            PydanticToolsParser(tools=[cast(Any, schema)], first_tool_only=True)
            if pydantic
            else JsonOutputKeyToolsParser(key_name=name, first_tool_only=True)
        )
    else:
        response_format: dict[str, Any] = {"type": "json_object"}
        if method == "json_schema":
            json_schema = convert_to_json_schema(cast(Any, schema))
            response_format = {
                "type": "json_schema",
                "json_schema": {"name": json_schema.get("title", "output"), "schema": json_schema},
            }
        llm = model.bind(response_format=response_format, ls_structured_output_format=traced)
        parser = (
            PydanticOutputParser(pydantic_object=cast(Any, schema))
            if pydantic
            else JsonOutputParser()
        )
    # The parsers would read what they can of cut JSON (partial JSON is parsed leniently): an
    # answer the router found incomplete raises IncompleteAnswerError first.
    checked = RunnableGenerator(complete_answers, acomplete_answers, name="complete_answer")
    if not include_raw:
        return llm | checked | parser
    # One step that catches the parser's error, so that parsing_error holds it in every mode (a
    # fallback would catch it only before a stream's first chunk).
    return RunnableMap(raw=llm) | with_parsing_error(checked | parser)
