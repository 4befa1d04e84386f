"""ComfyUI source trees for tests: 0.28.0 from ../shared, unpacked where a test wants it
(``make test`` runs the integration suite a second time on ../shared's 0.33.0, by
``COMFYFN_TEST_COMFYUI``)."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest

#: ComfyUI 0.28.0 as ../shared holds it (no package registry has a ComfyUI newer than 0.3.75)
COMFYUI_028 = Path(__file__).resolve().parents[2] / "shared/comfyui/0.28.0/ComfyUI-0.28.0.tar.gz"


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
