"""Simulated ComfyUI servers (tests/support/simcomfy.py) in a process of their own: the
command that starts one, and the servers' URLs and counters for a test."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections import Counter

import httpx

from tests.support.checkout import module_env
from tests.support.cli_proc import CHILD_ENV

#: the simulated servers' process: ``python -m tests.support.simcomfy ARGS``, run with
#: ``module_env()`` as its environment (the repository root importable)
SIMCOMFY = (sys.executable, "-m", "tests.support.simcomfy")


@contextlib.contextmanager
def simulated(ports: int, job_ms: int):
    """``ports`` simulated ComfyUI servers in a process; their URLs."""
    proc = subprocess.Popen(
        [
            *SIMCOMFY,
            "--ports",
            str(ports),
            "--job-ms",
            str(job_ms),
            "--load-ms",
            "0",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=module_env(CHILD_ENV),
    )
    try:
        assert proc.stdout is not None
        yield json.loads(proc.stdout.readline())["urls"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def executions(urls: list[str]) -> Counter[str]:
    """prompt id → times it ran, over every server."""
    total: Counter[str] = Counter()
    for url in urls:
        total.update(httpx.get(f"{url}/simcomfy/counters").json()["executions"])
    return total
