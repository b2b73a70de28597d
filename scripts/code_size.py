"""Lines per module and the largest functions of the package (or of another copy of it).

    python scripts/code_size.py                   # this checkout's langchain_glimprouter/
    python scripts/code_size.py /tmp/old/langchain_glimprouter --top 15

A function's lines run from its ``def`` to its last line (decorators and docstring included).
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent / "langchain_glimprouter"


def functions(path: Path) -> list[tuple[int, str]]:
    """``(lines, qualified name)`` of every function and method in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    out: list[tuple[int, str]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = (child.end_lineno or child.lineno) - child.lineno + 1
                out.append((lines, f"{prefix}{child.name}"))
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")

    visit(tree, "")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", nargs="?", type=Path, default=HERE)
    parser.add_argument("--top", type=int, default=10, help="how many functions to list")
    args = parser.parse_args()
    root: Path = args.root
    sizes, largest = [], []
    for path in sorted(root.rglob("*.py")):
        name = str(path.relative_to(root))
        sizes.append((len(path.read_text().splitlines()), name))
        largest += [(lines, f"{name}::{func}") for lines, func in functions(path)]
    total = sum(n for n, _ in sizes)
    print(
        f"{len(sizes)} modules, {total} lines; over 400: "
        + ", ".join(f"{name} ({n})" for n, name in sorted(sizes, reverse=True) if n > 400)
        or "none"
    )
    for n, name in sorted(sizes, reverse=True):
        print(f"{n:6d}  {name}")
    print(f"\nlargest {args.top} functions:")
    for n, name in sorted(largest, reverse=True)[: args.top]:
        print(f"{n:6d}  {name}")


if __name__ == "__main__":
    main()
