"""Check an API-format graph against the server's node definitions before submitting (pure).

Each problem names node, class and input, like ComfyUI's own 400 answer but before anything
is sent: unknown classes, missing required inputs, links to missing nodes or of the wrong
type, values of the wrong type or out of min/max/step, choices the server does not offer
(model files: which folder they belong in), and graphs with no output node.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from comfyfn.errors import NodeProblem, WorkflowInvalid
from comfyfn.workflow._definitions import InputSpec, input_spec, output_types
from comfyfn.workflow._graph import ApiGraph, is_link

__all__ = ["check", "problems"]


def _types_match(received: str, expected: str) -> bool:
    if "*" in (received, expected) or received == expected:
        return True
    return bool(set(received.split(",")) & set(expected.split(",")))


def _value_problem(spec: InputSpec, value: Any, check_files: bool) -> str | None:
    name, opts = spec.name, spec.options
    if spec.type == "INT":
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                return f"{name} {value!r} is not an integer"
    elif spec.type == "FLOAT":
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            return f"{name} {value!r} is not a number"
    elif spec.type == "STRING":
        if not isinstance(value, str):
            return f"{name} {value!r} is not text"
    elif spec.type == "BOOLEAN":
        if not isinstance(value, bool):
            return f"{name} {value!r} is not true/false"
    elif spec.type == "COMBO":
        if spec.folder and not check_files:
            return None
        if any(k.endswith("upload") and v for k, v in opts.items()):
            # the list shows only top-level input files; subfolders are checked by the server
            if isinstance(value, str) and "/" not in value and value not in (spec.choices or ()):
                return (
                    f"{name} {value!r} is not among the server's input files; upload it "
                    "first (client.upload_image)"
                )
            return None
        if spec.choices is not None and value not in spec.choices:
            if spec.folder:
                return (
                    f"{name} {value!r} is not on the server; put it in "
                    f"models/{spec.folder}/ (the server has: "
                    f"{', '.join(map(repr, spec.choices[:6])) or 'none'})"
                )
            shown = ", ".join(map(repr, spec.choices[:8])) + (
                ", …" if len(spec.choices) > 8 else ""
            )
            return f"{name} {value!r} is not one of [{shown}]"
        return None
    if spec.type in ("INT", "FLOAT"):
        low, high, step = opts.get("min"), opts.get("max"), opts.get("step")
        if low is not None and value < low:
            return f"{name} {value} is smaller than the minimum {low}"
        if high is not None and value > high:
            return f"{name} {value} is bigger than the maximum {high}"
        if (
            spec.type == "INT"
            and isinstance(step, int)
            and step > 1
            and (value - (low or 0)) % step
        ):
            return f"{name} {value} is not a multiple of {step}"
    return None


def problems(
    graph: ApiGraph, object_info: Mapping[str, Any], *, check_files: bool = True
) -> list[NodeProblem]:
    """Every problem found; ``check_files=False`` skips model-file choices (offline checks)."""
    found: list[NodeProblem] = []
    has_output = False
    for node_id, node in graph.items():
        cls = str(node.get("class_type"))
        definition = object_info.get(cls)
        if definition is None:
            found.append(
                NodeProblem(
                    node_id,
                    cls,
                    None,
                    "unknown node class (not installed on the server)",
                    "unknown_class",
                )
            )
            continue
        has_output = has_output or bool(definition.get("output_node"))
        inputs = node.get("inputs") or {}
        for name in definition.get("input", {}).get("required") or {}:
            if name not in inputs:
                found.append(
                    NodeProblem(
                        node_id,
                        cls,
                        name,
                        f"required input {name!r} is missing",
                        "required_input_missing",
                    )
                )
        for name, value in inputs.items():
            spec = input_spec(object_info, cls, name)
            if spec is None:
                continue  # extra inputs are ignored by ComfyUI
            if is_link(value):
                source = str(value[0])
                if source not in graph:
                    found.append(
                        NodeProblem(
                            node_id,
                            cls,
                            name,
                            f"{name} links to node {source}, which is not in the workflow",
                            "missing_link_source",
                        )
                    )
                    continue
                outputs = output_types(object_info, str(graph[source].get("class_type")))
                if value[1] >= len(outputs) and outputs:
                    found.append(
                        NodeProblem(
                            node_id,
                            cls,
                            name,
                            f"{name} links to output {value[1]} of node {source}"
                            f", which has {len(outputs)}",
                            "bad_link_slot",
                        )
                    )
                    continue
                received = str(outputs[value[1]]) if outputs else "*"
                expected = "COMBO" if spec.type == "COMBO" else spec.type
                if outputs and not _types_match(received, expected):
                    found.append(
                        NodeProblem(
                            node_id,
                            cls,
                            name,
                            f"{name} expects {expected} but receives {received} from node {source}",
                            "return_type_mismatch",
                        )
                    )
                continue
            message = _value_problem(spec, value, check_files)
            if message:
                found.append(NodeProblem(node_id, cls, name, message, "bad_value"))
    if graph and not has_output:
        found.append(
            NodeProblem(
                None,
                None,
                None,
                "the workflow has no output node (SaveImage, PreviewImage...)",
                "prompt_no_outputs",
            )
        )
    return found


def check(
    graph: ApiGraph,
    object_info: Mapping[str, Any],
    *,
    server: str | None = None,
    check_files: bool = True,
) -> None:
    """Raise :class:`WorkflowInvalid` listing every problem, if there is any."""
    found = problems(graph, object_info, check_files=check_files)
    if found:
        where = f" for {server}" if server else ""
        raise WorkflowInvalid(found, server=server, summary=f"the workflow is invalid{where}")
