"""Built-in workflows shipped with comfyfn (API format)."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

__all__ = ["BUILTIN", "builtin", "zimage_turbo"]

BUILTIN = {"zimage-turbo": "zimage_turbo.json"}


def builtin(name: str) -> dict[str, Any]:
    """A fresh copy of a built-in API-format workflow by its CLI name (``"zimage-turbo"``)."""
    from comfyfn.errors import ConfigError

    try:
        filename = BUILTIN[name]
    except KeyError:
        raise ConfigError(
            f"unknown built-in workflow {name!r}; choose from {', '.join(sorted(BUILTIN))}"
        ) from None
    return json.loads(resources.files(__name__).joinpath(filename).read_text(encoding="utf-8"))


def zimage_turbo() -> dict[str, Any]:
    """Z-Image-Turbo text-to-image with the official settings.

    UNETLoader ``z_image_turbo_bf16.safetensors`` → ModelSamplingAuraFlow (shift 3) →
    KSampler (8 steps, cfg 1, ``res_multistep``, ``simple``, denoise 1); CLIPLoader
    ``qwen_3_4b.safetensors`` (type ``lumina2``); VAELoader ``ae.safetensors``;
    EmptySD3LatentImage 1024×1024; the negative is ConditioningZeroOut of the positive
    (at cfg 1 a negative prompt has no effect).
    """
    return builtin("zimage-turbo")
