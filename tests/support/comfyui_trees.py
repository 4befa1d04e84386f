"""ComfyUI source trees for tests: 0.28.0 from ../shared, unpacked where a test wants it
(``make test`` runs the integration suite a second time on ../shared's 0.33.0, by
``COMFYFN_TEST_COMFYUI``)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from comfyfn.engine import Engine

#: ComfyUI 0.28.0 as ../shared holds it (no package registry has a ComfyUI newer than 0.3.75)
COMFYUI_028 = Path(__file__).resolve().parents[3] / "shared/comfyui/0.28.0/ComfyUI-0.28.0.tar.gz"
#: ComfyUI 0.33.0 as ../shared holds it (upstream master of 2026-08-22, with its blueprints)
COMFYUI_033 = Path(__file__).resolve().parents[3] / "shared/comfyui/0.33.0/ComfyUI-0.33.0.tar.gz"


def session_is_028() -> bool:
    """Whether the session engine is ComfyUI 0.28.0 from ../shared (``make test-028``)."""
    given = os.environ.get("COMFYFN_TEST_COMFYUI")
    return given is not None and given != "" and Path(given).resolve() == COMFYUI_028.resolve()


def unpack_comfyui(source: Path, where: Path) -> Path:
    """The ComfyUI tree in release tarball ``source``, unpacked under ``where``; a missing
    tarball fails the test, naming it."""
    if not source.exists():
        pytest.fail(f"ComfyUI is not here: {source} is absent", pytrace=False)
    with tarfile.open(source) as archive:
        archive.extractall(where, filter="data")
    return next(p.parent for p in where.rglob("main.py") if (p.parent / "comfy").is_dir())


@contextlib.contextmanager
def engine_on_tree(
    suffix: str, source: Path, where: Path, kind: type[Engine] = Engine
) -> Iterator[str]:
    """An engine of its own (named after the session's, with ``suffix``) on the ComfyUI tree
    in tarball ``source``, unpacked under ``where``: its URL, for the ``with``; then stopped
    and removed."""
    tree = unpack_comfyui(source, where)
    own = kind(f"{os.environ['COMFYFN_TEST_ENGINE']}-{suffix}", comfyui_path=tree)
    own.up()
    try:
        assert own.url is not None
        yield own.url
    finally:
        own.down()
        shutil.rmtree(own.dir, ignore_errors=True)
