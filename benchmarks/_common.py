"""What the benchmarks share: where results go, the header of a results file, the load average,
medians, Markdown tables, rounding and writing the JSON, and loading one module of the package.

Standard library only: ``entropy_fidelity`` and ``tiktoken_counts`` run with the Python of the
vLLM environment, which has neither LangChain nor the scripted server's dependencies.
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HOME = Path(os.environ.get("GLIMPROUTER_HOME", Path.home() / ".cache" / "glimprouter"))
TINY_MODEL_DIR = HOME / "smollm2-135m"  # langchain_glimprouter.cli.servers.tiny_model_dir()


def results_path(name: str) -> Path:
    """Where benchmark ``name`` writes its numbers by default."""
    return ROOT / "benchmarks" / "results" / f"{name}.json"


# -- the header of a results file ----------------------------------------------------------------


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()


def git_commit() -> str:
    """The repository's commit (``+dirty`` with uncommitted changes), or "unknown"."""
    try:
        return _git("rev-parse", "HEAD") + ("+dirty" if _git("status", "--porcelain") else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run_header(command: str | None = None, **beside_python: str) -> dict[str, Any]:
    """command (default: this process's own command line), commit, date, python,
    ``beside_python`` (the versions of what runs with it, e.g. torch), platform: the first keys
    of a results file."""
    return {
        "command": shlex.join(sys.orig_argv) if command is None else command,
        "commit": git_commit(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        **beside_python,
        "platform": platform.platform(),
    }


CLIENT_PACKAGES = ("langchain-glimprouter", "langchain-core", "openai", "httpx2", "httpcore2")
"""The distributions the router's requests go through (the openai SDK over httpx2/httpcore2),
whose versions a client measurement records."""


def package_versions(names: Iterable[str]) -> dict[str, str]:
    """Installed versions of the distributions ``names`` ("not installed" for a missing one)."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str] = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def load_summary(loads: Sequence[Sequence[float]]) -> str:
    """The load averages sampled during a run (start first, end last), for the report."""
    return (
        f"load average (1, 5, 15 min) at start {loads[0]}, at end {loads[-1]}, 1-min range "
        f"during the run {min(x[0] for x in loads)}–{max(x[0] for x in loads)}"
    )


def load_record(loads: Sequence[Sequence[float]]) -> dict[str, Any]:
    """The same for the results file."""
    return {"start": loads[0], "end": loads[-1], "during": list(loads[1:-1])}


# -- statistics, tables and the results file -----------------------------------------------------


def med(values: Sequence[float]) -> float:
    """The median, NaN for no values."""
    return statistics.median(values) if values else math.nan


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table; floats with 3 decimals (1 from 100 on), whole ones without, None "–"."""

    def fmt(value: Any) -> str:
        if value is None:
            return "–"
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        if isinstance(value, float):
            return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
        return str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def rounded(value: Any) -> Any:
    """``value`` with every float rounded to 4 significant digits (keeps the file small)."""
    if isinstance(value, float):
        return float(f"{value:.4g}") if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v) for v in value]
    return value


def write_results(path: Path, results: Any, *, ensure_ascii: bool = True) -> Path:
    """Write ``results`` as indented JSON to ``path`` (through a .tmp file, so that an interrupted
    run leaves the old file whole); returns the path to show: from the repository root if in it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1, ensure_ascii=ensure_ascii) + "\n")
    tmp.replace(path)
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


# -- the package without its dependencies ----------------------------------------------------------


def load_package_module(name: str) -> Any:
    """``langchain_glimprouter.<name>`` (dotted, e.g. ``core.entropy``) from its own file,
    without the package's ``__init__`` files (they need LangChain): for a module that imports
    only the standard library, in an environment without the package's dependencies."""
    path = ROOT / "langchain_glimprouter" / Path(*name.split(".")).with_suffix(".py")
    spec = importlib.util.spec_from_file_location(f"langchain_glimprouter.{name}", path)
    if not path.is_file() or spec is None or spec.loader is None:
        sys.exit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
