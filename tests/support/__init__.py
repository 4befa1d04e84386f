"""The test suite's helpers and fakes, one concept a module; the benches use them too.

Imported as ``from tests.support.polling import wait_for`` with the repository root on the
path (pytest's ``pythonpath``, or ``python -m`` from the root). A helper run as a process of
its own is run as a module: ``python -m tests.support.simcomfy`` (see support.checkout)."""
