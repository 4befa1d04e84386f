"""API-format graphs: loading and small helpers for reading and editing them (pure).

An API-format graph maps node id → ``{"class_type", "inputs", "_meta"?}``; a link is an input
value ``[source_id, output_index]``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TypeGuard

from comfyfn.errors import NodeProblem, WorkflowInvalid

__all__ = [
    "ApiGraph",
    "checked_api_graph",
    "class_types",
    "downstream",
    "is_link",
    "is_literal",
    "linked_from",
    "load_api_graph",
    "new_node_id",
    "set_input",
]

ApiGraph = dict[str, dict[str, Any]]


def is_link(value: object) -> TypeGuard[list[Any]]:
    """True for an input value that is a link ``[node_id, output_index]``."""
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str | int)
        and isinstance(value[1], int)
    )


def load_api_graph(source: str | Path | Mapping[str, Any]) -> ApiGraph:
    """Load an API-format graph from a path, a JSON string or a mapping (deep-copied)."""
    if isinstance(source, Mapping):
        data: Any = copy.deepcopy(dict(source))
    else:
        text = str(source)
        if isinstance(source, Path) or not text.lstrip().startswith("{"):
            try:
                text = Path(source).read_text(encoding="utf-8")
            except OSError as exc:
                raise WorkflowInvalid(
                    [NodeProblem(None, None, None, f"cannot read {source}: {exc.strerror}")],
                    summary="cannot load the workflow",
                ) from exc
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise WorkflowInvalid(
                [NodeProblem(None, None, None, f"not JSON: {exc}")],
                summary="cannot load the workflow",
            ) from exc
    return checked_api_graph(data)


def checked_api_graph(data: Any) -> ApiGraph:
    """``data`` (parsed JSON, not copied: the caller's own) as an API-format graph, or
    :class:`WorkflowInvalid` saying why it is not one."""
    if isinstance(data, dict) and "nodes" in data and "links" in data:
        raise WorkflowInvalid(
            [
                NodeProblem(
                    None,
                    None,
                    None,
                    "this is the UI (save) format; export it with "
                    "'Export (API)' in ComfyUI or load it with comfyfn.Workflow",
                )
            ],
            summary="not an API-format workflow",
        )
    if not isinstance(data, dict) or not data:
        raise WorkflowInvalid(
            [NodeProblem(None, None, None, "expected a JSON object of node id → node")],
            summary="not an API-format workflow",
        )
    problems = [
        NodeProblem(str(nid), None, None, "has no class_type/inputs (not API format)")
        for nid, node in data.items()
        if not isinstance(node, dict)
        or "class_type" not in node
        or not isinstance(node.get("inputs", {}), dict)
    ]
    if problems:
        raise WorkflowInvalid(problems, summary="not an API-format workflow")
    return {str(k): v for k, v in data.items()}


def linked_from(graph: ApiGraph, node_id: str, input_name: str) -> str | None:
    """The id of the node linked into ``node_id.input_name``, if it is a link."""
    value = graph[node_id].get("inputs", {}).get(input_name)
    if is_link(value) and str(value[0]) in graph:
        return str(value[0])
    return None


def is_literal(graph: ApiGraph, node_id: str, name: str) -> bool:
    inputs = graph[node_id].get("inputs", {})
    return name in inputs and not is_link(inputs[name])


def downstream(graph: ApiGraph, node_id: str) -> Iterator[str]:
    """Ids of nodes with an input linked from ``node_id``."""
    for nid, node in graph.items():
        if any(is_link(v) and str(v[0]) == node_id for v in node.get("inputs", {}).values()):
            yield nid


def class_types(graph: ApiGraph) -> dict[str, str]:
    """Node id → class type, for naming nodes in events and errors."""
    return {nid: str(node.get("class_type")) for nid, node in graph.items()}


def set_input(graph: ApiGraph, node_id: str, name: str, value: Any) -> None:
    graph[node_id].setdefault("inputs", {})[name] = value


def new_node_id(graph: ApiGraph) -> str:
    numeric = [int(k) for k in graph if k.isdigit()]
    return str(max(numeric, default=0) + 1)
