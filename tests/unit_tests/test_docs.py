"""The documentation's relative links lead somewhere: the file exists, and so does the heading."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
CODE = re.compile(r"```.*?```", re.S)


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    found = set()
    for line in CODE.sub("", page.read_text(encoding="utf-8")).splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            found.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target in LINK.findall(CODE.sub("", page.read_text(encoding="utf-8"))):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target}: no file {linked.relative_to(ROOT)}")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target}: no heading #{anchor} in {linked.name}")
    assert not broken, f"{page.name}: " + "; ".join(broken)


IMPORT = re.compile(r"^\s*from (langchain_glimprouter[\w.]*) import ([^\n(]+|\([^)]*\))", re.M)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_imports_in_code_blocks_resolve(page: Path) -> None:
    """A name the docs import from the package is there (layouts change; examples must not)."""
    missing = []
    for block in CODE.findall(page.read_text(encoding="utf-8")):
        for module, names in IMPORT.findall(block):
            for name in re.findall(r"\w+(?: as \w+)?", names.strip("()")):
                name = name.split(" as ")[0]
                try:
                    found = importlib.import_module(module)
                except ImportError:
                    missing.append(module)
                    break
                if not hasattr(found, name):
                    try:
                        importlib.import_module(f"{module}.{name}")
                    except ImportError:
                        missing.append(f"{module}.{name}")
    assert not missing, f"{page.name}: " + ", ".join(missing)


def test_the_configuration_table_lists_every_field() -> None:
    from langchain_core.language_models import BaseChatModel

    from langchain_glimprouter import GlimpRouterChatModel

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    rows = " ".join(line.split("|")[1] for line in readme.splitlines() if line.startswith("| `"))
    own = set(GlimpRouterChatModel.model_fields) - set(BaseChatModel.model_fields)
    assert {name for name in own if f"`{name}`" not in rows} == set()


def test_the_docs_the_code_names_exist() -> None:
    named = set()
    for source in (ROOT / "langchain_glimprouter").rglob("*.py"):
        named |= set(re.findall(r"(?<![\w/.])docs/([\w-]+\.md)", source.read_text("utf-8")))
    assert named
    assert {page for page in named if not (ROOT / "docs" / page).exists()} == set()
