"""Convert the UI ("save") workflow format to the API format POST /prompt takes (pure).

The UI format is what ComfyUI's Save button and the official templates write: ``nodes``
with ``widgets_values``, ``links`` as ``[id, origin, origin_slot, target, target_slot,
type]``, and subgraphs under ``definitions.subgraphs``. Converting needs the server's node
definitions (``/object_info``) because widget values are stored by position only.

Rules (those of the frontend's "Export (API)"):

- widget values map, in order, onto the inputs the definition declares as widgets (required
  then optional); the frontend-only ``control_after_generate`` value after a seed is skipped
  (trailing frontend-only values, such as LoadImage's upload button, are ignored);
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
from comfyfn.workflow._graph import ApiGraph

__all__ = ["is_ui_workflow", "ui_to_api"]

_NOTES = frozenset({"Note", "MarkdownNote", "Reroute", "PrimitiveNode", "Label (rgthree)"})
_MUTED, _BYPASSED = 2, 4
_SUBGRAPH_INPUT, _SUBGRAPH_OUTPUT = -10, -20
_CONTROL_VALUES = frozenset({"fixed", "increment", "decrement", "randomize"})
_WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
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


def _input_specs(definition: Mapping[str, Any]) -> list[tuple[str, Any, Mapping[str, Any]]]:
    """(name, type, options) of every declared input, in ``input_order`` when given."""
    specs: dict[str, tuple[str, Any, Mapping[str, Any]]] = {}
    for group in ("required", "optional"):
        for name, spec in (definition.get("input", {}).get(group) or {}).items():
            kind = spec[0] if isinstance(spec, list | tuple) and spec else spec
            opts = spec[1] if isinstance(spec, list | tuple) and len(spec) > 1 else {}
            specs[name] = (name, kind, opts if isinstance(opts, Mapping) else {})
    order = definition.get("input_order") or {}
    named = [n for group in ("required", "optional") for n in order.get(group) or ()]
    ordered = [specs[n] for n in named if n in specs]
    return ordered + [spec for n, spec in specs.items() if n not in named]


def _is_widget(kind: Any, opts: Mapping[str, Any]) -> bool:
    if opts.get("forceInput"):
        return False
    return isinstance(kind, list) or kind in _WIDGET_TYPES


def _extra_slots(name: str, kind: Any, opts: Mapping[str, Any]) -> int:
    """Frontend-only values stored after this widget's value (never sent to the server)."""
    control = opts.get("control_after_generate")
    if kind == "INT" and (control if control is not None else name in ("seed", "noise_seed")):
        return 1  # control_after_generate
    if (isinstance(kind, list) or kind == "COMBO") and control:
        return 2  # control_after_generate, control_filter_list
    return 0


def _api_value(value: Any) -> Any:
    """List values are wrapped, as the frontend does, so they are not read as links."""
    return {"__value__": value} if isinstance(value, list) else value


def _widget_values(node: Mapping[str, Any], definition: Mapping[str, Any]) -> dict[str, Any]:
    """Input name → widget value, skipping the frontend-only values between them."""
    raw = node.get("widgets_values")
    specs = [(n, k, o) for n, k, o in _input_specs(definition) if _is_widget(k, o)]
    if isinstance(raw, Mapping):
        return {name: _api_value(raw[name]) for name, _, _ in specs if name in raw}
    values = list(raw or ())
    out: dict[str, Any] = {}
    i = 0
    for name, kind, opts in specs:
        if i >= len(values):
            break
        out[name] = _api_value(values[i])
        i += 1
        extra = _extra_slots(name, kind, opts)
        if extra and i < len(values) and values[i] in _CONTROL_VALUES:
            i += extra  # the control value (and, for a COMBO, its filter text)
    return out


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
        return self._promoted_value(instance, name)

    @staticmethod
    def _promoted_value(instance: Mapping[str, Any], name: str) -> Any:
        """The instance's own value for an unfed input, if it stores one; else the inner
        node keeps its value (``proxyWidgets`` entries point at the inner widgets)."""
        values = instance.get("widgets_values")
        if not isinstance(values, list) or not values:
            return _KEEP_OWN
        proxies = (instance.get("properties") or {}).get("proxyWidgets")
        if proxies:
            for index, (node_id, widget) in enumerate(proxies):
                if str(node_id) == "-1" and widget == name and index < len(values):
                    return _api_value(values[index])
            return _KEEP_OWN
        promoted = [i.get("name") for i in instance.get("inputs") or () if i.get("widget")]
        if name in promoted and promoted.index(name) < len(values):
            return _api_value(values[promoted.index(name)])
        return _KEEP_OWN

    def _unknown(self, graph: _Graph, node: Mapping[str, Any], compound: str) -> dict[str, Any]:
        inputs: dict[str, Any] = {}
        widget_names = [i["name"] for i in node.get("inputs") or () if i.get("widget")]
        raw = node.get("widgets_values")
        if isinstance(raw, Mapping):
            inputs.update(raw)
        else:
            values = [v for v in raw or () if v not in _CONTROL_VALUES]
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
            widgets = _widget_values(node, definition)
            inputs: dict[str, Any] = {}
            for name, _, _ in _input_specs(definition):
                link_id = self._link_into(graph, node, name)
                value = self.resolve(graph, link_id) if link_id is not None else _KEEP_OWN
                if value is _DROPPED:
                    continue
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
        raise WorkflowInvalid(converter.problems, summary="cannot convert the UI workflow")
    return converter.api
