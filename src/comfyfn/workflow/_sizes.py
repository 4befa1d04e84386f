"""Image sizes a graph fixes, and values nodes compute from their own literal inputs (pure).

A latent's ``width``/``height`` may be literals, or links from a resolution node that
computes them; ``ResolutionSelector`` (ComfyUI 0.2x: an aspect ratio and a megapixel
target, rounded to a multiple) is computed here exactly as ComfyUI computes it, so the
size is known without running the graph. Other sources give no known value (None).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from comfyfn.workflow._graph import is_link

__all__ = ["decoded_size", "input_value"]

_IMAGE_SINKS = frozenset({"SaveImage", "PreviewImage", "SaveImageWebsocket", "SaveImageAdvanced"})
_SAMPLERS = ("KSampler", "KSamplerAdvanced", "SamplerCustom", "SamplerCustomAdvanced")

Graph = Mapping[str, Mapping[str, Any]]


def _resolution_selector(inputs: Mapping[str, Any]) -> tuple[int, int] | None:
    """``"16:9 (Widescreen)"``, 1.0 MP, multiple 8 → (1368, 768), as ComfyUI rounds it."""
    ratio, megapixels, step = (inputs.get(k) for k in ("aspect_ratio", "megapixels", "multiple"))
    if not isinstance(megapixels, int | float) or not isinstance(step, int) or step <= 0:
        return None
    try:
        w_ratio, h_ratio = (int(part) for part in str(ratio).split()[0].split(":"))
        scale = math.sqrt(float(megapixels) * 1024 * 1024 / (w_ratio * h_ratio))
    except (IndexError, ValueError, ZeroDivisionError):
        return None
    return round(w_ratio * scale / step) * step, round(h_ratio * scale / step) * step


#: Class → its outputs computed from its literal inputs.
_COMPUTED: Mapping[str, Callable[[Mapping[str, Any]], tuple[Any, ...] | None]] = {
    "ResolutionSelector": _resolution_selector,
}


def input_value(graph: Graph, node_id: str, name: str) -> Any:
    """The value of ``node_id.name``: a literal, or what a known node computes for the link
    into it (None when it cannot be known without running the graph)."""
    value = (graph[node_id].get("inputs") or {}).get(name)
    if not is_link(value):
        return value
    source: Mapping[str, Any] = graph.get(str(value[0])) or {}
    compute = _COMPUTED.get(str(source.get("class_type")))
    inputs: Mapping[str, Any] = source.get("inputs") or {}
    if compute is None or any(is_link(v) for v in inputs.values()):
        return None
    outputs = compute(inputs)
    slot: int = value[1]
    return outputs[slot] if outputs is not None and slot < len(outputs) else None


def decoded_size(graph: Graph) -> tuple[int, int] | None:
    """The size every saved image must have, when the graph says so plainly.

    That is when each image output is a VAEDecode of a sampler whose latent is an empty latent
    whose ``width``/``height`` are literals or computed by a resolution node (as in Z-Image),
    and all agree. Anything in between — an upscaler, a crop, an image loaded from a file —
    and there is no such promise: None.
    """
    sizes = set()
    for node in graph.values():
        if node.get("class_type") not in _IMAGE_SINKS:
            continue
        size = _decoded_from(graph, _link(node, "images"))
        if size is None:
            return None
        sizes.add(size)
    return sizes.pop() if len(sizes) == 1 else None


def _link(node: Mapping[str, Any] | None, name: str) -> str | None:
    value = (node or {}).get("inputs", {}).get(name)
    return str(value[0]) if is_link(value) else None


def _decoded_from(graph: Graph, decoder: str | None) -> tuple[int, int] | None:
    def node(nid: str | None, *classes: str) -> str | None:
        kind = str((graph.get(nid) or {}).get("class_type", "")) if nid is not None else ""
        return nid if kind and any(kind.startswith(c) for c in classes) else None

    vae = node(decoder, "VAEDecode")
    sampler = node(_link(graph.get(vae or ""), "samples"), *_SAMPLERS)
    latent = node(_link(graph.get(sampler or ""), "latent_image"), "Empty")
    if latent is None:
        return None
    width, height = input_value(graph, latent, "width"), input_value(graph, latent, "height")
    if isinstance(width, int) and isinstance(height, int):
        return width, height
    return None
