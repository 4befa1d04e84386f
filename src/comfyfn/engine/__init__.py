"""Local engines: a real ComfyUI on 127.0.0.1 that needs no GPU.

``Engine().up()`` installs (once) a venv with CPU torch, the managed ComfyUI 0.3.75 and
tiny random Z-Image weights under the official file names, then starts the server on a
free port. ``Engine(name, comfyui_path=DIR)`` does the same for any ComfyUI source tree
(its own venv, built from its requirements; tiny weights made with its own classes).
"""

from comfyfn._public import present as _present
from comfyfn.engine._device import Device, device_args
from comfyfn.engine.install import COMFYUI_VERSION, EngineInstall, engine_home
from comfyfn.engine.instance import Engine, EngineState, PreviewMethod

__all__ = [
    "COMFYUI_VERSION",
    "Device",
    "Engine",
    "EngineInstall",
    "EngineState",
    "PreviewMethod",
    "device_args",
    "engine_home",
]

_present(__name__, globals(), __all__)
