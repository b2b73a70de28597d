"""A scripted imitation of vLLM's OpenAI-compatible server, shared by the tests and the benchmarks.

Not part of the package (it is not in the wheel): it lives beside ``tests/`` and ``benchmarks/`` so
that neither imports the other. See :mod:`scripted_server.server`.
"""

from scripted_server.server import (
    CHATML,
    Faults,
    RequestLog,
    Script,
    ScriptedServer,
    ScriptedServerProcess,
    later_top_logprobs,
    split_tokens,
)

__all__ = [
    "CHATML",
    "Faults",
    "RequestLog",
    "Script",
    "ScriptedServer",
    "ScriptedServerProcess",
    "later_top_logprobs",
    "split_tokens",
]
