"""Integration tests run against a real ComfyUI: the local engine, started once per session."""

from __future__ import annotations

import itertools
import os

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
