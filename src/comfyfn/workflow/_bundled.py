"""Node definitions (``/object_info``) bundled for offline use, chosen by server version.

Three snapshots ship with comfyfn: ComfyUI 0.3.75 (the newest core on PyPI), 0.28.0 (July
2026) and 0.33.0 (August 2026). A server's version picks the newest bundle that is not newer
than it, so a 0.30 server is read with the 0.28 definitions and a 0.3.80 one with 0.3.75's;
without a version, or with one that cannot be read, the newest bundle is used. Each is
parsed once per process. (Choosing offline definitions is the one use of a version: what a
server can do is asked of the server itself.)

Their model-file and input-file choices are those of the machines they were captured on:
never use them to say a file is missing; ask the server (``client.object_info()``).
"""

from __future__ import annotations

import gzip
import json
import logging
import re
import threading
from importlib import resources
from typing import Any

__all__ = ["BUNDLED_VERSIONS", "bundled_object_info", "bundled_version", "is_bundled"]

log = logging.getLogger("comfyfn.workflow")

#: ComfyUI versions whose definitions are bundled, oldest first.
BUNDLED_VERSIONS: tuple[str, ...] = ("0.3.75", "0.28.0", "0.33.0")


def _version_key(version: str) -> tuple[int, ...] | None:
    """``"0.28.0"``, ``"v0.3.75"``, ``"0.28.1-rc2"`` → ``(0, 28, 0)``...; None if unreadable."""
    found = re.match(r"\s*v?(\d+(?:\.\d+)*)", version)
    if found is None:
        return None
    parts = tuple(int(p) for p in found.group(1).split("."))
    return parts + (0,) * (3 - len(parts)) if len(parts) < 3 else parts


def bundled_version(version: str | None = None) -> str:
    """The bundle to read a server of ``version`` with: the newest not newer than it (the
    oldest for an older server), or the newest when ``version`` is None or unreadable."""
    key = _version_key(version) if version is not None else None
    if key is None:
        if version is not None:
            log.debug(
                "unreadable ComfyUI version %r: using the newest bundled definitions", version
            )
        return BUNDLED_VERSIONS[-1]
    older = [v for v in BUNDLED_VERSIONS if (_version_key(v) or ()) <= key]
    return older[-1] if older else BUNDLED_VERSIONS[0]


def bundled_object_info(version: str | None = None) -> dict[str, Any]:
    """The bundled core node definitions for a server of ``version`` (see :func:`bundled_version`).

    Parsed once per process and shared: treat it as read-only.
    """
    return _load(bundled_version(version))


def is_bundled(object_info: object) -> bool:
    """True for the very definitions :func:`bundled_object_info` returned."""
    return any(object_info is parsed for parsed in _parsed.values())


_parsed: dict[str, dict[str, Any]] = {}
_parsing = threading.Lock()


def _load(version: str) -> dict[str, Any]:
    with _parsing:
        if version not in _parsed:
            name = f"object_info_{version}.json.gz"
            path = resources.files("comfyfn.workflow").joinpath("data", name)
            _parsed[version] = json.loads(gzip.decompress(path.read_bytes()))
        return _parsed[version]
