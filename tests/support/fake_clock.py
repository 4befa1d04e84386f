"""A clock for tests of code that takes one (``clock=``): it moves only when the test says."""

from __future__ import annotations


class FakeClock:
    """Seconds from ``start``, moved by :meth:`advance` (or by setting :attr:`now`)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
