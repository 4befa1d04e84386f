"""Bind generation parameters (prompt, seed, size...) to an API-format graph (pure).

:func:`bind` returns a new graph; the input graph is never modified. Bad values raise
:class:`WorkflowInvalid` naming the node, class and input before anything is sent.
"""

from __future__ import annotations

import copy
import math
import secrets
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from comfyfn.errors import NodeProblem, WorkflowInvalid
from comfyfn.graph import ApiGraph, Slots, find_slots, new_node_id, set_input

__all__ = ["PARAMETERS", "BoundGraph", "ComfyWarning", "bind", "parse_size", "random_seed"]

#: Parameter name → meaning, in the order :func:`bind` accepts them.
PARAMETERS: Mapping[str, str] = {
    "prompt": "positive prompt text",
    "negative": "negative prompt text (no effect at cfg 1)",
    "seed": "sampler seed (None = random, reported back)",
    "width": "image width in px (multiple of the latent node's step)",
    "height": "image height in px",
    "batch_size": "images per job",
    "steps": "sampling steps",
    "cfg": "classifier-free guidance scale",
    "sampler": "sampler name (e.g. res_multistep, euler)",
    "scheduler": "scheduler name (e.g. simple)",
    "denoise": "denoise strength",
    "model": "diffusion model file (diffusion_models/)",
    "text_encoder": "text encoder file (text_encoders/)",
    "vae": "VAE file (vae/)",
}

# (min, max, step) of the latent size inputs, as ComfyUI 0.3.x declares them.
_LATENT_LIMITS = {
    "EmptySD3LatentImage": (16, 16384, 16),
    "EmptyLatentImage": (16, 16384, 8),
    "EmptyHunyuanLatentVideo": (16, 16384, 16),
}
_RECOMMENDED_SIDE = (512, 2048)
SEED_MAX = 2**64 - 1


class ComfyWarning(UserWarning):
    """A value that will run but is probably not what the caller wants."""


def parse_size(size: str | tuple[int, int] | list[int]) -> tuple[int, int]:
    """``(1024, 768)``, ``[1024, 768]`` or ``"1024x768"`` → ``(1024, 768)``."""
    try:
        if isinstance(size, str):
            w, h = size.lower().replace("×", "x").split("x")
            return int(w), int(h)
        w, h = size
        return int(w), int(h)
    except (ValueError, TypeError):
        raise WorkflowInvalid(
            [NodeProblem(None, None, "size", f"size {size!r} is not WIDTHxHEIGHT")],
            summary="invalid parameters",
        ) from None


def random_seed() -> int:
    """A random seed that survives JSON round-trips in every language (< 2**53)."""
    return secrets.randbelow(2**53)


@dataclass(frozen=True)
class BoundGraph:
    """A graph with parameters bound, and the values every known slot now holds."""

    graph: ApiGraph
    values: Mapping[str, Any]
    slots: Slots


def _problem(graph: ApiGraph, slot: tuple[str, str], message: str) -> NodeProblem:
    node_id, name = slot
    return NodeProblem(node_id, graph[node_id].get("class_type"), name, message)


def _check(graph: ApiGraph, slots: Slots, values: Mapping[str, Any]) -> list[NodeProblem]:
    problems: list[NodeProblem] = []

    def bad(param: str, message: str) -> None:
        problems.append(_problem(graph, slots.params[param], message))

    def integer(param: str, low: int, high: int | None = None) -> bool:
        v = values[param]
        if isinstance(v, bool) or not isinstance(v, int):
            bad(param, f"{slots.params[param][1]} {v!r} is not an integer")
            return False
        if v < low or (high is not None and v > high):
            bad(param, f"{slots.params[param][1]} {v} is out of range {low}..{high or '∞'}")
            return False
        return True

    if "seed" in values:
        integer("seed", 0, SEED_MAX)
    for param in ("steps", "batch_size"):
        if param in values:
            integer(param, 1, 10_000)
    for param in ("cfg", "denoise"):
        if param in values:
            v = values[param]
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                bad(param, f"{param} {v!r} is not a number")
            elif v < 0:
                bad(param, f"{param} {v} must not be negative")
    for param in ("prompt", "negative", "sampler", "scheduler", "model", "text_encoder", "vae"):
        if param in values and not isinstance(values[param], str):
            bad(param, f"{slots.params[param][1]} {values[param]!r} is not text")
    for param in ("width", "height"):
        if param not in values:
            continue
        node_id, name = slots.params[param]
        low, high, step = _LATENT_LIMITS.get(graph[node_id]["class_type"], (1, 16384, 1))
        if not integer(param, low, high):
            continue
        if values[param] % step:
            bad(param, f"{name} {values[param]} is not a multiple of {step}")
    return problems


def _use_real_negative(graph: ApiGraph, slots: Slots, text: str) -> dict[str, tuple[str, str]]:
    """Replace the ConditioningZeroOut negative by a text encoder sharing the prompt's CLIP."""
    prompt_node = slots.params["prompt"][0]
    node_id = new_node_id(graph)
    graph[node_id] = {
        "class_type": graph[prompt_node]["class_type"],
        "inputs": {**copy.deepcopy(graph[prompt_node]["inputs"]), "text": text},
        "_meta": {"title": "Negative prompt"},
    }
    set_input(graph, slots.sampler, "negative", [node_id, 0])
    return {"negative": (node_id, "text")}


def bind(graph: ApiGraph, **params: Any) -> BoundGraph:
    """Return a copy of ``graph`` with ``params`` (see :data:`PARAMETERS`) written in.

    ``None`` values are left as the graph has them, except ``seed=None`` which picks a
    random seed. A parameter the graph has no place for is an error naming it.
    """
    unknown = sorted(set(params) - set(PARAMETERS))
    if unknown:
        raise WorkflowInvalid(
            [NodeProblem(None, None, name, f"unknown parameter {name!r}") for name in unknown],
            summary=f"unknown parameters; known: {', '.join(PARAMETERS)}",
        )
    graph = copy.deepcopy(graph)
    slots = find_slots(graph)
    if "seed" in params and params["seed"] is None and "seed" in slots.params:
        params["seed"] = random_seed()
    given = {k: v for k, v in params.items() if v is not None}
    negative = given.pop("negative", None)

    cfg = given.get("cfg", _current(graph, slots, "cfg"))
    needs_encoder = slots.negative_zero_out is not None and (
        (cfg is not None and not math.isclose(float(cfg), 1.0)) and "prompt" in slots.params
    )
    param_slots = dict(slots.params)
    if needs_encoder:
        param_slots.update(_use_real_negative(graph, slots, negative or ""))
    elif negative and slots.negative_zero_out is not None:
        warnings.warn(
            "at cfg 1 the negative prompt has no effect (the workflow zeroes it); "
            "pass cfg > 1 to use it",
            ComfyWarning,
            stacklevel=2,
        )
    if negative is not None and "negative" in param_slots:
        given["negative"] = negative
    slots = Slots(slots.sampler, param_slots, slots.negative_zero_out, slots.outputs)

    missing = [name for name in given if name not in param_slots]
    if missing:
        raise WorkflowInvalid(
            [
                NodeProblem(None, None, name, f"this workflow has no input for {name!r}")
                for name in missing
            ],
            summary="parameters the workflow cannot take",
        )
    problems = _check(graph, slots, given)
    if problems:
        raise WorkflowInvalid(problems, summary="invalid parameters")
    for name, value in given.items():
        node_id, input_name = param_slots[name]
        set_input(graph, node_id, input_name, value)
    values = {name: _current(graph, slots, name) for name in param_slots}
    _warn_unusual_size(values)
    return BoundGraph(graph, values, slots)


def _current(graph: ApiGraph, slots: Slots, name: str) -> Any:
    slot = slots.params.get(name)
    return graph[slot[0]]["inputs"].get(slot[1]) if slot else None


def _warn_unusual_size(values: Mapping[str, Any]) -> None:
    if "z_image" not in str(values.get("model", "")):
        return
    low, high = _RECOMMENDED_SIDE
    w, h = values.get("width"), values.get("height")
    if any(isinstance(v, int) and not low <= v <= high for v in (w, h)):
        warnings.warn(
            f"size {w}x{h} is outside Z-Image's recommended {low}–{high} px per side; it will "
            "run, but expect lower quality",
            ComfyWarning,
            stacklevel=3,
        )
