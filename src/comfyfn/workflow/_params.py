"""Typed parameters of a workflow: what can be bound, its type, range, choices and node (pure)."""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from comfyfn.workflow._definitions import input_spec
from comfyfn.workflow._graph import ApiGraph, is_link
from comfyfn.workflow._meaning import IMAGE_LOADERS, MEANINGS, Slots
from comfyfn.workflow._sizes import input_value

__all__ = ["Param", "dead_nodes", "describe"]

_PYTHON_TYPES = {"INT": int, "FLOAT": float, "STRING": str, "BOOLEAN": bool, "COMBO": str}


@dataclass(frozen=True)
class Param:
    """One bindable parameter."""

    name: str
    type: str  #: INT, FLOAT, STRING, BOOLEAN, COMBO or IMAGE (a LoadImage/LoadImageMask input)
    default: Any
    node_id: str
    input: str
    class_type: str
    title: str | None = None
    min: float | None = None
    max: float | None = None
    step: float | None = None
    choices: tuple[Any, ...] | None = None
    folder: str | None = None  #: models/ folder for a model file
    description: str = ""

    @property
    def path(self) -> str:
        return f"{self.node_id}.{self.input}"

    @property
    def python_type(self) -> builtins.type:
        return _PYTHON_TYPES.get(self.type, object)

    def parse(self, text: str) -> Any:
        """A value from command-line text, as this parameter's type."""
        if self.type == "INT":
            return int(text)
        if self.type == "FLOAT":
            return float(text)
        if self.type == "BOOLEAN":
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"{text!r} is not true/false")
        return text


def _param(
    graph: ApiGraph,
    object_info: Mapping[str, Any],
    name: str,
    slot: tuple[str, str],
    description: str,
) -> Param:
    node_id, input_name = slot
    node = graph[node_id]
    cls = node["class_type"]
    spec = input_spec(object_info, cls, input_name, node["inputs"])
    value = input_value(graph, node_id, input_name)
    if spec is None:
        kind = {bool: "BOOLEAN", int: "INT", float: "FLOAT"}.get(type(value), "STRING")
        return Param(
            name,
            kind,
            value,
            node_id,
            input_name,
            cls,
            (node.get("_meta") or {}).get("title"),
            description=description,
        )
    opts = spec.options
    image = input_name == "image" and cls in IMAGE_LOADERS
    return Param(
        name,
        "IMAGE" if image else "COMBO" if spec.is_combo else spec.type,
        value,
        node_id,
        input_name,
        cls,
        (node.get("_meta") or {}).get("title"),
        opts.get("min"),
        opts.get("max"),
        opts.get("step"),
        None if spec.folder or image else spec.choices,
        spec.folder,
        description or opts.get("tooltip", ""),
    )


def describe(graph: ApiGraph, slots: Slots, object_info: Mapping[str, Any]) -> tuple[Param, ...]:
    """The named parameters (one candidate each), in :data:`MEANINGS` order."""
    return tuple(
        _param(graph, object_info, name, slot, MEANINGS[name])
        for name, slot in slots.params.items()
    )


def all_inputs(graph: ApiGraph, object_info: Mapping[str, Any]) -> tuple[Param, ...]:
    """Every literal input of every node, named by its ``node.input`` path."""
    out = []
    for node_id, node in graph.items():
        for input_name, value in (node.get("inputs") or {}).items():
            if not is_link(value):
                out.append(
                    _param(graph, object_info, f"{node_id}.{input_name}", (node_id, input_name), "")
                )
    return tuple(out)


def dead_nodes(graph: ApiGraph, object_info: Mapping[str, Any]) -> tuple[str, ...]:
    """Known nodes whose outputs nothing uses and that are not output nodes themselves."""
    used = {
        str(v[0])
        for node in graph.values()
        for v in (node.get("inputs") or {}).values()
        if is_link(v)
    }
    return tuple(
        n
        for n, node in graph.items()
        if n not in used
        and node.get("class_type") in object_info
        and not object_info[node["class_type"]].get("output_node")
    )
