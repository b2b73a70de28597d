"""The tool and the schema that the forced-answer tests (unit and integration) ask for."""

from __future__ import annotations

from langchain_core.tools import tool
from pydantic import BaseModel


@tool
def get_weather(city: str, days: int) -> str:
    """The weather in a city for some days."""
    return f"Sunny in {city}"


class Report(BaseModel):
    """A weather report."""

    city: str
    degrees: int
