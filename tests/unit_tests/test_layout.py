"""The package's layout (DESIGN.md §10): data flows one way, surfaces → Router → core, with no
import cycle (``TYPE_CHECKING`` and function-local imports counted) and no surface reaching
another's privates."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import import_graph  # noqa: E402

LANGCHAIN_SURFACE = {
    "langchain_glimprouter.chat_models",
    "langchain_glimprouter._convert",
    "langchain_glimprouter._callbacks",
    "langchain_glimprouter._structured",
    "langchain_glimprouter._tracing",
}
TOOLING = ("langchain_glimprouter.cli", "langchain_glimprouter.calibration")
"""Tooling may use the chat model, as any user does (its public name), nothing private."""


def test_the_import_graph_has_no_cycle() -> None:
    assert import_graph.cycles(import_graph.edges()) == []
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "import_graph.py")], capture_output=True, text=True
    )
    assert (out.returncode, out.stdout.strip()) == (0, "none")


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert import_graph.cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [
        ["a", "b", "c"]
    ]


def test_only_the_langchain_surface_and_tooling_import_it() -> None:
    graph = import_graph.edges()
    for module, targets in graph.items():
        if module in LANGCHAIN_SURFACE:
            continue
        reached = targets & LANGCHAIN_SURFACE
        if module.startswith(TOOLING) or module == "langchain_glimprouter":  # public names
            reached -= {"langchain_glimprouter.chat_models"}
        assert not reached, f"{module} imports {sorted(reached)}"


def _private_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
            "langchain_glimprouter"
        ):
            parts = (node.module or "").split(".")
            names = [alias.name for alias in node.names]
            found += [f"{node.module}.{n}" for n in names if n.startswith("_")]
            if any(p.startswith("_") for p in parts):
                found.append(str(node.module))
    return found


@pytest.mark.parametrize(
    "folder", ["langchain_glimprouter/cli", "benchmarks", "examples", "scripts"]
)
def test_tooling_imports_public_names_only(folder: str) -> None:
    private = {
        str(path.relative_to(ROOT)): names
        for path in sorted((ROOT / folder).rglob("*.py"))
        if (names := _private_imports(path))
    }
    assert not private, private
