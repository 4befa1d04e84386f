"""Which device the engine's ComfyUI runs on: ``--device cpu|cuda|auto``.

``auto`` runs on the GPU when the engine interpreter's torch sees one, else on the CPU
(``--cpu``); ``cuda`` insists on a CUDA GPU; ``cpu`` always passes ``--cpu``. The decision
is a pure function of the request and of what the interpreter saw (:func:`device_args`).
"""

from __future__ import annotations

import enum
import subprocess
from pathlib import Path

from comfyfn.errors import ConfigError, EngineError

__all__ = ["Device", "device_args", "probe_accelerator"]


class Device(enum.StrEnum):
    cpu = "cpu"
    cuda = "cuda"
    auto = "auto"

    @classmethod
    def parse(cls, value: str) -> Device:
        """``value`` as a device, or a :class:`ConfigError` naming the choices."""
        try:
            return cls(value)
        except ValueError:
            choices = ", ".join(d.value for d in cls)
            raise ConfigError(f"--device {value!r}: choose one of {choices}") from None


# Prints "cuda", "mps" or nothing: the accelerator ComfyUI would use without --cpu.
_PROBE = """
import torch
if torch.cuda.is_available():
    print("cuda")
elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
    print("mps")
"""
_PROBE_TIMEOUT = 120.0


def device_args(
    device: Device, accelerator: str | None, python: Path | str = "python"
) -> list[str]:
    """ComfyUI's device arguments for ``device``, given the accelerator torch sees (or None).

    Raises :class:`ConfigError` for ``cuda`` when the interpreter sees no CUDA device.
    """
    if device is Device.cpu:
        return ["--cpu"]
    if device is Device.cuda and accelerator != "cuda":
        raise ConfigError(
            f"--device cuda: the engine's torch ({python}) sees no CUDA device"
            f" ({accelerator or 'CPU only'}); use --device cpu or auto"
        )
    return [] if accelerator else ["--cpu"]


def probe_accelerator(python: Path) -> str | None:
    """``"cuda"`` or ``"mps"`` if ``python``'s torch sees that device, else None."""
    try:
        done = subprocess.run(
            [str(python), "-c", _PROBE], capture_output=True, text=True, timeout=_PROBE_TIMEOUT
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EngineError(f"cannot ask {python} which device torch sees: {exc}") from exc
    if done.returncode != 0:
        tail = "\n".join(done.stderr.splitlines()[-10:])
        raise EngineError(f"{python} cannot import torch", log_tail=tail)
    return done.stdout.strip() or None
