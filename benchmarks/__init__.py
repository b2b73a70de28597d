"""The benchmarks, each a module run from the repository root: ``python -m benchmarks.<name>``.

Not part of the package (not in the wheel). What they share is in :mod:`benchmarks._common`.
"""
