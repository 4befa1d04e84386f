"""API-format graphs: loading, tracing nodes by meaning from the sampler, and binding (pure).

An API-format graph maps node id → ``{"class_type", "inputs", "_meta"?}``; a link is an input
value ``[source_id, output_index]``. Node ids differ in every file, so nodes are found by
following links from the sampler, never by id:

- ``positive`` / ``negative`` → the text encoders (through conditioning pass-throughs);
- ``latent_image`` → the node that sets width/height/batch_size;
- ``model`` → the diffusion model loader, the encoder's ``clip`` → the text-encoder loader;
- the VAEDecode fed by the sampler → its ``vae`` loader; downstream nodes with
  ``filename_prefix`` are the outputs.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from comfyfn.errors import NodeProblem, WorkflowInvalid

__all__ = [
    "SAMPLER_CLASSES",
    "Slots",
    "find_slots",
    "is_link",
    "load_api_graph",
]

ApiGraph = dict[str, dict[str, Any]]

SAMPLER_CLASSES = frozenset({"KSampler", "KSamplerAdvanced", "SamplerCustom"})
_SEED_INPUTS = ("seed", "noise_seed")
_SAMPLER_SCALARS = ("steps", "cfg", "sampler_name", "scheduler", "denoise")
_CONDITIONING_INPUTS = ("conditioning", "conditioning_1", "conditioning_to", "positive")
_MODEL_FILE_INPUTS = ("unet_name", "ckpt_name")
_MAX_DEPTH = 16


def is_link(value: Any) -> bool:
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


@dataclass(frozen=True)
class Slots:
    """Where each meaning lives in one graph: parameter name → (node id, input name).

    ``negative_zero_out`` is the ConditioningZeroOut node feeding the sampler's negative,
    if any (then the negative prompt has no encoder of its own).
    """

    sampler: str
    params: Mapping[str, tuple[str, str]]
    negative_zero_out: str | None
    outputs: tuple[str, ...]

    def node_for(self, name: str) -> str | None:
        slot = self.params.get(name)
        return slot[0] if slot else None


def _source(graph: ApiGraph, node_id: str, input_name: str) -> str | None:
    value = graph[node_id].get("inputs", {}).get(input_name)
    if is_link(value) and str(value[0]) in graph:
        return str(value[0])
    return None


def _walk(graph: ApiGraph, start: str | None, inputs: tuple[str, ...], stop) -> str | None:
    """Follow links through ``inputs`` from ``start`` until ``stop(node)`` holds."""
    node_id = start
    for _ in range(_MAX_DEPTH):
        if node_id is None:
            return None
        if stop(graph[node_id]):
            return node_id
        node_id = next(
            (s for name in inputs if (s := _source(graph, node_id, name)) is not None), None
        )
    return None


def _literal(graph: ApiGraph, node_id: str, name: str) -> bool:
    inputs = graph[node_id].get("inputs", {})
    return name in inputs and not is_link(inputs[name])


def _has_text(node: Mapping[str, Any]) -> bool:
    value = node.get("inputs", {}).get("text")
    return isinstance(value, str) or (value is not None and not is_link(value))


def _downstream(graph: ApiGraph, node_id: str) -> Iterator[str]:
    for nid, node in graph.items():
        if any(is_link(v) and str(v[0]) == node_id for v in node.get("inputs", {}).values()):
            yield nid


def find_slots(graph: ApiGraph) -> Slots:
    """Find the sampler and what it connects to; ambiguity is an error listing the candidates."""
    samplers = sorted(nid for nid, n in graph.items() if n.get("class_type") in SAMPLER_CLASSES)
    if len(samplers) != 1:
        found = ", ".join(f"node {s} {graph[s]['class_type']}" for s in samplers) or "none"
        raise WorkflowInvalid(
            [NodeProblem(None, None, None, f"expected exactly one sampler, found {found}")],
            summary="cannot tell which sampler to bind",
        )
    sampler = samplers[0]
    params: dict[str, tuple[str, str]] = {}
    for name in _SEED_INPUTS:
        if _literal(graph, sampler, name):
            params["seed"] = (sampler, name)
            break
    for name in _SAMPLER_SCALARS:
        if _literal(graph, sampler, name):
            params["sampler" if name == "sampler_name" else name] = (sampler, name)

    positive = _walk(graph, _source(graph, sampler, "positive"), _CONDITIONING_INPUTS, _has_text)
    if positive is not None:
        params["prompt"] = (positive, "text")
    zero_out = None
    neg_start = _source(graph, sampler, "negative")
    if neg_start is not None and graph[neg_start].get("class_type") == "ConditioningZeroOut":
        zero_out = neg_start
    else:
        negative = _walk(graph, neg_start, _CONDITIONING_INPUTS, _has_text)
        if negative is not None and negative != positive:
            params["negative"] = (negative, "text")

    def sized(node: Mapping[str, Any]) -> bool:
        return "width" in node.get("inputs", {}) and "height" in node.get("inputs", {})

    latent = _walk(graph, _source(graph, sampler, "latent_image"), ("samples", "latent"), sized)
    if latent is not None:
        for name in ("width", "height", "batch_size"):
            if _literal(graph, latent, name):
                params[name] = (latent, name)

    def model_loader(node: Mapping[str, Any]) -> bool:
        return any(k in node.get("inputs", {}) for k in _MODEL_FILE_INPUTS)

    loader = _walk(graph, _source(graph, sampler, "model"), ("model",), model_loader)
    if loader is not None:
        name = next(k for k in _MODEL_FILE_INPUTS if k in graph[loader]["inputs"])
        params["model"] = (loader, name)
    if positive is not None:
        te = _walk(
            graph,
            _source(graph, positive, "clip"),
            ("clip",),
            lambda n: "clip_name" in n.get("inputs", {}),
        )
        if te is not None:
            params["text_encoder"] = (te, "clip_name")

    decoders = [d for d in _downstream(graph, sampler) if "vae" in graph[d].get("inputs", {})]
    if len(decoders) == 1:
        vae = _walk(
            graph,
            _source(graph, decoders[0], "vae"),
            ("vae",),
            lambda n: "vae_name" in n.get("inputs", {}),
        )
        if vae is not None:
            params["vae"] = (vae, "vae_name")

    outputs = tuple(
        sorted(
            nid
            for nid, n in graph.items()
            if _literal(graph, nid, "filename_prefix")
            or n.get("class_type") == "SaveImageWebsocket"
        )
    )
    return Slots(sampler, params, zero_out, outputs)


def class_types(graph: ApiGraph) -> dict[str, str]:
    """Node id → class type, for naming nodes in events and errors."""
    return {nid: str(node.get("class_type")) for nid, node in graph.items()}


def set_input(graph: ApiGraph, node_id: str, name: str, value: Any) -> None:
    graph[node_id].setdefault("inputs", {})[name] = value


def new_node_id(graph: ApiGraph) -> str:
    numeric = [int(k) for k in graph if k.isdigit()]
    return str(max(numeric, default=0) + 1)
