"""A scripted imitation of vLLM's OpenAI-compatible server, shared by the tests and the benchmarks.

Not part of the package (it is not in the wheel): it lives beside ``tests/`` and ``benchmarks/`` so
that neither imports the other. What it answers is :mod:`scripted_server.answers` (no HTTP, from
the :mod:`scripted_server.script`); :mod:`scripted_server.server` serves it over HTTP.
"""

from scripted_server.answers import Faults, RequestLog, ScriptedModel
from scripted_server.script import CHATML, Script, later_top_logprobs, split_tokens
from scripted_server.server import ScriptedServer, ScriptedServerProcess

__all__ = [
    "CHATML",
    "Faults",
    "RequestLog",
    "Script",
    "ScriptedModel",
    "ScriptedServer",
    "ScriptedServerProcess",
    "later_top_logprobs",
    "split_tokens",
]
