"""Turn ComfyUI's ``POST /prompt`` 400 body into a readable :class:`WorkflowInvalid` (pure)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from comfyfn.errors import NodeProblem, WorkflowInvalid

__all__ = ["workflow_invalid_from_response"]

_NODE_ID_IN_DETAILS = re.compile(r"Node ID '#?([^']+)'")
#: ComfyUI ≤ 0.3's message for an unknown class (0.28 names it in ``extra_info`` instead)
_UNKNOWN_CLASS = re.compile(r"Cannot execute because node (.+) does not exist\.")


def _problem(node_id: str, class_type: str | None, err: Mapping[str, Any]) -> NodeProblem:
    kind = err.get("type", "invalid")
    extra = err.get("extra_info") or {}
    name = extra.get("input_name")
    details = str(err.get("details") or "")
    message = str(err.get("message") or kind)
    received = extra.get("received_value")
    config = extra.get("input_config")
    if kind == "required_input_missing":
        text = f"required input {name or details!r} is missing"
    elif kind == "value_not_in_list":
        options = (
            config[0] if isinstance(config, list) and config and isinstance(config[0], list) else []
        )
        shown = ", ".join(repr(o) for o in options[:8]) + (", …" if len(options) > 8 else "")
        text = f"{name} {received!r} is not one of the server's choices [{shown}]"
    elif kind in ("value_smaller_than_min", "value_bigger_than_max"):
        text = f"{name} {received!r}: {message}"
    elif kind == "return_type_mismatch":
        link = extra.get("linked_node")
        source = f" from node {link[0]} output {link[1]}" if isinstance(link, list) else ""
        expected = config[0] if isinstance(config, list) and config else "?"
        text = f"{name} expects {expected} but receives {extra.get('received_type')}{source}"
    elif kind == "invalid_input_type":
        text = f"{name} {received!r} has the wrong type: {extra.get('exception_message', message)}"
    elif kind == "exception_during_validation":
        text = f"validation raised {extra.get('exception_type', 'an exception')}: {details}"
        if extra.get("exception_type") == "KeyError":
            text += " (a link points at a node that is not in the workflow)"
    else:
        text = f"{name}: {message}" if name else f"{message}{': ' + details if details else ''}"
    return NodeProblem(node_id, class_type, name, text, kind)


def _graph_problem(error: Mapping[str, Any]) -> NodeProblem:
    """The one problem of a graph-level rejection (``error`` without ``node_errors``).

    An unknown node class reads the same on every version, naming the class and the node:
    0.3.75 says so in its message, 0.28 (type ``missing_node_type``) in ``extra_info``, with
    a message that names the node's title instead.
    """
    kind = str(error.get("type", "invalid"))
    message = str(error.get("message") or "the server rejected the workflow")
    details = str(error.get("details") or "")
    extra = error.get("extra_info")
    extra = extra if isinstance(extra, Mapping) else {}
    match = _NODE_ID_IN_DETAILS.search(details)
    node_id = _text(extra.get("node_id")) or (match.group(1) if match else None)
    unknown = _UNKNOWN_CLASS.fullmatch(message)
    class_type = _text(extra.get("class_type")) or (unknown.group(1) if unknown else None)
    if class_type is not None:
        title = _text(extra.get("node_title"))
        titled = f" (titled {title!r})" if title and title != class_type else ""
        text = f"node class {class_type} does not exist on the server{titled}: not installed?"
        return NodeProblem(node_id, class_type, None, text, kind)
    shown = "" if match or not details or details == message else f" ({details})"
    return NodeProblem(node_id, None, None, message + shown, kind)


def _text(value: Any) -> str | None:
    return str(value) if isinstance(value, str | int) and str(value) else None


def workflow_invalid_from_response(body: Any, *, server: str | None = None) -> WorkflowInvalid:
    """Build the error for a 400 answer to ``POST /prompt``.

    ComfyUI reports graph-level problems in ``error`` (unknown class, no outputs...) and
    per-node problems in ``node_errors``; each becomes one line of the message.
    """
    if not isinstance(body, Mapping):
        return WorkflowInvalid(
            [NodeProblem(None, None, None, str(body)[:500])], server=server, raw=body
        )
    error = body.get("error") or {}
    if isinstance(error, str):
        error = {"message": error}
    problems: list[NodeProblem] = []
    for node_id, info in (body.get("node_errors") or {}).items():
        for err in info.get("errors") or ():
            problems.append(_problem(str(node_id), info.get("class_type"), err))
    if not problems:
        problems.append(_graph_problem(error))
    summary = "the server rejected the workflow"
    if error.get("type") == "prompt_outputs_failed_validation":
        summary = "the server rejected the workflow: prompt outputs failed validation"
    return WorkflowInvalid(problems, server=server, summary=summary, raw=body)
