"""Integration tests run against a real ComfyUI: the local engine, started once per session."""

from __future__ import annotations

import itertools
import os
import subprocess
from pathlib import Path

import pytest

from comfyfn.engine import Engine

_unique = itertools.count(int.from_bytes(os.urandom(2), "big") * 64)  # < 2**24: a valid color


@pytest.fixture(scope="session")
def engine():
    eng = Engine(os.environ.get("COMFYFN_TEST_ENGINE", "pytest"))
    eng.up()
    yield eng
    eng.down()


@pytest.fixture(scope="session")
def server(engine) -> str:
    return engine.url


@pytest.fixture
def unique():
    """A fresh integer per call, so ComfyUI never serves a test from its cache."""
    return lambda: next(_unique)


@pytest.fixture
def tmpfs(tmp_path):
    """Mount a small tmpfs (needs root); skipped, with the reason, where mounting fails."""
    mounted: list[Path] = []

    def mount(name: str, options: str) -> Path:
        where = tmp_path / name
        where.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], check=False)
