"""Convert the UI ("save") workflow format to the API format POST /prompt takes (pure).

The UI format is what ComfyUI's Save button and the official templates write: ``nodes``
with ``widgets_values``, ``links`` as ``[id, origin, origin_slot, target, target_slot,
type]``, and subgraphs under ``definitions.subgraphs``. Converting needs the server's node
definitions (``/object_info``) because widget values are stored by position only.

Rules (those of the frontend's "Export (API)"):

- widget values map, in order, onto the inputs the definition declares as widgets (see
  ``_widgets``: control values skipped, a dynamic combo's option widgets after it, defaults
  for values an older file lacks);
- V3 dynamic sockets keep their names: ``images.image0`` (autogrow), ``resize_type.match``
  (an input a dynamic combo adds), ``on_true`` (match type);
- a linked input takes the link, resolved through Reroute nodes, frontend PrimitiveNodes
  (their value), bypassed nodes (mode 4: the input of the same type passes through) and
  subgraph boundaries; a link from a muted node (mode 2) is dropped;
- notes, groups, muted and bypassed nodes are not emitted;
- a subgraph instance is flattened: inner node ``3`` of instance ``57`` becomes ``"57:3"``
  (nested: ``"57:12:3"``); an instance input that nothing feeds keeps the inner node's own
  widget value (promoted widgets / ``proxyWidgets`` show and edit exactly that value).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from comfyfn.errors import NodeProblem, WorkflowInvalid
from comfyfn.workflow._definitions import declared_inputs, expand
from comfyfn.workflow._graph import ApiGraph
from comfyfn.workflow._widgets import CONTROL_VALUES, api_value, widget_inputs

__all__ = ["is_ui_workflow", "ui_to_api"]

_NOTES = frozenset({"Note", "MarkdownNote", "Reroute", "PrimitiveNode", "Label (rgthree)"})
_MUTED, _BYPASSED = 2, 4
_SUBGRAPH_INPUT, _SUBGRAPH_OUTPUT = -10, -20
_KEEP_OWN = object()  # an unfed subgraph input: the inner node keeps its own widget value
_DROPPED = object()  # fed by a muted node: the input is left out, widget value or not


def is_ui_workflow(data: Any) -> bool:
    return isinstance(data, Mapping) and isinstance(data.get("nodes"), list) and "links" in data


@dataclass(frozen=True)
class _Link:
    origin: int
    origin_slot: int
    target: int
    target_slot: int


@dataclass
class _Graph:
    """One canvas: the root graph or a subgraph definition, with the instance that holds it."""

    nodes: dict[int, dict[str, Any]]
    links: dict[int, _Link]
    prefix: str = ""
    definition: Mapping[str, Any] | None = None  #: the subgraph definition, if a subgraph
    parent: _Graph | None = None
    instance: dict[str, Any] | None = None  #: the instance node in ``parent``
    children: dict[int, _Graph] = field(default_factory=dict)


def _links(raw: Any) -> dict[int, _Link]:
    out = {}
    for link in raw or ():
        if isinstance(link, Mapping):
            out[int(link["id"])] = _Link(
                int(link["origin_id"]),
                int(link["origin_slot"]),
                int(link["target_id"]),
                int(link["target_slot"]),
            )
        elif link:
            out[int(link[0])] = _Link(int(link[1]), int(link[2]), int(link[3]), int(link[4]))
    return out


def _widget_inputs_of(graph: _Graph) -> list[str]:
    """The names of a subgraph's inputs that feed a widget of an inner node, in order."""
    return [
        str(sub_input.get("name"))
        for index, sub_input in enumerate((graph.definition or {}).get("inputs") or ())
        if any(_feeds_widget(graph, link) for link in _from_input(graph, index))
    ]


def _from_input(graph: _Graph, index: int) -> list[_Link]:
    """The links inside a subgraph from its input ``index``."""
    return [
        link
        for link in graph.links.values()
        if link.origin == _SUBGRAPH_INPUT and link.origin_slot == index
    ]


def _feeds_widget(graph: _Graph, link: _Link) -> bool:
    slots = (graph.nodes.get(link.target) or {}).get("inputs") or ()
    return link.target_slot < len(slots) and bool(slots[link.target_slot].get("widget"))


class _Converter:
    def __init__(
        self, ui: Mapping[str, Any], object_info: Mapping[str, Any], strict: bool = True
    ) -> None:
        self.info = object_info
        self.strict = strict
        self.subgraphs = {
            sg["id"]: sg for sg in (ui.get("definitions") or {}).get("subgraphs") or ()
        }
        self.problems: list[NodeProblem] = []
        self.api: ApiGraph = {}
        self.root = self._canvas(ui, "", None, None, None)

    def _canvas(
        self,
        data: Mapping[str, Any],
        prefix: str,
        definition: Mapping[str, Any] | None,
        parent: _Graph | None,
        instance: dict[str, Any] | None,
    ) -> _Graph:
        nodes = {int(n["id"]): n for n in data.get("nodes") or ()}
        graph = _Graph(nodes, _links(data.get("links")), prefix, definition, parent, instance)
        for nid, node in nodes.items():
            if node.get("type") in self.subgraphs:
                if prefix.count(":") > 16:
                    raise WorkflowInvalid(
                        [
                            NodeProblem(
                                prefix + str(nid), node["type"], None, "subgraphs nest too deeply"
                            )
                        ]
                    )
                sub = self.subgraphs[node["type"]]
                graph.children[nid] = self._canvas(sub, f"{prefix}{nid}:", sub, graph, node)
        return graph

    # -- link resolution -------------------------------------------------------------------

    def _link_into(self, graph: _Graph, node: Mapping[str, Any], name: str) -> int | None:
        for inp in node.get("inputs") or ():
            if inp.get("name") == name and inp.get("link") is not None:
                return int(inp["link"])
        return None

    def resolve(self, graph: _Graph, link_id: int, depth: int = 0) -> Any:
        """A link id in ``graph`` → ``[node_id, slot]``, a literal, _KEEP_OWN, or None."""
        if depth > 64 or link_id not in graph.links:
            return None  # a dangling link: treated as unlinked
        link = graph.links[link_id]
        if link.origin == _SUBGRAPH_INPUT:
            return self._from_instance_input(graph, link.origin_slot, depth)
        origin = graph.nodes.get(link.origin)
        if origin is None:
            return None
        kind, mode = origin.get("type"), origin.get("mode", 0)
        if mode == _MUTED:
            return _DROPPED
        if kind == "Reroute":
            upstream = self._first_link(origin)
            return None if upstream is None else self.resolve(graph, upstream, depth + 1)
        if kind == "PrimitiveNode":
            values = origin.get("widgets_values") or [None]
            return values[0]
        if mode == _BYPASSED:
            return self._bypass(graph, origin, link.origin_slot, depth)
        if link.origin in graph.children:
            child = graph.children[link.origin]
            for inner in child.links.values():
                if inner.target == _SUBGRAPH_OUTPUT and inner.target_slot == link.origin_slot:
                    return self.resolve(child, self._link_id(child, inner), depth + 1)
            return None
        return [graph.prefix + str(link.origin), link.origin_slot]

    @staticmethod
    def _link_id(graph: _Graph, link: _Link) -> int:
        return next(k for k, v in graph.links.items() if v is link)

    @staticmethod
    def _first_link(node: Mapping[str, Any]) -> int | None:
        return next(
            (int(i["link"]) for i in node.get("inputs") or () if i.get("link") is not None), None
        )

    def _bypass(self, graph: _Graph, node: Mapping[str, Any], slot: int, depth: int) -> Any:
        """What a bypassed node passes through on output ``slot``: an input of the same type."""
        outputs = node.get("outputs") or ()
        out_type = outputs[slot].get("type") if slot < len(outputs) else None
        inputs = node.get("inputs") or ()
        order = ([inputs[slot]] if slot < len(inputs) else []) + list(inputs)
        for inp in order:
            if inp.get("link") is not None and inp.get("type") == out_type:
                return self.resolve(graph, int(inp["link"]), depth + 1)
        return None

    def _from_instance_input(self, graph: _Graph, slot: int, depth: int) -> Any:
        if graph.parent is None or graph.instance is None or graph.definition is None:
            return None
        sub_inputs = graph.definition.get("inputs") or ()
        if slot >= len(sub_inputs):
            return None
        name = sub_inputs[slot].get("name")
        instance = graph.instance
        if instance.get("mode", 0) == _MUTED:
            return None
        link_id = self._link_into(graph.parent, instance, name)
        if link_id is not None:
            return self.resolve(graph.parent, link_id, depth + 1)
        return self._promoted_value(graph, name)

    @staticmethod
    def _promoted_value(graph: _Graph, name: str) -> Any:
        """The instance's own value for an unfed input, if it stores one; else the inner
        node keeps its value (``proxyWidgets`` entries point at the inner widgets).

        An instance stores its values by name (``widgets_values_named``) or by position:
        ``[-1, name]`` entries of ``proxyWidgets``, else the subgraph's inputs that feed an
        inner widget, in order.
        """
        instance = graph.instance or {}
        named = instance.get("widgets_values_named")
        if isinstance(named, Mapping) and name in named:
            return api_value(named[name])
        values = instance.get("widgets_values")
        if not isinstance(values, list) or not values:
            return _KEEP_OWN
        proxies = (instance.get("properties") or {}).get("proxyWidgets")
        if proxies:
            for index, (node_id, widget) in enumerate(proxies):
                if str(node_id) == "-1" and widget == name and index < len(values):
                    return api_value(values[index])
            return _KEEP_OWN
        promoted = _widget_inputs_of(graph)
        if name in promoted and promoted.index(name) < len(values):
            return api_value(values[promoted.index(name)])
        return _KEEP_OWN

    def _shown_value(self, graph: _Graph, link_id: int) -> Any:
        """An input without a widget of its own, fed by an unfed subgraph input, gets the
        value of the inner widget that subgraph input shows (the frontend sends it there)."""
        link = graph.links.get(link_id)
        if link is None or link.origin != _SUBGRAPH_INPUT:
            return None
        for sibling in _from_input(graph, link.origin_slot):
            if not _feeds_widget(graph, sibling):
                continue
            node = graph.nodes[sibling.target]
            definition = self.info.get(str(node.get("type")))
            widget = node["inputs"][sibling.target_slot]["widget"]
            if definition is not None:
                value = widget_inputs(node, definition).get(str(widget.get("name")))
                if value is not None:
                    return value
        return None

    def _unknown(self, graph: _Graph, node: Mapping[str, Any], compound: str) -> dict[str, Any]:
        inputs: dict[str, Any] = {}
        widget_names = [i["name"] for i in node.get("inputs") or () if i.get("widget")]
        raw = node.get("widgets_values")
        if isinstance(raw, Mapping):
            inputs.update(raw)
        else:
            values = [v for v in raw or () if v not in CONTROL_VALUES]
            for i, value in enumerate(values):
                inputs[widget_names[i] if i < len(widget_names) else f"widget_{i}"] = value
        for inp in node.get("inputs") or ():
            if inp.get("link") is not None:
                value = self.resolve(graph, int(inp["link"]))
                if value is not None and value is not _KEEP_OWN and value is not _DROPPED:
                    inputs[inp["name"]] = value
        kind = node.get("type")
        return {
            "inputs": inputs,
            "class_type": kind,
            "_meta": {"title": node.get("title") or kind, "unknown": True},
        }

    # -- emitting nodes --------------------------------------------------------------------

    def emit(self, graph: _Graph) -> None:
        for nid, node in graph.nodes.items():
            kind, mode = node.get("type"), node.get("mode", 0)
            if mode in (_MUTED, _BYPASSED) or kind in _NOTES:
                continue
            if nid in graph.children:
                self.emit(graph.children[nid])
                continue
            compound = graph.prefix + str(nid)
            definition = self.info.get(str(kind))
            if definition is None and not self.strict:
                self.api[compound] = self._unknown(graph, node, compound)
                continue
            if definition is None:
                self.problems.append(
                    NodeProblem(
                        compound,
                        kind,
                        None,
                        "unknown node class (not installed on the server)",
                        "unknown_class",
                    )
                )
                continue
            widgets = widget_inputs(node, definition)
            inputs: dict[str, Any] = {}
            names = [spec.name for spec in expand(declared_inputs(definition), widgets)]
            for name in names + [n for n in widgets if n not in names]:  # + extension widgets
                link_id = self._link_into(graph, node, name)
                value = self.resolve(graph, link_id) if link_id is not None else _KEEP_OWN
                if value is _DROPPED:
                    continue
                if value is _KEEP_OWN and name not in widgets and link_id is not None:
                    value = self._shown_value(graph, link_id)
                if value is _KEEP_OWN or value is None:
                    if name in widgets:
                        inputs[name] = widgets[name]
                else:
                    inputs[name] = value
            entry: dict[str, Any] = {"inputs": inputs, "class_type": kind}
            entry["_meta"] = {"title": node.get("title") or definition.get("display_name") or kind}
            self.api[compound] = entry


def ui_to_api(
    ui: Mapping[str, Any], object_info: Mapping[str, Any], *, strict: bool = True
) -> ApiGraph:
    """The API-format graph for a UI-format workflow, using ``object_info`` for input order.

    Node classes the definitions lack are an error; with ``strict=False`` (for inspecting
    a file meant for another server) they are kept as well as the file allows: links by
    input name, widget values under the names the file gives them (``widget_N`` if none),
    and ``_meta.unknown`` set.
    """
    if not is_ui_workflow(ui):
        raise WorkflowInvalid([NodeProblem(None, None, None, "not a UI-format workflow")])
    converter = _Converter(ui, object_info, strict)
    converter.emit(converter.root)
    if converter.problems:
        missing = sorted({str(p.class_type) for p in converter.problems})
        raise WorkflowInvalid(
            converter.problems,
            summary="cannot convert the UI workflow: the node definitions lack "
            + ", ".join(missing),
        )
    return converter.api
