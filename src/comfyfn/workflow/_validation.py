"""Check an API-format graph against the server's node definitions before submitting (pure).

Each problem names node, class and input, like ComfyUI's own 400 answer but before anything
is sent: unknown classes, missing required inputs, links to missing nodes or of the wrong
type, values of the wrong type or out of min/max/step, choices the server does not offer
(model files: which folder they belong in), and graphs with no output node. V3 dynamic
inputs are checked as the server expands them: a dynamic combo's choice and the inputs its
option adds (``format.bit_depth``), autogrow sockets (``images.image0``), and match-type
sockets against their allowed types, an output of a match-type node having the type linked
into it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from comfyfn.errors import NodeProblem, WorkflowInvalid
from comfyfn.workflow._definitions import (
    CAPTURED_WIDGETS,
    MATCH_TYPE,
    InputSpec,
    node_inputs,
    output_types,
)
from comfyfn.workflow._graph import ApiGraph, is_link
from comfyfn.workflow._partner import partner_problems

__all__ = ["check", "problems"]

_MAX_DEPTH = 32


def _types_match(received: str, expected: str) -> bool:
    if "*" in (received, expected) or received == expected:
        return True
    return bool(set(received.split(",")) & set(expected.split(",")))


def _is_int(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


#: Widget type → (is the value of that type, what to call it).
_SCALARS: Mapping[str, tuple[Callable[[Any], bool], str]] = {
    "INT": (_is_int, "an integer"),
    "FLOAT": (_is_number, "a number"),
    "STRING": (lambda value: isinstance(value, str), "text"),
    "BOOLEAN": (lambda value: isinstance(value, bool), "true/false"),
}


def _scalar_problem(spec: InputSpec, value: Any) -> str | None:
    name, kind = spec.name, spec.value_type
    if kind not in _SCALARS:
        return None
    is_right, what = _SCALARS[kind]
    if not is_right(value):
        return f"{name} {value!r} is not {what}"
    if kind not in ("INT", "FLOAT"):
        return None
    low, high, step = spec.options.get("min"), spec.options.get("max"), spec.options.get("step")
    if low is not None and value < low:
        return f"{name} {value} is smaller than the minimum {low}"
    if high is not None and value > high:
        return f"{name} {value} is bigger than the maximum {high}"
    if kind == "INT" and isinstance(step, int) and step > 1 and (value - (low or 0)) % step:
        return f"{name} {value} is not a multiple of {step}"
    return None


def _choice_problem(spec: InputSpec, value: Any, check_files: bool) -> str | None:
    name = spec.name
    if spec.is_input_file:
        # the list shows only top-level input files; subfolders are checked by the server
        listed = value in (spec.choices or ()) or not isinstance(value, str) or "/" in value
        if check_files and not listed:
            return (
                f"{name} {value!r} is not among the server's input files; upload it "
                "first (client.upload_image)"
            )
        return None
    values = value if isinstance(value, list) and spec.options.get("multiselect") else [value]
    if all(v in (spec.choices or ()) for v in values):
        return None
    if spec.is_model_file(value):
        if not check_files:
            return None
        where = f"put it in models/{spec.folder}/" if spec.folder else "put it in models/"
        offered = ", ".join(map(repr, (spec.choices or ())[:6])) or "none"
        return f"{name} {value!r} is not on the server; {where} (the server has: {offered})"
    if not spec.choices:
        return None  # no choices at all: the frontend makes them (CustomCombo), not the server
    shown = ", ".join(map(repr, spec.choices[:8])) + (", …" if len(spec.choices) > 8 else "")
    return f"{name} {value!r} is not one of [{shown}]"


def _value_problem(spec: InputSpec, value: Any, check_files: bool) -> str | None:
    if isinstance(value, Mapping) and "__value__" in value:
        value = value["__value__"]  # a list value, wrapped so it is not read as a link
    if spec.is_combo:
        return _choice_problem(spec, value, check_files)
    if spec.type in CAPTURED_WIDGETS:
        if spec.needs_capture and value in ("", None, {}):
            return (
                f"{spec.name} holds no capture: only the ComfyUI frontend makes this "
                f"{spec.type} value; queue this workflow from ComfyUI once, or use its "
                "'Export (API)'"
            )
        return None
    return _scalar_problem(spec, value)


def _received_type(
    graph: ApiGraph, object_info: Mapping[str, Any], link: list[Any], depth: int = 0
) -> str:
    """The type a link carries; a match-type output carries what is linked into its group."""
    source = graph[str(link[0])]
    cls = str(source.get("class_type"))
    outputs = output_types(object_info, cls)
    if not outputs:
        return "*"
    kind = str(outputs[link[1]])
    if kind != MATCH_TYPE or depth > _MAX_DEPTH:
        return "*" if kind == MATCH_TYPE else kind
    groups = (object_info.get(cls) or {}).get("output_matchtypes") or ()
    group = groups[link[1]] if link[1] < len(groups) else None
    inputs = source.get("inputs") or {}
    specs = node_inputs(object_info[cls], inputs)
    for name, value in inputs.items():
        spec = specs.get(name)
        matching = spec is not None and spec.match_group == group
        if matching and is_link(value) and str(value[0]) in graph:
            return _received_type(graph, object_info, value, depth + 1)
    return "*"


def _link_problem(
    graph: ApiGraph, object_info: Mapping[str, Any], spec: InputSpec, link: list[Any]
) -> tuple[str, str] | None:
    name, source = spec.name, str(link[0])
    if source not in graph:
        return f"{name} links to node {source}, which is not in the workflow", "missing_link_source"
    outputs = output_types(object_info, str(graph[source].get("class_type")))
    if outputs and link[1] >= len(outputs):
        return (
            f"{name} links to output {link[1]} of node {source}, which has {len(outputs)}",
            "bad_link_slot",
        )
    received, expected = _received_type(graph, object_info, link), spec.accepts
    if not _types_match(received, expected):
        return (
            f"{name} expects {expected} but receives {received} from node {source}",
            "return_type_mismatch",
        )
    return None


def _node_problems(
    graph: ApiGraph,
    object_info: Mapping[str, Any],
    node_id: str,
    definition: Mapping[str, Any],
    check_files: bool,
) -> list[NodeProblem]:
    cls = str(graph[node_id].get("class_type"))
    inputs = graph[node_id].get("inputs") or {}
    specs = node_inputs(definition, inputs)
    found = [
        NodeProblem(
            node_id, cls, name, f"required input {name!r} is missing", "required_input_missing"
        )
        for name, spec in specs.items()
        if spec.required and name not in inputs
    ]
    for name, value in inputs.items():
        spec = specs.get(name)
        if spec is None:
            continue  # extra inputs are ignored by ComfyUI
        if is_link(value):
            if (bad := _link_problem(graph, object_info, spec, value)) is not None:
                found.append(NodeProblem(node_id, cls, name, *bad))
        elif (message := _value_problem(spec, value, check_files)) is not None:
            kind = "needs_frontend" if spec.needs_capture else "bad_value"
            found.append(NodeProblem(node_id, cls, name, message, kind))
    return found


def _needed(graph: ApiGraph, object_info: Mapping[str, Any]) -> list[str]:
    """The output nodes and every node they depend on, in graph order (what ComfyUI runs)."""
    needed: set[str] = set()
    todo = [
        n
        for n, node in graph.items()
        if (object_info.get(str(node.get("class_type"))) or {}).get("output_node")
    ]
    while todo:
        node_id = todo.pop()
        if node_id in needed or node_id not in graph:
            continue
        needed.add(node_id)
        todo.extend(str(v[0]) for v in (graph[node_id].get("inputs") or {}).values() if is_link(v))
    return [n for n in graph if n in needed]


def problems(
    graph: ApiGraph, object_info: Mapping[str, Any], *, check_files: bool = True
) -> list[NodeProblem]:
    """Every problem found; ``check_files=False`` skips the server's files (model files and
    input images), which definitions captured elsewhere cannot know (offline checks).

    As in ComfyUI, every node's class must exist, but only the output nodes and the nodes
    they depend on are checked further (a node nothing uses never runs).
    """
    found = [
        NodeProblem(
            node_id, cls, None, "unknown node class (not installed on the server)", "unknown_class"
        )
        for node_id, node in graph.items()
        if (cls := str(node.get("class_type"))) not in object_info
    ]
    needed = _needed(graph, object_info)
    for node_id in needed:
        definition = object_info.get(str(graph[node_id].get("class_type")))
        if definition is not None:
            found.extend(_node_problems(graph, object_info, node_id, definition, check_files))
    if graph and not needed:
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
    partner_key: bool = False,
) -> None:
    """Raise :class:`WorkflowInvalid` listing every problem, if there is any; partner nodes
    that would run are problems too unless ``partner_key`` (a Comfy.org API key goes with
    the job: see ``_partner``)."""
    found = problems(graph, object_info, check_files=check_files)
    paid = [] if partner_key else partner_problems(graph, object_info, _needed(graph, object_info))
    if found or paid:
        where = f" for {server}" if server else ""
        summary = f"the workflow is invalid{where}"
        if paid and not found:
            names = ", ".join(dict.fromkeys(p.class_type or "" for p in paid))
            summary = (
                f"the workflow uses partner (paid cloud) nodes{where}: {names}; they run only "
                "with a Comfy.org API key"
            )
        raise WorkflowInvalid([*found, *paid], server=server, summary=summary)
