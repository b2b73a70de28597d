"""The ``glimprouter`` command: ``demo`` (local servers on the tiny model), ``ask``, ``calibrate``,
``serve``, ``bench`` and ``proxy``, one module each in this package.

``demo`` and ``ask`` print the same view: one line per routed step as it finishes, the answer as
it streams, and a summary of the routing record. ``calibrate`` finds the threshold that sends a
wanted share of step starts to the large model. ``serve`` starts a small and a large vLLM server
with the flags the router needs and prints the ``GlimpRouterChatModel(...)`` that uses them.
``bench`` routes a question set through two running servers or a local pair, grades the answers
and writes one JSON line per question and a summary (see docs/bench.md). ``proxy`` serves the
router as an OpenAI-compatible chat completions server (see docs/proxy.md).
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from langchain_glimprouter.cli import ask, calibrate, demo, proxy, serve
from langchain_glimprouter.cli.bench import command as bench
from langchain_glimprouter.cli.servers import ServeError
from langchain_glimprouter.errors import GlimpRouterError

COMMANDS = (demo, ask, calibrate, serve, bench, proxy)


def parser() -> argparse.ArgumentParser:
    """The command line of every command."""
    top = argparse.ArgumentParser(prog="glimprouter", description=__doc__)
    commands = top.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(commands)
    return top


def main(argv: list[str] | None = None, out: TextIO = sys.stdout) -> int:
    """Entry point of the ``glimprouter`` console script."""
    args = parser().parse_args(argv)
    try:
        return int(args.run(args, out))
    except (GlimpRouterError, ServeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
