"""Partner nodes: ComfyUI nodes that call a paid cloud service through Comfy.org (``api_node:
true`` in their definition). They run only with a Comfy.org API key, which ComfyUI takes
in the prompt's ``extra_data`` under :data:`EXTRA_DATA_KEY` (and keeps out of its queue and
history); comfyfn takes it from ``--comfy-org-key`` or :data:`KEY_ENV`, and never shows or
records it. Without a key a workflow that would run one is refused before it is sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from comfyfn.errors import NodeProblem
from comfyfn.workflow._graph import ApiGraph

__all__ = ["EXTRA_DATA_KEY", "KEY_ENV", "partner_nodes", "partner_problems"]

#: where ComfyUI reads the key (``execution.SENSITIVE_EXTRA_DATA_KEYS``)
EXTRA_DATA_KEY = "api_key_comfy_org"
#: the environment variable comfyfn reads the key from
KEY_ENV = "COMFY_ORG_API_KEY"


def partner_nodes(
    graph: ApiGraph, object_info: Mapping[str, Any], among: list[str] | None = None
) -> list[tuple[str, str]]:
    """``(node id, class)`` of each partner node of ``graph`` (of the nodes ``among``)."""
    ids = list(graph) if among is None else among
    return [
        (node_id, cls)
        for node_id in ids
        if (object_info.get(cls := str(graph[node_id].get("class_type"))) or {}).get("api_node")
        is True
    ]


def partner_problems(
    graph: ApiGraph, object_info: Mapping[str, Any], among: list[str] | None = None
) -> list[NodeProblem]:
    """One problem per partner node: it needs a Comfy.org API key."""
    return [
        NodeProblem(
            node_id,
            cls,
            None,
            "a partner node (a paid cloud service through Comfy.org): it runs only with a "
            f"Comfy.org API key (--comfy-org-key or {KEY_ENV})",
            "partner_node",
        )
        for node_id, cls in partner_nodes(graph, object_info, among)
    ]
