"""``comfyfn`` (or Python) in a process of its own, for tests that need a real exit code,
real signals and real output: the child imports this checkout's comfyfn."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import comfyfn

#: the environment of a child process: this one's, with this checkout's comfyfn importable
CHILD_ENV = {**os.environ, "PYTHONPATH": str(Path(comfyfn.__file__).parents[1])}


def start_cli(*args: str, **popen: Any) -> subprocess.Popen[str]:
    """``comfyfn ARGS`` started; stdout and stderr together in ``proc.stdout`` unless
    ``popen`` says otherwise."""
    options: dict[str, Any] = {
        "stdout": subprocess.PIPE,
        "stderr": subprocess.STDOUT,
        "text": True,
        "env": CHILD_ENV,
        **popen,
    }
    return subprocess.Popen([sys.executable, "-m", "comfyfn.cli", *args], **options)


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``comfyfn ARGS`` to its end: real exit code, stdout and stderr apart."""
    return subprocess.run(
        [sys.executable, "-m", "comfyfn.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=CHILD_ENV,
    )


def stop(proc: subprocess.Popen[str]) -> None:
    """Kill ``proc`` if it still runs (a test's cleanup, whatever happened)."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
