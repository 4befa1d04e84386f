"""The local engine: a managed real ComfyUI on 127.0.0.1 that needs no GPU.

``Engine().up()`` installs (once) a venv with CPU torch, ComfyUI 0.3.75 and tiny random
Z-Image weights under the official file names, then starts the server on a free port.
"""

from comfyfn.engine.install import COMFYUI_VERSION, EngineInstall, engine_home
from comfyfn.engine.instance import Engine, EngineState

__all__ = ["COMFYUI_VERSION", "Engine", "EngineInstall", "EngineState", "engine_home"]
