"""ComfyUI source trees: recognise one, read its version and the packages a CPU venv needs.

A tree is a ComfyUI checkout (or an unpacked release): ``main.py``, ``nodes.py``,
``folder_paths.py`` and the ``comfy/`` package. It is only ever read, never written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from comfyfn.errors import ConfigError

__all__ = ["ComfyTree", "cpu_requirements"]

_MARKS = ("main.py", "nodes.py", "folder_paths.py", "comfy/model_management.py")

# Requirements that a CPU venv built by comfyfn does not take from the tree's list.
_LEFT_OUT = {
    "torch": "pinned to the CPU build separately",
    "torchvision": "stood in for (its wheel for our torch is CUDA-linked)",
    "torchaudio": "stood in for (no PyPI build pairs with CPU torch 2.13)",
    "comfyui-frontend-package": "the engine serves an empty --front-end-root",
    "comfyui-workflow-templates": "web-UI only",
    "comfyui-embedded-docs": "web-UI only",
    "spandrel": "upscale models; requires the real torchvision",
    "comfy-angle": "OpenGL nodes; not needed headless",
    "pyopengl": "OpenGL nodes; not needed headless",
}
# Imported at start-up by some releases without being listed in their requirements.
_ALWAYS = ("requests", "typing_extensions")


def _name(requirement: str) -> str:
    """The project name of a requirement line, normalised (``Typing_Extensions>=4`` ->
    ``typing-extensions``)."""
    name = re.split(r"[^A-Za-z0-9._-]", requirement, maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def cpu_requirements(requirements_txt: str) -> tuple[str, ...]:
    """The tree's requirement lines a CPU venv installs, in order, plus :data:`_ALWAYS`."""
    kept: list[str] = []
    for raw in requirements_txt.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        if _name(line) not in _LEFT_OUT:
            kept.append(line)
    names = {_name(line) for line in kept}
    kept += [extra for extra in _ALWAYS if _name(extra) not in names]
    return tuple(kept)


@dataclass(frozen=True)
class ComfyTree:
    """A checked ComfyUI source tree (``path`` resolved)."""

    path: Path

    @classmethod
    def at(cls, path: str | Path) -> ComfyTree:
        """The tree at ``path``; a :class:`ConfigError` in one sentence if it is not one."""
        where = Path(path).expanduser()
        if not where.exists():
            raise ConfigError(f"--comfyui-path {where}: no such directory")
        if not where.is_dir():
            raise ConfigError(f"--comfyui-path {where}: not a directory")
        missing = [mark for mark in _MARKS if not (where / mark).is_file()]
        if missing:
            raise ConfigError(
                f"--comfyui-path {where}: not a ComfyUI source tree (no {', '.join(missing)})"
            )
        return cls(where.resolve())

    @property
    def version(self) -> str:
        """``comfyui_version.py``'s ``__version__``, or ``"unknown"``."""
        try:
            text = (self.path / "comfyui_version.py").read_text(encoding="utf-8")
        except OSError:
            return "unknown"
        match = re.search(r"""__version__\s*=\s*["']([^"']+)["']""", text)
        return match.group(1) if match else "unknown"

    def requirements(self) -> tuple[str, ...]:
        """What a CPU venv for this tree installs besides torch (see :func:`cpu_requirements`)."""
        try:
            text = (self.path / "requirements.txt").read_text(encoding="utf-8")
        except OSError:
            text = ""
        return cpu_requirements(text)

    def own_venv_python(self) -> Path | None:
        """The interpreter of a venv inside the tree (``venv/`` or ``.venv/``), if any."""
        for name in ("venv", ".venv"):
            python = self.path / name / "bin" / "python"
            if python.exists():
                return python
        return None

    def model_sources(self) -> bytes:
        """The source of the modules the tiny weights are built from (their shapes' origin)."""
        parts = (
            "comfy/ldm/lumina/model.py",
            "comfy/text_encoders/llama.py",
            "comfy/taesd/taesd.py",
        )
        return b"\0".join(
            (self.path / part).read_bytes() if (self.path / part).exists() else b""
            for part in parts
        )
