"""Inputs named by path, and choosing a dynamic combo's option (pure).

A path is ``"<node id or title>.<input>"``; the input may itself hold dots (``95.format``,
``95.format.bit_depth``: an input a dynamic combo's option adds). Setting a dynamic combo
(``COMFY_DYNAMICCOMBO_V3``) to another option changes the node's inputs as the frontend
does: the inputs of the options not chosen go, the chosen option's widgets come with
their defaults (values given in the same call then overwrite them).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from comfyfn.errors import NodeProblem, WorkflowInvalid
from comfyfn.workflow._definitions import DYNAMIC_COMBO, InputSpec, input_spec, node_inputs
from comfyfn.workflow._graph import ApiGraph, is_link
from comfyfn.workflow._meaning import MEANINGS, Slot
from comfyfn.workflow._widgets import api_value, default_value

__all__ = ["choose_option", "dynamic_combo", "path_slot"]


def _nodes_named(graph: ApiGraph, head: str) -> list[str]:
    if head in graph:
        return [head]
    return [n for n, node in graph.items() if (node.get("_meta") or {}).get("title") == head]


def path_slot(graph: ApiGraph, path: str) -> Slot:
    """``"node_id.input"`` or ``"Title.input"`` → the slot; unknown or ambiguous is an error."""
    splits = [i for i, char in enumerate(path) if char == "."]
    for i in splits:  # the node part is the shortest head naming a node that has that input
        head, input_name = path[:i], path[i + 1 :]
        found = _nodes_named(graph, head)
        if len(found) == 1 and input_name in (graph[found[0]].get("inputs") or {}):
            return (found[0], input_name)
    head, sep, input_name = path.rpartition(".")
    if not sep or not head:
        raise WorkflowInvalid(
            [NodeProblem(None, None, path, f"unknown parameter {path!r}")],
            summary=f"unknown parameter; named ones: {', '.join(MEANINGS)}",
        )
    heads = [(path[:i], _nodes_named(graph, path[:i])) for i in splits]
    head, node_ids = next(((h, ids) for h, ids in heads if ids), (head, []))
    if len(node_ids) != 1:
        what = (
            "no node has that id or title"
            if not node_ids
            else ("several nodes have that title: " + ", ".join(node_ids))
        )
        raise WorkflowInvalid(
            [NodeProblem(None, None, path, f"{path!r}: {what}")],
            summary="cannot find the node to bind",
        )
    node_id, input_name = node_ids[0], path[len(head) + 1 :]
    known = ", ".join(graph[node_id].get("inputs", {}))
    raise WorkflowInvalid(
        [
            NodeProblem(
                node_id,
                graph[node_id].get("class_type"),
                input_name,
                f"has no input {input_name!r} (inputs: {known})",
            )
        ],
        summary="cannot find the input to bind",
    )


def dynamic_combo(graph: ApiGraph, definitions: Mapping[str, Any], slot: Slot) -> InputSpec | None:
    """The spec of the input at ``slot`` if it is a dynamic combo."""
    node = graph[slot[0]]
    spec = input_spec(definitions, str(node.get("class_type")), slot[1], node.get("inputs"))
    return spec if spec is not None and spec.type == DYNAMIC_COMBO else None


def choose_option(
    graph: ApiGraph, definitions: Mapping[str, Any], slot: Slot, key: Any
) -> NodeProblem | None:
    """Set the dynamic combo at ``slot`` to option ``key`` and lay out its inputs anew;
    an option the combo does not have is a problem (nothing changes)."""
    node_id, name = slot
    node = graph[node_id]
    spec = dynamic_combo(graph, definitions, slot)
    if spec is None or key not in (spec.choices or ()):
        shown = ", ".join(map(repr, (spec.choices or ()) if spec else ()))
        return NodeProblem(
            node_id, node.get("class_type"), name, f"{name} {key!r} is not one of [{shown}]"
        )
    inputs: dict[str, Any] = node.setdefault("inputs", {})
    if inputs.get(name) == key:
        return None
    old = {n: inputs.pop(n) for n in [n for n in inputs if n.startswith(f"{name}.")]}
    inputs[name] = key
    live = node_inputs(definitions[node["class_type"]], inputs)
    # links into inputs the new option has too are kept; its widgets start from defaults
    inputs.update({n: v for n, v in old.items() if is_link(v) and n in live})
    for new, new_spec in live.items():
        if new not in inputs and new_spec.is_widget:
            value = default_value(new_spec)
            if value is not None:
                inputs[new] = api_value(value)
    return None
