"""The tooling: the ``glimprouter`` command (:mod:`.main`, one module per command), the local vLLM
launchers (:mod:`.servers`) and the benchmark harness (:mod:`.bench`). Not needed to route."""
