"""Node definitions (``/object_info``): reading input specs, and the bundled 0.3.75 snapshot."""

from __future__ import annotations

import gzip
import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

__all__ = ["MODEL_FOLDERS", "InputSpec", "bundled_object_info", "input_spec", "output_types"]

#: Input name → the models/ folder its files live in (for "put it in models/..." messages).
MODEL_FOLDERS: Mapping[str, str] = {
    "unet_name": "diffusion_models",
    "ckpt_name": "checkpoints",
    "clip_name": "text_encoders",
    "clip_name1": "text_encoders",
    "clip_name2": "text_encoders",
    "clip_name3": "text_encoders",
    "clip_name4": "text_encoders",
    "vae_name": "vae",
    "lora_name": "loras",
    "control_net_name": "controlnet",
    "style_model_name": "style_models",
    "upscale_model_name": "upscale_models",
    "model_name": "upscale_models",
    "name": "model_patches",
}


@dataclass(frozen=True)
class InputSpec:
    """One declared input: its type (``COMBO`` for a list of choices) and options."""

    name: str
    type: str
    required: bool
    options: Mapping[str, Any]
    choices: tuple[Any, ...] | None = None

    @property
    def is_widget(self) -> bool:
        return not self.options.get("forceInput") and self.type in (
            "INT",
            "FLOAT",
            "STRING",
            "BOOLEAN",
            "COMBO",
        )

    @property
    def folder(self) -> str | None:
        return MODEL_FOLDERS.get(self.name) if self.type == "COMBO" else None


def input_spec(object_info: Mapping[str, Any], class_type: str, name: str) -> InputSpec | None:
    definition = object_info.get(class_type) or {}
    for group in ("required", "optional"):
        spec = (definition.get("input", {}).get(group) or {}).get(name)
        if spec is None:
            continue
        kind = spec[0] if isinstance(spec, list | tuple) and spec else spec
        opts = spec[1] if isinstance(spec, list | tuple) and len(spec) > 1 else {}
        opts = opts if isinstance(opts, Mapping) else {}
        if isinstance(kind, list):
            return InputSpec(name, "COMBO", group == "required", opts, tuple(kind))
        if kind == "COMBO":
            return InputSpec(
                name, "COMBO", group == "required", opts, tuple(opts.get("options") or ())
            )
        return InputSpec(name, str(kind), group == "required", opts)
    return None


def output_types(object_info: Mapping[str, Any], class_type: str) -> list[str]:
    return list((object_info.get(class_type) or {}).get("output") or ())


@cache
def bundled_object_info() -> dict[str, Any]:
    """ComfyUI 0.3.75's core node definitions, for converting and inspecting offline.

    Its model-file choices are those of the machine it was captured on: never use them to
    say a file is missing; ask the server (``client.object_info()``) for that. Parsed once
    and shared: treat it as read-only.
    """
    path = resources.files("comfyfn.workflow").joinpath("data", "object_info_0.3.75.json.gz")
    info: dict[str, Any] = json.loads(gzip.decompress(path.read_bytes()))
    return info
