"""Finding a graph's parameters by meaning: trace from each sampler, never trust node ids (pure).

From every sampler (KSampler, KSamplerAdvanced, SamplerCustom, SamplerCustomAdvanced):

- ``seed`` / ``steps`` / ``cfg`` / ``sampler`` / ``scheduler`` / ``denoise`` on the sampler,
  or on the nodes feeding its ``noise``, ``guider``, ``sampler`` and ``sigmas`` inputs;
- ``positive`` / ``negative`` (directly or through a guider) → the text encoders, through
  conditioning pass-throughs → ``prompt`` / ``negative``;
- ``latent_image`` → the node with ``width``/``height``/``batch_size``; a size linked from
  a node that computes it (``ResolutionSelector``) is that node's input itself: binding it
  replaces the link by the value;
- ``model`` → the diffusion model loader; the prompt encoder's ``clip`` → the text-encoder
  loader; the VAE decoder fed by the sampler → the VAE loader;
- a ControlNet patch on the model path (``ZImageFunControlnet``,
  ``QwenImageDiffsynthControlnet``: Z-Image Fun ControlNet Union) → its ``strength``; the
  loader feeding its ``image`` (through preprocessors such as ``Canny``) → ``control_image``;
- ``LoadImage`` / ``LoadImageMask`` nodes → ``image`` / ``mask`` (an input image, found
  anywhere in the graph, not only upstream of a sampler), except a control image;
- nodes with ``filename_prefix`` (and SaveImageWebsocket/PreviewImage) are the outputs.

A value linked from a primitive node (``PrimitiveInt``, ``PrimitiveString``...) is found on
that node's ``value``. Several samplers give several candidates; a name with more than one
candidate is ambiguous and binding it is an error that lists them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from comfyfn.errors import NodeProblem, WorkflowInvalid
from comfyfn.workflow._graph import ApiGraph, downstream, is_link, is_literal, linked_from

__all__ = [
    "CONTROL_CLASSES",
    "IMAGE_LOADERS",
    "IMAGE_MEANINGS",
    "MEANINGS",
    "SAMPLER_CLASSES",
    "Slot",
    "Slots",
    "control_nodes",
    "find_slots",
    "image_loader",
]

SAMPLER_CLASSES = frozenset(
    {"KSampler", "KSamplerAdvanced", "SamplerCustom", "SamplerCustomAdvanced"}
)
#: Parameter name → what it means, in the order they are listed.
MEANINGS: Mapping[str, str] = {
    "prompt": "positive prompt text",
    "negative": "negative prompt text (no effect at cfg 1)",
    "seed": "sampler seed (None = random, reported back)",
    "width": "image width in px (multiple of the latent node's step)",
    "height": "image height in px",
    "batch_size": "images per job",
    "steps": "sampling steps",
    "cfg": "classifier-free guidance scale",
    "sampler": "sampler name (e.g. res_multistep, euler)",
    "scheduler": "scheduler name (e.g. simple)",
    "denoise": "denoise strength",
    "model": "diffusion model file (diffusion_models/ or checkpoints/)",
    "text_encoder": "text encoder file (text_encoders/)",
    "vae": "VAE file (vae/)",
    "filename_prefix": "output file name prefix",
    "image": "input image (path, bytes, PIL image, Image or http(s) URL)",
    "mask": "input mask image (path, bytes, PIL image, Image or http(s) URL)",
    "control_image": "ControlNet control image (path, bytes, PIL image, Image or http(s) URL)",
    "strength": "ControlNet strength",
}
#: Meanings whose value is an input image.
IMAGE_MEANINGS = ("image", "mask", "control_image")
#: The Z-Image Fun ControlNet patches (ComfyUI ≥ 0.28 for ``ZImageFunControlnet``).
CONTROL_CLASSES = frozenset({"ZImageFunControlnet", "QwenImageDiffsynthControlnet"})
#: Loader class → the meaning of its ``image`` input.
IMAGE_LOADERS: Mapping[str, str] = {"LoadImage": "image", "LoadImageMask": "mask"}
Slot = tuple[str, str]  # (node id, input name)

_CONDITIONING = ("conditioning", "conditioning_1", "conditioning_to", "positive")
_TEXT_INPUTS = ("text", "prompt")
_MODEL_FILES = ("unet_name", "ckpt_name")
_MAX_DEPTH = 16
_IMAGE_LINKS = ("image", "images", "pixels")


@dataclass(frozen=True)
class Slots:
    """Where each meaning lives: every candidate slot, and the unambiguous ones."""

    samplers: tuple[str, ...]
    candidates: Mapping[str, tuple[Slot, ...]]
    zero_out: Mapping[str, str]  #: sampler id → ConditioningZeroOut feeding its negative
    outputs: tuple[str, ...]

    @property
    def params(self) -> dict[str, Slot]:
        return {name: c[0] for name, c in self.candidates.items() if len(c) == 1}

    def resolve(self, name: str, graph: ApiGraph) -> Slot:
        """The one slot for ``name``; an error listing the candidates if there are several."""
        found = self.candidates.get(name, ())
        if len(found) == 1:
            return found[0]
        if not found:
            raise WorkflowInvalid(
                [NodeProblem(None, None, name, f"this workflow has no input for {name!r}")],
                summary="parameters the workflow cannot take",
            )
        listed = ", ".join(f"{n}.{i} ({graph[n]['class_type']})" for n, i in found)
        raise WorkflowInvalid(
            [
                NodeProblem(
                    None,
                    None,
                    name,
                    f"{name!r} is ambiguous: candidates {listed}; "
                    "bind one by its 'node.input' path instead",
                )
            ],
            summary="ambiguous parameter",
        )


def _value_slot(graph: ApiGraph, node_id: str, name: str) -> Slot | None:
    """The literal behind ``node_id.name``: on the node itself or on a primitive feeding it."""
    if is_literal(graph, node_id, name):
        return (node_id, name)
    src = linked_from(graph, node_id, name)
    if src is not None and is_literal(graph, src, "value"):
        return (src, "value")
    return None


def _walk(
    graph: ApiGraph, start: str | None, inputs: tuple[str, ...], stop: Callable[[str], bool]
) -> str | None:
    node_id = start
    for _ in range(_MAX_DEPTH):
        if node_id is None:
            return None
        if stop(node_id):
            return node_id
        node_id = next(
            (s for name in inputs if (s := linked_from(graph, node_id, name)) is not None), None
        )
    return None


def _on(graph: ApiGraph, sampler: str, via: str, names: tuple[str, ...]) -> Slot | None:
    """A literal named ``names`` on the sampler, else on the node feeding its ``via`` input."""
    for node in (sampler, linked_from(graph, sampler, via)):
        if node is None:
            continue
        for name in names:
            if (slot := _value_slot(graph, node, name)) is not None:
                return slot
    return None


def _text_slot(graph: ApiGraph, start: str | None) -> Slot | None:
    def has_text(nid: str) -> bool:
        return any(_value_slot(graph, nid, t) for t in _TEXT_INPUTS)

    node = _walk(graph, start, _CONDITIONING, has_text)
    if node is None:
        return None
    return next(s for t in _TEXT_INPUTS if (s := _value_slot(graph, node, t)) is not None)


def _loader(graph: ApiGraph, node_id: str, link_input: str, file_input: str) -> Slot | None:
    """The loader feeding ``node_id.link_input`` (through pass-throughs) and its file input."""
    loader = _walk(
        graph,
        linked_from(graph, node_id, link_input),
        (link_input,),
        lambda n: is_literal(graph, n, file_input),
    )
    return None if loader is None else (loader, file_input)


def image_loader(graph: ApiGraph, node_id: str, input_name: str) -> str | None:
    """The LoadImage/LoadImageMask node feeding ``node_id.input_name`` through image
    pass-throughs (scalers, preprocessors such as ``Canny``)."""
    return _walk(
        graph,
        linked_from(graph, node_id, input_name),
        _IMAGE_LINKS,
        lambda n: graph[n].get("class_type") in IMAGE_LOADERS,
    )


def control_nodes(graph: ApiGraph, model_user: str) -> list[str]:
    """The ControlNet patches on the model path into ``model_user`` (nearest first)."""
    found, node_id = [], linked_from(graph, model_user, "model")
    for _ in range(_MAX_DEPTH):
        if node_id is None:
            break
        if graph[node_id].get("class_type") in CONTROL_CLASSES:
            found.append(node_id)
        node_id = linked_from(graph, node_id, "model")
    return found


def _model_owner(graph: ApiGraph, sampler: str) -> str:
    """The sampler, or the guider that takes the model for it."""
    if "model" in graph[sampler]["inputs"]:
        return sampler
    return linked_from(graph, sampler, "guider") or sampler


def _control(graph: ApiGraph, sampler: str) -> dict[str, list[Slot]]:
    """``strength`` and ``control_image`` of every ControlNet patch the sampler's model has
    (several patches: several candidates each)."""
    found: dict[str, list[Slot]] = {}
    for node in control_nodes(graph, _model_owner(graph, sampler)):
        if (slot := _value_slot(graph, node, "strength")) is not None:
            found.setdefault("strength", []).append(slot)
        loader = image_loader(graph, node, "image")
        if loader is not None and is_literal(graph, loader, "image"):
            found.setdefault("control_image", []).append((loader, "image"))
    return found


def _trace(graph: ApiGraph, sampler: str) -> tuple[dict[str, Slot], str | None]:
    found: dict[str, Slot] = {}
    for name, via, inputs in (
        ("seed", "noise", ("seed", "noise_seed")),
        ("steps", "sigmas", ("steps",)),
        ("cfg", "guider", ("cfg",)),
        ("sampler", "sampler", ("sampler_name",)),
        ("scheduler", "sigmas", ("scheduler",)),
        ("denoise", "sigmas", ("denoise",)),
    ):
        if (slot := _on(graph, sampler, via, inputs)) is not None:
            found[name] = slot

    cond_owner = sampler
    guider = linked_from(graph, sampler, "guider")
    if "positive" not in graph[sampler]["inputs"] and guider is not None:
        cond_owner = guider
    pos_start = linked_from(graph, cond_owner, "positive") or linked_from(
        graph, cond_owner, "conditioning"
    )
    positive = _text_slot(graph, pos_start)
    if positive is not None:
        found["prompt"] = positive
    zero_out = None
    neg_start = linked_from(graph, cond_owner, "negative")
    if neg_start is not None and graph[neg_start]["class_type"] == "ConditioningZeroOut":
        zero_out = neg_start
    elif (negative := _text_slot(graph, neg_start)) is not None and negative != positive:
        found["negative"] = negative

    def sized(nid: str) -> bool:
        return "width" in graph[nid]["inputs"] and "height" in graph[nid]["inputs"]

    latent = _walk(
        graph,
        linked_from(graph, sampler, "latent_image"),
        ("samples", "latent", "pixels", "image"),
        sized,
    )
    if latent is not None:
        for name in ("width", "height", "batch_size"):
            if (slot := _value_slot(graph, latent, name)) is not None:
                found[name] = slot
            elif name != "batch_size" and linked_from(graph, latent, name) is not None:
                found[name] = (latent, name)  # computed (a resolution node): bound in place

    def model_loader(nid: str) -> bool:
        return any(is_literal(graph, nid, k) for k in _MODEL_FILES)

    loader = _walk(
        graph, linked_from(graph, _model_owner(graph, sampler), "model"), ("model",), model_loader
    )
    if loader is not None:
        found["model"] = (loader, next(k for k in _MODEL_FILES if is_literal(graph, loader, k)))
    if positive is not None and (te := _loader(graph, positive[0], "clip", "clip_name")):
        found["text_encoder"] = te
    decoders = [d for d in downstream(graph, sampler) if "vae" in graph[d]["inputs"]]
    if len(decoders) == 1 and (vae := _loader(graph, decoders[0], "vae", "vae_name")):
        found["vae"] = vae
    return found, zero_out


def _is_output(node: Mapping[str, Any]) -> bool:
    inputs = node.get("inputs", {})
    return ("filename_prefix" in inputs and not is_link(inputs["filename_prefix"])) or node.get(
        "class_type"
    ) in ("SaveImageWebsocket", "PreviewImage")


#: slots by the shape of the graph they were found in (see :func:`_shape`): every job of a
#: batch is one workflow with other values, and finding its slots anew was a tenth of the
#: binding's cost
_FOUND: dict[tuple[Any, ...], Slots] = {}
_FOUND_KEPT = 1024


def find_slots(graph: ApiGraph) -> Slots:
    """Every candidate slot for each meaning in :data:`MEANINGS`."""
    shape = _shape(graph)
    try:
        found = _FOUND.get(shape)
    except TypeError:  # a class that is not text (the graph is invalid): not kept
        return _find_slots(graph)
    if found is None:
        if len(_FOUND) >= _FOUND_KEPT:
            _FOUND.clear()
        found = _FOUND[shape] = _find_slots(graph)
    return found


def _shape(graph: ApiGraph) -> tuple[Any, ...]:
    """What the slots depend on: each node's id, class and input names, and for each input
    the output it links to or (a literal) None. Not the literal values."""
    return tuple(
        (
            node_id,
            node.get("class_type"),
            tuple(
                (name, (str(value[0]), value[1]) if is_link(value) else None)
                for name, value in (node.get("inputs") or {}).items()
            ),
        )
        for node_id, node in graph.items()
    )


def _find_slots(graph: ApiGraph) -> Slots:
    samplers = tuple(
        sorted(
            (n for n, node in graph.items() if node.get("class_type") in SAMPLER_CLASSES),
            key=_id_key,
        )
    )
    candidates: dict[str, list[Slot]] = {}
    zero_out: dict[str, str] = {}
    for sampler in samplers:
        found, zero = _trace(graph, sampler)
        if zero is not None:
            zero_out[sampler] = zero
        traced = {name: [slot] for name, slot in found.items()} | _control(graph, sampler)
        for name, slots in traced.items():
            for slot in slots:
                if slot not in candidates.setdefault(name, []):
                    candidates[name].append(slot)
    outputs = tuple(sorted((n for n, node in graph.items() if _is_output(node)), key=_id_key))
    control = {slot[0] for slot in candidates.get("control_image", ())}
    for node_id in sorted(graph, key=_id_key):
        meaning = IMAGE_LOADERS.get(graph[node_id].get("class_type", ""))
        if meaning is not None and is_literal(graph, node_id, "image") and node_id not in control:
            candidates.setdefault(meaning, []).append((node_id, "image"))
    prefixes = [(n, "filename_prefix") for n in outputs if is_literal(graph, n, "filename_prefix")]
    if prefixes:
        candidates["filename_prefix"] = prefixes
    ordered = {name: tuple(candidates[name]) for name in MEANINGS if name in candidates}
    return Slots(samplers, MappingProxyType(ordered), MappingProxyType(zero_out), outputs)


def _id_key(node_id: str) -> tuple[int, ...] | tuple[float, str]:
    try:
        return tuple(int(p) for p in node_id.split(":"))
    except ValueError:
        return (float("inf"), node_id)
