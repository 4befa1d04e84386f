"""Workflows a ComfyUI server serves itself: subgraph blueprints and templates.

- ``blueprint:NAME``: a subgraph blueprint (``GET /global_subgraphs`` lists them by id, each
  with its ``name``; ``GET /global_subgraphs/{id}`` gives the UI workflow as a JSON string
  under ``data``). ComfyUI ships its core blueprints ("Text to Image (Z-Image-Turbo)"...)
  in ``blueprints/``; custom node packs add theirs. A blueprint is one subgraph instance
  whose outputs lead nowhere (the user wires them on the canvas): each output of a type
  some save node takes is given one (IMAGE → SaveImage...).
- ``template:NAME``: a workflow template (``GET /templates/index.json`` lists them by
  category; ``GET /templates/NAME.json`` is the UI workflow), served where the
  ``comfyui-workflow-templates`` package is installed beside the server.

What a server can do is asked, never inferred from its version: a list route that answers
404 or 405 is :class:`RouteMissing`, naming the route.

This layer does no I/O: the fetching is done by a ``get_json(path)`` coroutine of the
caller's (the client's session), which raises :class:`~comfyfn.errors.HTTPStatusError` for
an error status.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import quote

from comfyfn.errors import ConfigError, HTTPStatusError, ProtocolError

__all__ = [
    "SERVED_ROUTES",
    "GetJson",
    "RouteMissing",
    "list_server_workflows",
    "server_source",
    "server_workflow",
    "with_save_nodes",
]

#: GET a path of the server, its JSON answer; an error status raises HTTPStatusError
GetJson = Callable[[str], Awaitable[Any]]

#: kind → the route that lists what a server has of it
SERVED_ROUTES: Mapping[str, str] = {
    "blueprint": "/global_subgraphs",
    "template": "/templates/index.json",
}
#: an output type → the save node that takes it and that node's input
_SAVE_NODES: Mapping[str, tuple[str, str]] = {
    "IMAGE": ("SaveImage", "images"),
    "VIDEO": ("SaveVideo", "video"),
    "AUDIO": ("SaveAudio", "audio"),
}
_ABSENT = (404, 405)


class RouteMissing(ConfigError):
    """The server lacks the route a request needs (an older ComfyUI, or a package it serves
    from is not installed there). ``route`` names it."""

    def __init__(self, message: str, *, server: str | None, route: str) -> None:
        super().__init__(message, server=server)
        self.route = route


def server_source(source: object) -> tuple[str, str] | None:
    """``"blueprint:NAME"`` → ``("blueprint", "NAME")`` (likewise ``template:``); None for
    anything else."""
    if not isinstance(source, str):
        return None
    kind, sep, name = source.partition(":")
    return (kind, name.strip()) if sep and kind in SERVED_ROUTES and name.strip() else None


async def _listed(kind: str, get_json: GetJson, server: str) -> Any:
    route = SERVED_ROUTES[kind]
    try:
        return await get_json(route)
    except HTTPStatusError as exc:
        if exc.status_code not in _ABSENT:
            raise
        why = (
            "an older ComfyUI"
            if kind == "blueprint"
            else "the comfyui-workflow-templates package is not installed beside it"
        )
        raise RouteMissing(
            f"ComfyUI at {server} serves no {kind}s: GET {route} answered HTTP "
            f"{exc.status_code} ({why})",
            server=server,
            route=route,
        ) from None


def _blueprint_ids(listing: Any) -> dict[str, str]:
    """name → id; the first of a name wins (ComfyUI's core ones come after custom nodes')."""
    entries = listing.items() if isinstance(listing, Mapping) else ()
    found: dict[str, str] = {}
    for entry_id, entry in entries:
        name = entry.get("name") if isinstance(entry, Mapping) else None
        if isinstance(name, str):
            found.setdefault(name, str(entry_id))
    return found


def _template_names(index: Any) -> list[str]:
    """The template names of ``index.json`` (a list of categories, each with ``templates``)."""
    names: list[str] = []
    for category in index if isinstance(index, list) else ():
        for template in (category.get("templates") if isinstance(category, Mapping) else ()) or ():
            name = template.get("name") if isinstance(template, Mapping) else None
            if isinstance(name, str) and name not in names:
                names.append(name)
    return names


async def list_server_workflows(kind: str, get_json: GetJson, server: str) -> list[str]:
    """The names of the ``kind`` workflows (``blueprint`` or ``template``) the server serves;
    :class:`RouteMissing` where it has no such route."""
    listing = await _listed(kind, get_json, server)
    return list(_blueprint_ids(listing)) if kind == "blueprint" else _template_names(listing)


def _unknown(kind: str, name: str, names: list[str], server: str) -> ConfigError:
    near = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    if near:
        hint = "did you mean " + ", ".join(map(repr, near)) + "?"
    else:
        hint = f"it serves {len(names)}" + (" (comfyfn workflow list --server)" if names else "")
    return ConfigError(f"ComfyUI at {server} serves no {kind} {name!r}; {hint}", server=server)


async def server_workflow(source: str, get_json: GetJson, server: str) -> dict[str, Any]:
    """The UI workflow ``source`` (``blueprint:NAME`` or ``template:NAME``) names, as the
    server serves it; a blueprint comes with save nodes on its outputs (see the module)."""
    parsed = server_source(source)
    if parsed is None:
        raise ConfigError(f"{source!r} is not blueprint:NAME nor template:NAME")
    kind, name = parsed
    if kind == "template":
        names = _template_names(await _listed(kind, get_json, server))
        if name not in names:
            raise _unknown(kind, name, names, server)
        return _workflow_object(await get_json(f"/templates/{quote(name)}.json"), source, server)
    ids = _blueprint_ids(await _listed(kind, get_json, server))
    if name not in ids:
        raise _unknown(kind, name, list(ids), server)
    entry = await get_json(f"/global_subgraphs/{quote(ids[name], safe='')}")
    data = entry.get("data") if isinstance(entry, Mapping) else None
    try:
        workflow = json.loads(data) if isinstance(data, str) else None
    except json.JSONDecodeError:
        workflow = None
    return with_save_nodes(_workflow_object(workflow, source, server))


def _workflow_object(data: Any, source: str, server: str) -> dict[str, Any]:
    if not isinstance(data, dict) or not isinstance(data.get("nodes"), list):
        raise ProtocolError(
            f"ComfyUI at {server} answered {source!r} with something that is not a UI workflow",
            server=server,
            method="GET",
            path=source,
        )
    return data


def with_save_nodes(ui: dict[str, Any]) -> dict[str, Any]:
    """``ui`` with a save node on each top-level output that leads nowhere and whose type
    one takes (a blueprint's subgraph instance: its IMAGE goes to a SaveImage)."""
    nodes: list[dict[str, Any]] = ui["nodes"]
    links: list[Any] = ui.setdefault("links", [])
    next_node = max([int(n.get("id", 0)) for n in nodes] + [int(ui.get("last_node_id") or 0)])
    next_link = max([int(x[0]) for x in links if isinstance(x, list) and x] + [0])
    next_link = max(next_link, int(ui.get("last_link_id") or 0))
    for node in list(nodes):
        for slot, output in enumerate(node.get("outputs") or ()):
            save = _SAVE_NODES.get(str(output.get("type")))
            if save is None or output.get("links"):
                continue
            next_node, next_link = next_node + 1, next_link + 1
            kind, input_name = save
            nodes.append(
                {
                    "id": next_node,
                    "type": kind,
                    "mode": 0,
                    "inputs": [{"name": input_name, "type": output["type"], "link": next_link}],
                    "outputs": [],
                }
            )
            links.append([next_link, node["id"], slot, next_node, 0, output["type"]])
            output["links"] = [next_link]
    ui["last_node_id"], ui["last_link_id"] = next_node, next_link
    return ui
