"""Warm-up: run the smallest job of a workflow once, so the first real job does not pay
for loading its models (on a GPU server, many seconds for a 6B model).

The warm-up job is the workflow bound to its smallest size (each side at the minimum its
node accepts, on its step, and at least 16 px: the smallest a latent model decodes), one
step, one image, a fixed seed, a 16 × 16 grey input image for each image parameter, and
the output prefix ``comfyfn_warmup``; everything else, models included, is as given.
"""

from __future__ import annotations

import io
import math
import time
import warnings
from dataclasses import dataclass
from functools import cache
from typing import Any

from comfyfn.client import AsyncClient, Client, WorkflowSource
from comfyfn.workflow import ComfyWarning, Param, Workflow

__all__ = ["WARMUP_PREFIX", "Warmed", "awarm", "warm", "warm_job"]

WARMUP_PREFIX = "comfyfn_warmup"
_SEED = 0
_SIDE = 16  #: the smallest side: 8x VAE downscale, 2x patches


@dataclass(frozen=True)
class Warmed:
    server: str
    seconds: float  #: wall time of the warm-up job (models loaded, one step)
    prompt_id: str


def warm_job(workflow: Workflow) -> Workflow:
    """``workflow`` as its cheapest job: smallest size, 1 step, 1 image, seed 0."""
    params = {p.name: p for p in workflow.params}
    values: dict[str, Any] = {}
    for side in ("width", "height"):
        if side in params:
            values[side] = _smallest(params[side])
    for name in ("image", "mask"):
        values[name] = _grey_png()
    values.update({"steps": 1, "batch_size": 1, "seed": _SEED})
    values["filename_prefix"] = WARMUP_PREFIX
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ComfyWarning)  # "outside the recommended sizes"
        return workflow.bind(**{k: v for k, v in values.items() if k in params})


def _smallest(param: Param) -> int:
    step = int(param.step or 1)
    low = max(int(param.min or 0), _SIDE)
    return math.ceil(low / step) * step


@cache
def _grey_png() -> bytes:
    from PIL import Image as PILImage  # only when a warm-up is made

    out = io.BytesIO()
    PILImage.new("RGB", (_SIDE, _SIDE), (128, 128, 128)).save(out, "PNG")
    return out.getvalue()


async def awarm(
    client: AsyncClient, workflow: WorkflowSource | Workflow, *, timeout: float | None = None
) -> Warmed:
    """Run the warm-up job of ``workflow`` on ``client``'s server and wait for it."""
    job = warm_job(await client.workflow(workflow))
    started = time.monotonic()
    generation = await (await client.submit_graph(job, timeout=timeout)).result()
    return Warmed(client.server, time.monotonic() - started, generation.prompt_id)


def warm(
    client: Client, workflow: WorkflowSource | Workflow, *, timeout: float | None = None
) -> Warmed:
    """:func:`awarm` for the synchronous :class:`~comfyfn.client.Client`."""
    job = warm_job(client.workflow(workflow))
    started = time.monotonic()
    generation = client.submit_graph(job, timeout=timeout).result()
    return Warmed(client.server, time.monotonic() - started, generation.prompt_id)
