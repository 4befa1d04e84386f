"""Integration tests run against a real ComfyUI: the local engine, started once per session.

By default that is the managed ComfyUI 0.3.75. With ``COMFYFN_TEST_COMFYUI`` set to a ComfyUI
source tree, or to a release tarball (``make test`` passes ../shared's 0.33.0), the same tests
run on that ComfyUI instead; tests marked ``one_version`` (slow multi-engine fault tests, and
those about the managed install itself) run on the managed engine only. A test that depends
on what the server can do asks the server (a route, ``/features``, ``/object_info``), never
its version.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from comfyfn.engine import Engine
from tests.support import pg
from tests.support.comfyui_trees import unpack_comfyui
from tests.support.s3server import INSTALL_HINT, S3Server, available

_unique = itertools.count(int.from_bytes(os.urandom(2), "big") * 64)  # < 2**24: a valid color


def comfyui_tree(tmp_path_factory: pytest.TempPathFactory) -> Path | None:
    """The ComfyUI tree ``COMFYFN_TEST_COMFYUI`` names (a tarball is unpacked), if any."""
    given = os.environ.get("COMFYFN_TEST_COMFYUI")
    if not given:
        return None
    source = Path(given)
    if not source.name.endswith((".tar.gz", ".tgz")):
        return source
    return unpack_comfyui(source, tmp_path_factory.mktemp("comfyui"))


@pytest.hookimpl(tryfirst=True)  # the markers are in place before ``-m`` selects by them
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """An integration test that does not talk to ComfyUI (no ``engine`` marker) is marked
    ``no_engine``: ``make test`` runs those once, in the tier beside the whole suite, to
    balance the two. On another ComfyUI (``COMFYFN_TEST_COMFYUI``), tests marked
    ``one_version`` are not collected (deselected, and counted so): they ran on the managed
    engine already."""
    here = Path(__file__).parent
    for item in items:  # (a conftest's hook sees every test of the session)
        if item.path.is_relative_to(here) and "engine" not in item.keywords:
            item.add_marker(pytest.mark.no_engine)
    if not os.environ.get("COMFYFN_TEST_COMFYUI"):
        return
    once = [item for item in items if "one_version" in item.keywords]
    if once:
        config.hook.pytest_deselected(items=once)
        items[:] = [item for item in items if "one_version" not in item.keywords]


@pytest.fixture(scope="session")
def engine(tmp_path_factory):
    tree = comfyui_tree(tmp_path_factory)
    eng = Engine(os.environ["COMFYFN_TEST_ENGINE"], comfyui_path=tree)
    eng.up()
    yield eng
    eng.down()
    shutil.rmtree(eng.dir, ignore_errors=True)  # its input/output folders: named per session


@pytest.fixture(scope="session")
def server(engine) -> str:
    return engine.url


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    """A real S3-compatible store (SeaweedFS, tests/support/s3server.py) for the tests of a
    module."""
    if not available():
        pytest.fail(INSTALL_HINT, pytrace=False)
    with S3Server() as server:
        yield server


@pytest.fixture(scope="module")
def postgres() -> Iterator[pg.Postgres]:
    """A real PostgreSQL (tests/support/pg.py) for the tests of a module."""
    if not pg.available():
        pytest.fail(pg.INSTALL_HINT, pytrace=False)
    with pg.Postgres() as server:
        yield server


@pytest.fixture
def unique():
    """A fresh integer per call, so ComfyUI never serves a test from its cache."""
    return lambda: next(_unique)


@pytest.fixture
def tmpfs(tmp_path):
    """Mount a small tmpfs (needs root, as CI has); a machine where mounting fails fails the
    test, saying why (a full disk cannot be shown otherwise)."""
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
            why = done.stderr.strip() or done.returncode
            pytest.fail(f"cannot mount a tmpfs here (run as root): {why}", pytrace=False)
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], check=False)
