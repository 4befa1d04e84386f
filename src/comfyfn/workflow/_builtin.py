"""Built-in workflows shipped with comfyfn, by name.

- ``zimage-turbo``: Z-Image-Turbo text to image with the official template's settings:
  8 steps, cfg 1, ``res_multistep``/``simple``, shift 3, 1024², negative zeroed.
- ``zimage``: Z-Image (base) text to image: 25 steps, cfg 4, ``res_multistep``/``simple``,
  shift 3, 1024², a real (empty) negative prompt.

- ``zimage-edit``: Z-Image-Turbo image to image: LoadImage → ImageScale (to a ×16 size:
  the input's own size rounded, unless width/height are given) → VAEEncode → KSampler
  (8 steps, cfg 1, ``denoise`` 0.6) → VAEDecode → SaveImage. Parameters as zimage-turbo
  (without batch_size), plus ``image``.

- ``zimage-control``: Z-Image-Turbo with the Fun ControlNet Union (2.1), wired as the
  official template: ``ModelPatchLoader`` (``model_patches/Z-Image-Turbo-Fun-Controlnet-
  Union.safetensors``) and ``ZImageFunControlnet`` (strength 1) on the model; LoadImage →
  Canny (0.1/0.32) → its image; the size is the control image's (rounded to ×16) unless
  given. Parameters as zimage-turbo plus ``control_image``, ``strength`` and
  ``control_type`` (canny, depth, pose, hed, mlsd, tile); ``image`` + ``mask`` inpaint.
  Needs ComfyUI ≥ 0.28 (``ZImageFunControlnet``, the Z-Image control patch loader).

All use ``text_encoders/qwen_3_4b.safetensors`` and ``vae/ae.safetensors``; the diffusion
models are ``z_image_turbo_bf16.safetensors`` and ``z_image_bf16.safetensors``. Parameters:
prompt, negative, seed, width, height, batch_size, steps, cfg, sampler, scheduler, denoise,
model, text_encoder, vae, filename_prefix.
"""

from __future__ import annotations

import json
from importlib import resources

from comfyfn.errors import ConfigError
from comfyfn.workflow._workflow import Workflow

__all__ = ["BUILTIN", "builtin", "zimage", "zimage_control", "zimage_edit", "zimage_turbo"]

BUILTIN = {
    "zimage-turbo": "zimage_turbo.json",
    "zimage": "zimage.json",
    "zimage-edit": "zimage_edit.json",
    "zimage-control": "zimage_control.json",
}


def builtin(name: str) -> Workflow:
    """A built-in workflow by its CLI name (``"zimage-turbo"``, ``"zimage"``)."""
    try:
        filename = BUILTIN[name]
    except KeyError:
        raise ConfigError(
            f"unknown built-in workflow {name!r}; choose from {', '.join(sorted(BUILTIN))}"
        ) from None
    data = resources.files("comfyfn.workflow").joinpath("data", filename)
    graph = json.loads(data.read_text(encoding="utf-8"))
    return Workflow.load(graph, name=name)


def zimage_turbo() -> Workflow:
    """Z-Image-Turbo: UNETLoader → ModelSamplingAuraFlow(3) → KSampler(8, cfg 1, res_multistep,
    simple); CLIPLoader qwen_3_4b (lumina2); VAELoader ae; EmptySD3LatentImage; the negative is
    ConditioningZeroOut of the positive (a negative prompt only acts with cfg > 1)."""
    return builtin("zimage-turbo")


def zimage() -> Workflow:
    """Z-Image (base): as Z-Image-Turbo with z_image_bf16, 25 steps, cfg 4, a real negative."""
    return builtin("zimage")


def zimage_edit() -> Workflow:
    """Z-Image-Turbo image to image: bind ``image`` (and ``denoise``, default 0.6)."""
    return builtin("zimage-edit")


def zimage_control() -> Workflow:
    """Z-Image-Turbo with the Fun ControlNet Union: bind ``control_image`` (``strength``,
    ``control_type``; ``image`` + ``mask`` to inpaint)."""
    return builtin("zimage-control")
