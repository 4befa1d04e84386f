"""Benchmarks, each run from the repository root as a module: ``python -m bench.scale …``.
They use the test suite's helpers (``tests.support``)."""
