"""This checkout's own modules in a process of their own (``python -m tests.support.simcomfy``,
``python -m bench.workers --fifo-runner`` …): the repository root, where ``tests`` and
``bench`` are packages, importable in the child whatever its working directory."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

#: the repository root
ROOT = Path(__file__).resolve().parents[2]


def module_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """``env`` (this process's environment by default) with the repository root first on
    ``PYTHONPATH``."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env
