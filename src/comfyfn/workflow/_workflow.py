"""A workflow as a value: load any format, see its typed parameters, bind, convert, validate."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from types import MappingProxyType
from typing import Any

from comfyfn.errors import ConfigError, NodeProblem, WorkflowInvalid
from comfyfn.provenance import read_text_chunks
from comfyfn.workflow import _validation as validation
from comfyfn.workflow._binding import bind, copy_json, is_image_slot
from comfyfn.workflow._bundled import bundled_object_info, is_bundled
from comfyfn.workflow._graph import ApiGraph, checked_api_graph
from comfyfn.workflow._images import InputImage
from comfyfn.workflow._library import GetJson, server_source, server_workflow
from comfyfn.workflow._loras import parse_loras
from comfyfn.workflow._meaning import CONTROL_CLASSES, IMAGE_MEANINGS, Slots, find_slots
from comfyfn.workflow._params import Param, all_inputs, dead_nodes, describe
from comfyfn.workflow._partner import partner_nodes
from comfyfn.workflow._paths import path_slot
from comfyfn.workflow._sizes import decoded_size, input_value
from comfyfn.workflow._uiformat import is_ui_workflow, ui_to_api

__all__ = ["Workflow", "served_workflow"]

Source = str | Path | Mapping[str, Any]


def _cannot_load(what: str) -> WorkflowInvalid:
    return WorkflowInvalid(
        [NodeProblem(None, None, None, what)], summary="cannot load the workflow"
    )


def _read(source: Source) -> tuple[Any, str]:
    """The parsed workflow data and what it was (``api``, ``ui``, ``png``...)."""
    if isinstance(source, Mapping):
        return copy.deepcopy(dict(source)), "dict"
    text = str(source)
    if isinstance(source, str) and text.lstrip().startswith("{"):
        return json.loads(text), "json"
    path = Path(source)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise _cannot_load(f"cannot read {path}: {exc.strerror}") from exc
    if data.startswith(b"\x89PNG"):
        try:
            chunks = read_text_chunks(data)
        except ValueError as exc:
            raise _cannot_load(f"{path}: {exc}") from None
        for key in ("prompt", "workflow"):  # the exact graph that ran first, else the UI one
            if key in chunks:
                return json.loads(chunks[key]), f"png:{key}"
        raise _cannot_load(f"{path} carries no ComfyUI workflow (no 'prompt' or 'workflow' chunk)")
    try:
        return json.loads(data), "file"
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _cannot_load(f"{path} is neither JSON nor a PNG made by ComfyUI: {exc}") from exc


@dataclass(frozen=True)
class Workflow:
    """An API-format graph plus what is known about it. Immutable: ``bind`` returns a new one.

    ``object_info`` holds the node definitions it was converted and typed with: the
    server's (via ``client.workflow(...)``) or, offline, the newest bundled ones (ComfyUI
    0.33.0; ``bundled_object_info(version)`` gives those for another server version).
    """

    graph: Mapping[str, Any]
    source: str = "dict"
    name: str | None = None
    values: Mapping[str, Any] = field(default_factory=dict)  #: what was bound so far
    object_info: Mapping[str, Any] | None = field(default=None, repr=False, compare=False)
    #: input images bound so far, by their server file name: uploaded when the job is submitted
    uploads: Mapping[str, InputImage] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def load(
        cls,
        source: Source | Workflow,
        *,
        object_info: Mapping[str, Any] | None = None,
        name: str | None = None,
        strict: bool = True,
    ) -> Workflow:
        """Load API JSON, UI JSON (subgraphs included), a PNG made by ComfyUI, or a dict.

        ``strict=False`` keeps UI nodes the definitions do not know (see ``ui_to_api``), for
        inspecting files meant for another server; such a workflow will not validate.
        A built-in name (:data:`~comfyfn.workflow.BUILTIN`: ``"zimage-turbo"``, …) is the
        built-in workflow, even where a file has that name: this is the one place that tells
        the two apart. ``"blueprint:NAME"`` and ``"template:NAME"`` are served by a ComfyUI
        server: load them with its client (``Client(url).workflow("blueprint:NAME")``).
        """
        if isinstance(source, Workflow):
            return source
        served = server_source(source)
        if served is not None:
            raise ConfigError(
                f"{source}: a {served[0]} is served by ComfyUI: load it through its server "
                f"(Client(url).workflow({source!r}); on the CLI --server URL)"
            )
        from comfyfn.workflow._builtin import BUILTIN, builtin  # (which loads through here)

        if isinstance(source, str) and source in BUILTIN:
            wf = builtin(source)
            wf = wf if name is None else replace(wf, name=name)
            return wf if object_info is None else wf.with_definitions(object_info)
        data, kind = _read(source)
        if (
            name is None
            and isinstance(source, str | Path)
            and not str(source).lstrip().startswith("{")
        ):
            name = Path(source).stem
        info = object_info if object_info is not None else None
        if not isinstance(data, Mapping):
            raise _cannot_load(f"expected a workflow (a JSON object), got a {type(data).__name__}")
        if is_ui_workflow(data):
            graph = ui_to_api(
                data, info if info is not None else bundled_object_info(), strict=strict
            )
            kind = "png:workflow" if kind == "png:workflow" else "ui"
        else:
            graph = checked_api_graph(data)  # (data is _read's own copy)
            kind = kind if kind.startswith("png") else "api"
        return cls(MappingProxyType(graph), kind, name, MappingProxyType({}), info)

    # -- reading ---------------------------------------------------------------------------

    @property
    def definitions(self) -> Mapping[str, Any]:
        return self.object_info if self.object_info is not None else bundled_object_info()

    @cached_property
    def slots(self) -> Slots:
        return find_slots(dict(self.graph))

    @cached_property
    def params(self) -> tuple[Param, ...]:
        """Parameters found by meaning (prompt, seed, width...), typed from the definitions."""
        return describe(dict(self.graph), self.slots, self.definitions)

    @cached_property
    def inputs(self) -> tuple[Param, ...]:
        """Every literal input, bindable by its ``"node.input"`` path."""
        return all_inputs(dict(self.graph), self.definitions)

    @cached_property
    def ambiguous(self) -> dict[str, tuple[tuple[str, str], ...]]:
        """Meanings with several candidates (bind those by path)."""
        return {n: c for n, c in self.slots.candidates.items() if len(c) > 1}

    @cached_property
    def unknown_nodes(self) -> tuple[str, ...]:
        """Nodes whose class the definitions lack (kept by a non-strict load)."""
        info = self.definitions
        return tuple(n for n, node in self.graph.items() if node.get("class_type") not in info)

    @property
    def takes_loras(self) -> bool:
        """Whether ``bind(loras=...)`` can place LoRAs: one diffusion model loader."""
        return len(self.slots.candidates.get("model", ())) == 1

    @property
    def takes_control_type(self) -> bool:
        """Whether ``bind(control_type=...)`` applies: one ControlNet patch."""
        classes = [node.get("class_type") for node in self.graph.values()]
        return sum(cls in CONTROL_CLASSES for cls in classes) == 1

    @property
    def outputs(self) -> tuple[str, ...]:
        return self.slots.outputs

    @cached_property
    def dead_nodes(self) -> tuple[str, ...]:
        return dead_nodes(dict(self.graph), self.definitions)

    def to_api(self) -> ApiGraph:
        """A fresh API-format dict, ready for ``POST /prompt``."""
        return copy_json(dict(self.graph))  # type: ignore[no-any-return]

    def per_job_prefixes(self, tail: str, *, given: Mapping[str, Any]) -> dict[str, str]:
        """Output prefixes with a per-job tail, ``<prefix>/<tail>``, for every output node
        whose prefix ``given`` (the job's values) does not set, by input path.

        ComfyUI's SaveImage lists its whole output folder on every save to find the next file
        number, so a folder with 100,000 images costs tens of milliseconds per save (measured:
        3.6 → 66 ms per trivial job after 45,000 images). Giving each job its own small folder
        keeps every save cheap, however many jobs run.
        """
        if "filename_prefix" in given:
            return {}
        out = {}
        for node_id, input_name in self.slots.candidates.get("filename_prefix", ()):
            path = f"{node_id}.{input_name}"
            if path not in given:
                out[path] = f"{self.graph[node_id]['inputs'][input_name]}/{tail}"
        return out

    # -- deriving --------------------------------------------------------------------------

    def bind(self, **values: Any) -> Workflow:
        """A new workflow with ``values`` bound (names, or ``"node.input"``/``"Title.input"``)."""
        size = values.pop("size", None)
        if size is not None:
            from comfyfn.workflow._binding import parse_size

            values["width"], values["height"] = parse_size(size)
        bound = bind(dict(self.graph), definitions=self.definitions, **values)  # (it copies)
        merged = {**self.values, **{k: v for k, v in values.items() if v is not None}}
        if values.get("loras") is not None:
            merged["loras"] = parse_loras(values["loras"])
        merged.update({k: bound.values[k] for k in ("seed",) if k in values and k in bound.values})
        merged.update(
            {
                k: bound.graph[n]["inputs"][i]
                for k, (n, i) in bound.bound.items()
                if is_image_slot(bound.graph, (n, i))
            }
        )
        return Workflow(
            MappingProxyType(bound.graph),
            self.source,
            self.name,
            MappingProxyType(merged),
            self.object_info,
            MappingProxyType({**self.uploads, **bound.uploads}),
        )

    def with_definitions(self, object_info: Mapping[str, Any]) -> Workflow:
        return Workflow(self.graph, self.source, self.name, self.values, object_info, self.uploads)

    def is_image_input(self, name: str) -> bool:
        """Whether parameter ``name`` (a meaning or a ``node.input`` path) is an input image."""
        if name in IMAGE_MEANINGS:
            return True
        try:
            slot = path_slot(dict(self.graph), name)
        except WorkflowInvalid:
            return False
        return is_image_slot(dict(self.graph), slot)

    def validate(
        self,
        object_info: Mapping[str, Any] | None = None,
        *,
        server: str | None = None,
        check_files: bool | None = None,
        partner_key: bool = False,
    ) -> None:
        """Raise :class:`WorkflowInvalid` if the graph would be rejected, or would run a
        partner (paid cloud) node without a Comfy.org API key (``partner_key``: one goes
        with the job).

        Model and input files are checked only against a server's own definitions (by
        default: not against the bundled ones, which cannot know what a server has).
        """
        info = object_info if object_info is not None else self.definitions
        validation.check(
            dict(self.graph),  # read, never written
            info,
            server=server,
            check_files=not is_bundled(info) if check_files is None else check_files,
            partner_key=partner_key,
        )

    def partner_nodes(self, object_info: Mapping[str, Any] | None = None) -> tuple[str, ...]:
        """The partner (paid cloud) node classes the graph uses (see ``_partner``)."""
        info = object_info if object_info is not None else self.definitions
        return tuple(dict.fromkeys(cls for _, cls in partner_nodes(dict(self.graph), info)))

    @property
    def expected_size(self) -> tuple[int, int] | None:
        """The size every saved image must have, where the graph says so plainly (an empty
        latent decoded as it is, as in Z-Image); None where it scales, crops or loads."""
        return decoded_size(self.graph)

    def provenance(self) -> dict[str, Any]:
        """Current values of the named parameters (recorded in saved images)."""
        graph = dict(self.graph)
        return {name: input_value(graph, n, i) for name, (n, i) in self.slots.params.items()}


async def served_workflow(
    source: str, get_json: GetJson, server: str, object_info: Mapping[str, Any]
) -> Workflow:
    """The blueprint or template ``source`` names (``"blueprint:NAME"``), fetched through
    ``get_json`` from ``server`` and read with its definitions ``object_info``."""
    served = server_source(source)
    ui = await server_workflow(source, get_json, server)
    wf = Workflow.load(ui, object_info=object_info, name=served[1] if served else None)
    return replace(wf, source=served[0] if served else wf.source)
