"""The package as users get it: build the sdist and the wheel, check them, install the wheel into a
fresh virtual environment away from the checkout, and run it there.

``python scripts/check_wheel.py`` (``make test``'s ``wheel`` phase) fails, saying why, when:

- the build prints a warning (a deprecated ``pyproject.toml`` form, say);
- ``twine check --strict`` finds the metadata or the README unfit for an index;
- the wheel lacks a module of ``langchain_glimprouter/``, ``py.typed``, a data file
  (``langchain_glimprouter/data/*.jsonl``, the shipped chat templates
  ``data/templates/*.jinja``) or the license, or holds anything else (tests,
  benchmarks, the scripted server), or its metadata disagrees with ``pyproject.toml``;
- the installed wheel's dependencies do not resolve or conflict (``pip check``);
- ``glimprouter --help``, an import of the public names (``__version__`` the pyproject version,
  the data file found), or ``examples/router.py`` on two scripted servers on loopback fails when
  run by the fresh environment's Python, from a temporary directory, with no ``PYTHONPATH``.

Everything happens in a temporary directory, removed at the end (``--keep`` keeps it).
"""

from __future__ import annotations

import argparse
import email
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = "langchain_glimprouter"

SMOKE = """
import sys
from importlib.resources import files
from pathlib import Path

import langchain_glimprouter
from langchain_glimprouter import Backend, GlimpRouterChatModel, Router, __version__

expected, checkout = sys.argv[1], Path(sys.argv[2])
where = Path(langchain_glimprouter.__file__).resolve()
assert checkout not in where.parents, f"imported from the checkout: {where}"
assert "site-packages" in where.parts, f"not the installed wheel: {where}"
assert __version__ == expected, f"__version__ {__version__!r}, pyproject says {expected!r}"
assert (files("langchain_glimprouter") / "py.typed").is_file()

from langchain_glimprouter.cli.bench.grading import default_items_path

lines = default_items_path().read_text(encoding="utf-8").splitlines()
assert len(lines) == 40, f"{len(lines)} shipped bench questions"

from langchain_glimprouter.gguf import FAMILY_TEMPLATES, family_chat_template

assert FAMILY_TEMPLATES and all(family_chat_template(f).strip() for f in FAMILY_TEMPLATES)

small = Backend(base_url="http://127.0.0.1:9/v1", model="s")
large = Backend(base_url="http://127.0.0.1:9/v1", model="l")
Router(small=small, large=large)
model = GlimpRouterChatModel(small=small, large=large)
assert model.profile and model.profile.get("reasoning_output") is True, model.profile
from importlib.metadata import version

deps = ", ".join(f"{d} {version(d)}" for d in ("langchain-core", "openai", "pydantic"))
print(f"langchain_glimprouter {__version__} from {where.parent} ({deps})")
"""


def run(
    cmd: list[str], *, cwd: Path, env: dict[str, str] | None = None, what: str
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd``; on failure print its output and exit."""
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.stdout.write(done.stdout + done.stderr)
        fail(f"{what} exited with {done.returncode}: {' '.join(cmd)}")
    return done


def fail(message: str) -> None:
    print(f"check_wheel: FAILED: {message}", file=sys.stderr)
    sys.exit(1)


def clean_env(venv: Path | None = None) -> dict[str, str]:
    """This environment without PYTHONPATH, the checkout's venv or the coding tools' Python
    settings; with ``venv`` first on PATH."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "PYTHONSTARTUP"}
    }
    path = [p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(str(REPO))]
    if venv is not None:
        path.insert(0, str(venv / "bin"))
    env["PATH"] = os.pathsep.join(path)
    return env


def build(out: Path, version: str) -> tuple[Path, Path]:
    """The sdist and the wheel (built from the sdist, as ``python -m build`` does), with no
    warning from the build backend."""
    env = clean_env()
    # Byte-compiling is off here (PYTHONDONTWRITEBYTECODE): setuptools then says so as a warning
    # line. Users' builds compile, so this one does too; the .pyc land in the build's temp dirs.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    done = run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(REPO)],
        cwd=out,
        env=env,
        what="python -m build",
    )
    warnings = [
        line
        for line in (done.stdout + done.stderr).splitlines()
        if re.search(r"warn|deprecat", line, re.IGNORECASE)
    ]
    if warnings:
        sys.stdout.write(done.stdout + done.stderr)
        fail("the build warned:\n  " + "\n  ".join(warnings))
    sdist = out / f"{PACKAGE}-{version}.tar.gz"
    wheel = out / f"{PACKAGE}-{version}-py3-none-any.whl"
    for path in (sdist, wheel):
        if not path.is_file():
            fail(f"no {path.name} in {sorted(p.name for p in out.iterdir())}")
    return sdist, wheel


def check_contents(sdist: Path, wheel: Path, project: dict[str, object]) -> None:
    """What the wheel and the sdist must and must not hold, and the wheel's metadata."""
    version = str(project["version"])
    dist_info = f"{PACKAGE}-{version}.dist-info"
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        metadata = email.message_from_bytes(zf.read(f"{dist_info}/METADATA"))
    strays = sorted(n for n in names if not n.startswith((f"{PACKAGE}/", f"{dist_info}/")))
    if strays:
        fail(f"the wheel holds files outside {PACKAGE}/: {strays[:10]}")
    forbidden = {"tests", "benchmarks", "scripted_server", "examples", "__pycache__"}
    leaked = sorted(n for n in names if forbidden & set(n.split("/")))
    if leaked:
        fail(f"the wheel holds test or development files: {leaked[:10]}")
    source = REPO / PACKAGE
    wanted = {
        f"{PACKAGE}/{p.relative_to(source).as_posix()}"
        for pattern in ("**/*.py", "py.typed", "data/*.jsonl", "data/templates/*.jinja")
        for p in source.glob(pattern)
    }
    missing = sorted(wanted - names)
    if missing:
        fail(f"the wheel lacks {missing}")
    if not any(n.startswith(f"{PACKAGE}/data/") and n.endswith(".jsonl") for n in names):
        fail("the wheel has no data file")
    if f"{dist_info}/licenses/LICENSE" not in names:
        fail("the wheel has no LICENSE")
    expected = {
        "Name": "langchain-glimprouter",
        "Version": version,
        "Requires-Python": str(project["requires-python"]),
        "License-Expression": str(project["license"]),
    }
    for field, value in expected.items():
        if metadata.get(field) != value:
            fail(f"wheel METADATA {field}: {metadata.get(field)!r}, expected {value!r}")
    with tarfile.open(sdist) as tf:
        members = {m.name.split("/", 1)[-1] for m in tf.getmembers()}
    for needed in ("pyproject.toml", "README.md", "LICENSE", f"{PACKAGE}/py.typed"):
        if needed not in members:
            fail(f"the sdist lacks {needed}")
    print(f"contents: {len(names)} files in the wheel, {len(members)} in the sdist")


def scripted_pair() -> tuple[object, object]:
    """Two scripted vLLM stand-ins on loopback (from the checkout, run by this interpreter)."""
    sys.path.insert(0, str(REPO))
    from scripted_server import Script, ScriptedServer

    steps = ["2024 = 2^3 * 11 * 23.", "The divisor sum is 15 * 12 * 24 = 4320."]
    small = ScriptedServer(Script(steps=steps, h_init=[0.2, 1.8]), model="small-m").start()
    large = ScriptedServer(Script(steps=steps, answer="4320"), model="large-m").start()
    return small, large


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    version = project["version"]
    tmp = Path(tempfile.mkdtemp(prefix="check-wheel-"))
    started = time.monotonic()

    def lap(what: str) -> None:
        print(f"{what} ({time.monotonic() - started:.0f} s)", flush=True)

    try:
        dist = tmp / "dist"
        dist.mkdir()
        sdist, wheel = build(dist, version)
        lap(f"built {sdist.name} and {wheel.name} with no warning")
        run(
            [sys.executable, "-m", "twine", "check", "--strict", str(sdist), str(wheel)],
            cwd=tmp,
            what="twine check",
        )
        lap("twine check --strict: PASSED")
        check_contents(sdist, wheel, project)

        venv = tmp / "venv"
        run([sys.executable, "-m", "venv", str(venv)], cwd=tmp, what="venv")
        env = clean_env(venv)
        python = str(venv / "bin" / "python")
        pip = [python, "-m", "pip", "--disable-pip-version-check"]
        run([*pip, "install", "-q", str(wheel)], cwd=tmp, env=env, what="pip install the wheel")
        run([*pip, "check"], cwd=tmp, env=env, what="pip check")
        lap("installed the wheel into a fresh venv; pip check: no conflict")

        # From here on nothing can see the checkout: the cwd is the temp dir, no PYTHONPATH.
        helped = run([str(venv / "bin" / "glimprouter"), "--help"], cwd=tmp, env=env, what="--help")
        if "usage: glimprouter" not in helped.stdout:
            fail(f"glimprouter --help printed:\n{helped.stdout}")
        (tmp / "smoke.py").write_text(SMOKE, encoding="utf-8")
        smoke = run(
            [python, "smoke.py", version, str(REPO)], cwd=tmp, env=env, what="the import check"
        )
        lap(f"glimprouter --help; {smoke.stdout.strip()}")

        examples = tmp / "examples"
        examples.mkdir()
        for name in ("router.py", "_servers.py"):
            shutil.copy(REPO / "examples" / name, examples / name)
        small, large = scripted_pair()
        try:
            example_env = {
                **env,
                "GLIMPROUTER_SMALL_URL": small.base_url,  # type: ignore[attr-defined]
                "GLIMPROUTER_SMALL_MODEL": "small-m",
                "GLIMPROUTER_LARGE_URL": large.base_url,  # type: ignore[attr-defined]
                "GLIMPROUTER_LARGE_MODEL": "large-m",
                "GLIMPROUTER_THRESHOLD": "0.9",
            }
            ran = run(
                [python, "router.py"], cwd=examples, env=example_env, what="examples/router.py"
            )
        finally:
            small.stop()  # type: ignore[attr-defined]
            large.stop()  # type: ignore[attr-defined]
        writers = set(re.findall(r"^step \d+: (small|large) ", ran.stdout, re.MULTILINE))
        if "answer: 4320" not in ran.stdout or writers != {"small", "large"}:
            fail(f"examples/router.py printed:\n{ran.stdout}")
        lap("examples/router.py on two scripted servers: the answer, steps on both models")
        print(f"check_wheel: OK in {time.monotonic() - started:.0f} s")
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
