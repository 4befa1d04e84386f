"""Z-Image Fun ControlNet Union on a graph (pure): the control type, and inpainting.

The official template wires ``ModelPatchLoader`` (``Z-Image-Turbo-Fun-Controlnet-Union``
in ``models/model_patches/``) and a control patch on the model (``ZImageFunControlnet``, or
``QwenImageDiffsynthControlnet`` as the template has it) whose ``image`` is the control map.
The Union model reads the kind of control from the map itself, so the control type says
how the map is made from ``control_image``:

- ``canny``: ComfyUI's ``Canny`` node computes it (as in the official template);
- ``depth``, ``pose``, ``hed``, ``mlsd``: ``control_image`` already is that map (made by
  another tool), used as given: a ``Canny`` on the way is taken out;
- ``tile``: ``control_image`` is a (low-resolution) photo, used as given.

Inpainting (``ZImageFunControlnet`` only): ``image`` goes to its ``inpaint_image`` and
``mask`` (white: repaint) to its ``mask``; loaders for them are added where the graph has
none.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NoReturn

from comfyfn.errors import NodeProblem, WorkflowInvalid
from comfyfn.workflow._graph import ApiGraph, is_link, linked_from, new_node_id
from comfyfn.workflow._meaning import CONTROL_CLASSES, Slots

__all__ = ["CONTROL_TYPES", "attach_inpaint", "set_control_type"]

CONTROL_TYPES: Mapping[str, str] = {
    "canny": "edges computed by ComfyUI's Canny node from control_image",
    "depth": "control_image is a depth map, used as given",
    "pose": "control_image is a pose skeleton, used as given",
    "hed": "control_image is a HED edge map, used as given",
    "mlsd": "control_image is an MLSD line map, used as given",
    "tile": "control_image is a (low-resolution) photo, used as given",
}
#: the official template's Canny thresholds
CANNY_THRESHOLDS = {"low_threshold": 0.1, "high_threshold": 0.32}
INPAINT_CLASS = "ZImageFunControlnet"
_INPAINT_INPUTS = {"image": "inpaint_image", "mask": "mask"}


def _problem(param: str, message: str, node: str | None = None, cls: str | None = None) -> NoReturn:
    raise WorkflowInvalid([NodeProblem(node, cls, param, message)], summary="invalid ControlNet")


def _the_control_node(graph: ApiGraph, param: str) -> str:
    nodes = sorted(n for n, node in graph.items() if node.get("class_type") in CONTROL_CLASSES)
    if len(nodes) != 1:
        what = "no" if not nodes else f"{len(nodes)} ({', '.join(nodes)})"
        _problem(param, f"{param} needs one ControlNet patch ({INPAINT_CLASS}); this has {what}")
    return nodes[0]


def _canny_before(graph: ApiGraph, node: str) -> str | None:
    """The Canny node on the way into ``node.image``, if any."""
    current = linked_from(graph, node, "image")
    for _ in range(16):
        if current is None or graph[current].get("class_type") == "Canny":
            return current
        current = linked_from(graph, current, "image")
    return None


def set_control_type(graph: ApiGraph, control_type: str) -> None:
    """Make the control map as :data:`CONTROL_TYPES` says (in place)."""
    if control_type not in CONTROL_TYPES:
        _problem(
            "control_type",
            f"unknown control_type {control_type!r}; choose from {', '.join(CONTROL_TYPES)}",
        )
    node = _the_control_node(graph, "control_type")
    inputs = graph[node]["inputs"]
    if not is_link(inputs.get("image")):
        _problem(
            "control_type", "the ControlNet has no control image", node, graph[node]["class_type"]
        )
    canny = _canny_before(graph, node)
    if control_type == "canny" and canny is None:
        canny = new_node_id(graph)
        graph[canny] = {
            "class_type": "Canny",
            "inputs": {"image": inputs["image"], **CANNY_THRESHOLDS},
            "_meta": {"title": "Canny"},
        }
        inputs["image"] = [canny, 0]
    elif control_type != "canny" and canny is not None:
        source = graph.pop(canny)["inputs"]["image"]
        for user in graph.values():  # the map goes where the edges went (previews too)
            for name, value in (user.get("inputs") or {}).items():
                if is_link(value) and str(value[0]) == canny:
                    user["inputs"][name] = source


def attach_inpaint(graph: ApiGraph, slots: Slots, given: Iterable[str]) -> None:
    """Add a loader for each of ``given`` (``image``, ``mask``) the graph has no place for,
    linked to its ControlNet's inpaint inputs (in place). Graphs without a ControlNet are
    left alone: their image inputs are found by meaning as always."""
    missing = [name for name in given if name in _INPAINT_INPUTS and name not in slots.candidates]
    if not missing or not any(n.get("class_type") in CONTROL_CLASSES for n in graph.values()):
        return
    node = _the_control_node(graph, missing[0])
    cls = graph[node]["class_type"]
    for name in missing:
        target = _INPAINT_INPUTS[name]
        if cls != INPAINT_CLASS and name == "image":
            _problem(
                name, f"inpainting needs {INPAINT_CLASS} (ComfyUI ≥ 0.28), not {cls}", node, cls
            )
        loader = new_node_id(graph)
        graph[loader] = (
            {"class_type": "LoadImage", "inputs": {"image": ""}, "_meta": {"title": "Image"}}
            if name == "image"
            else {
                "class_type": "LoadImageMask",
                "inputs": {"image": "", "channel": "red"},
                "_meta": {"title": "Mask"},
            }
        )
        graph[node]["inputs"][target] = [loader, 0]
