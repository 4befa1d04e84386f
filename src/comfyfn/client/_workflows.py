"""Where a client's workflows come from: a built-in name, a path (JSON or PNG; API or UI
format), a dict, or a blueprint or template the server serves (``"blueprint:NAME"``,
``"template:NAME"``); and the built-in one for parameters given without a workflow."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from comfyfn.client._http import HttpSession
from comfyfn.errors import ConfigError
from comfyfn.workflow import (
    BUILTIN,
    SERVED_ROUTES,
    Workflow,
    builtin,
    list_server_workflows,
    served_workflow,
    server_source,
)

__all__ = ["WorkflowSource", "default_workflow", "load_workflow", "served_names"]

#: A workflow by built-in name, path (JSON or PNG; API or UI format), dict, or one the
#: server serves (``"blueprint:NAME"``, ``"template:NAME"``).
WorkflowSource = str | Path | Mapping[str, Any]


def default_workflow(params: Mapping[str, Any]) -> str:
    """The built-in workflow for ``params`` when none is given: ``zimage-control`` with a
    ``control_image``, else ``zimage-edit`` with an ``image``, else ``zimage-turbo``."""
    if params.get("control_image") is not None:
        return "zimage-control"
    return "zimage-edit" if params.get("image") is not None else "zimage-turbo"


async def load_workflow(
    source: WorkflowSource | Workflow,
    info: dict[str, Any],
    http: Callable[[], Awaitable[HttpSession]],
) -> Workflow:
    """``source`` loaded with the node definitions ``info`` of the server ``http`` gives the
    session of (asked only for a workflow the server serves)."""
    if isinstance(source, Workflow):
        return source.with_definitions(info)
    if isinstance(source, str) and source in BUILTIN:
        return builtin(source).with_definitions(info)
    if server_source(source) is not None:
        assert isinstance(source, str)
        session = await http()
        return await served_workflow(source, session.get_json, session.server, info)
    return Workflow.load(source, object_info=info)


async def served_names(kind: str, http: Callable[[], Awaitable[HttpSession]]) -> list[str]:
    """The names of the blueprints or templates (``kind``) the server ``http`` gives the
    session of serves (a ConfigError for another kind, before the server is asked)."""
    if kind not in SERVED_ROUTES:
        raise ConfigError(f"unknown kind {kind!r}; choose from {', '.join(SERVED_ROUTES)}")
    session = await http()
    return await list_server_workflows(kind, session.get_json, session.server)
