"""Typed parameters of a workflow: what can be bound, its type, range, choices and node (pure)."""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from comfyfn.workflow._binding import copy_json
from comfyfn.workflow._definitions import InputSpec, input_spec, node_inputs
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
    spec = input_spec(object_info, node["class_type"], input_name, node["inputs"])
    value = input_value(graph, node_id, input_name)
    return _typed(name, node_id, node, input_name, value, spec, description)


def _typed(
    name: str,
    node_id: str,
    node: Mapping[str, Any],
    input_name: str,
    value: Any,
    spec: InputSpec | None,
    description: str,
) -> Param:
    """The parameter ``name`` for ``node_id.input_name`` holding ``value``, typed by ``spec``
    (by the value's own type without one)."""
    cls = node["class_type"]
    title = (node.get("_meta") or {}).get("title")
    if spec is None:
        kind = {bool: "BOOLEAN", int: "INT", float: "FLOAT"}.get(type(value), "STRING")
        return Param(name, kind, value, node_id, input_name, cls, title, description=description)
    opts = spec.options
    image = input_name == "image" and cls in IMAGE_LOADERS
    return Param(
        name,
        "IMAGE" if image else "COMBO" if spec.is_combo else spec.type,
        value,
        node_id,
        input_name,
        cls,
        title,
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
    typed = (_node_params(node_id, node, object_info) for node_id, node in graph.items())
    return tuple(param for params in typed for param in params)


#: the literal inputs of the nodes last typed, by node id and class, with the definition
#: and a copy of the node they were typed from (only the definition is held, not all the
#: server's definitions): every job of a batch is a copy of one workflow with a few values
#: bound, so most of its nodes are typed as they were for the job before
_TYPED: dict[tuple[str, Any], tuple[Any, Any, tuple[Param, ...]]] = {}
_TYPED_KEPT = 4096


def _node_params(
    node_id: str, node: Mapping[str, Any], object_info: Mapping[str, Any]
) -> tuple[Param, ...]:
    """The parameters of ``node``'s literal inputs (as they were, if it was typed before)."""
    cls = node["class_type"]
    definition = object_info.get(cls)
    try:
        known = _TYPED.get((node_id, cls))
    except TypeError:  # a class that is not text (the graph is invalid): not kept
        return _typed_inputs(node_id, node, definition)
    if known is not None and known[0] is definition and _same(known[1], node):
        return known[2]
    params = _typed_inputs(node_id, node, definition)
    if len(_TYPED) >= _TYPED_KEPT:
        _TYPED.clear()
    _TYPED[(node_id, cls)] = (definition, copy_json(dict(node)), params)
    return params


def _same(typed: Any, node: Any) -> bool:
    """Whether ``node`` is the node ``typed`` was, its values of the same types (``1``,
    ``1.0`` and ``True`` are equal, but make parameters of three types)."""
    return bool(typed == node) and _same_types(typed.get("inputs"), node.get("inputs"))


def _same_types(a: Any, b: Any) -> bool:
    """For equal values ``a`` and ``b``: whether they hold values of the same types."""
    if isinstance(a, dict):
        return all(_same_types(value, b[key]) for key, value in a.items())
    if isinstance(a, list):
        return all(map(_same_types, a, b))
    return type(a) is type(b)


def _typed_inputs(
    node_id: str, node: Mapping[str, Any], definition: Mapping[str, Any] | None
) -> tuple[Param, ...]:
    inputs = node.get("inputs") or {}
    specs = node_inputs(definition, inputs) if definition is not None else {}
    return tuple(
        _typed(f"{node_id}.{name}", node_id, node, name, value, specs.get(name), "")
        for name, value in inputs.items()
        if not is_link(value)
    )


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
