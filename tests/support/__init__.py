"""What the tests share: the fake driver, the llama.cpp launcher, the standard tests' capabilities
and the forced-answer fixtures. The scripted server is ``scripted_server/`` (the benchmarks use it
too)."""
