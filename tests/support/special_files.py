"""Files that are not plain small files, for tests: named pipes (a call that must not wait on
one fails the test, never hangs it) and sparse files (huge, with no disk used)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as Timeout
from pathlib import Path
from typing import TypeVar

import pytest

T = TypeVar("T")


def make_fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def make_sparse(path: Path, size: int) -> Path:
    """A file of ``size`` bytes (zeros) that takes no disk space."""
    path.touch()
    os.truncate(path, size)
    return path


def without_waiting_on(fifo: Path, call: Callable[[], T], timeout: float = 30) -> T:
    """``call()``'s result (or its exception), run on a thread of its own. If it is still
    running after ``timeout`` seconds it is taken to wait on ``fifo``: the pipe gets a writer
    that closes at once (so a reader blocked in open or read sees its end and the thread
    ends) and the test fails."""
    with ThreadPoolExecutor(1, thread_name_prefix="fifo-guard") as pool:
        future = pool.submit(call)
        try:
            return future.result(timeout)
        except Timeout:
            with contextlib.suppress(OSError):  # ENXIO: nobody reads it (any more)
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            pytest.fail(f"waited on the named pipe {fifo} for {timeout:g} s")
