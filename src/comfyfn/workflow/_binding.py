"""Bind generation parameters (prompt, seed, size...) to an API-format graph (pure).

:func:`bind` returns a new graph; the input graph is never modified. Bad values raise
:class:`WorkflowInvalid` naming the node, class and input before anything is sent.
"""

from __future__ import annotations

import dataclasses
import math
import secrets
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from comfyfn.errors import NodeProblem, WorkflowInvalid
from comfyfn.workflow._bundled import bundled_object_info
from comfyfn.workflow._control import attach_inpaint, set_control_type
from comfyfn.workflow._definitions import input_spec
from comfyfn.workflow._graph import ApiGraph, downstream, is_link, new_node_id, set_input
from comfyfn.workflow._images import InputImage, input_image, is_local_file, is_url
from comfyfn.workflow._loras import apply_loras, parse_loras
from comfyfn.workflow._meaning import IMAGE_LOADERS, MEANINGS, Slot, Slots, find_slots
from comfyfn.workflow._paths import choose_option, dynamic_combo, path_slot
from comfyfn.workflow._sizes import input_value

__all__ = [
    "PARAMETERS",
    "BoundGraph",
    "ComfyWarning",
    "bind",
    "copy_json",
    "is_image_slot",
    "parse_size",
    "random_seed",
]

#: Parameter name → meaning (bindable by name when the graph has exactly one candidate).
PARAMETERS = MEANINGS

_RECOMMENDED_SIDE = (512, 2048)
SEED_MAX = 2**64 - 1


class ComfyWarning(UserWarning):
    """A value that will run but is probably not what the caller wants."""


def parse_size(size: str | tuple[int, int] | list[int]) -> tuple[int, int]:
    """``(1024, 768)``, ``[1024, 768]`` or ``"1024x768"`` → ``(1024, 768)``."""
    try:
        parts = size.lower().replace("×", "x").split("x") if isinstance(size, str) else size
        w, h = parts
        return int(w), int(h)
    except (ValueError, TypeError):
        raise WorkflowInvalid(
            [NodeProblem(None, None, "size", f"size {size!r} is not WIDTHxHEIGHT")],
            summary="invalid parameters",
        ) from None


def copy_json(value: Any) -> Any:
    """A copy of JSON data (an API-format graph, a node) that shares nothing mutable with it:
    its dicts and lists copied, every other value (text, numbers) kept. What
    ``copy.deepcopy`` makes of such data, at a tenth of the cost (it is done for every job)."""
    if isinstance(value, dict):
        return {key: copy_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [copy_json(item) for item in value]
    return value


def random_seed() -> int:
    """A random seed that survives JSON round-trips in every language (< 2**53)."""
    return secrets.randbelow(2**53)


@dataclass(frozen=True)
class BoundGraph:
    """A graph with parameters bound, and the values every known slot now holds."""

    graph: ApiGraph
    values: Mapping[str, Any]
    slots: Slots
    bound: Mapping[str, Slot]  #: each bound name → the slot it was written to
    uploads: Mapping[str, InputImage] = field(default_factory=dict)  #: by server file name


#: Named parameters whose value is text.
_TEXTS = frozenset(
    (
        "prompt",
        "negative",
        "sampler",
        "scheduler",
        "model",
        "text_encoder",
        "vae",
        "filename_prefix",
    )
)
#: Named numbers: their type, and the least and greatest value where the node they bind to
#: has no definition (the definition's ``min``/``max`` rule where it has one).
_NUMBERS: Mapping[str, tuple[str, float | None, float | None]] = {
    "seed": ("INT", 0, SEED_MAX),
    "width": ("INT", 1, None),
    "height": ("INT", 1, None),
    "batch_size": ("INT", 1, None),
    "steps": ("INT", 1, None),
    "cfg": ("FLOAT", 0, None),
    "denoise": ("FLOAT", 0, None),
    "strength": ("FLOAT", None, None),
}


def _check(
    graph: ApiGraph,
    where: Mapping[str, Slot],
    given: Mapping[str, Any],
    definitions: Mapping[str, Any],
) -> list[NodeProblem]:
    """Early checks of the values bound by name: text is text; a number is of its type and
    within the min/max (and a multiple of the step) of the input it binds to, as the node's
    definition gives them. Each problem names its parameter."""
    problems: list[NodeProblem] = []
    for param, value in given.items():
        if param not in MEANINGS:
            continue
        node_id, name = where[param]
        node = graph[node_id]
        spec = input_spec(definitions, node["class_type"], name, node.get("inputs"))
        message = _value_problem(param, value, spec.options if spec is not None else {})
        if message is not None:
            problems.append(
                NodeProblem(node_id, node.get("class_type"), name, message, param=param)
            )
    return problems


def _value_problem(param: str, value: Any, options: Mapping[str, Any]) -> str | None:
    """What is wrong with ``value`` for ``param`` given the ``options`` of its input's spec."""
    if param in _TEXTS:
        return None if isinstance(value, str) else f"{param} {value!r} is not text"
    if param not in _NUMBERS:
        return None
    kind, low, high = _NUMBERS[param]
    if not _is_a(kind, value):
        return f"{param} {value!r} is not {'an integer' if kind == 'INT' else 'a number'}"
    low, high, step = options.get("min", low), options.get("max", high), options.get("step")
    if (low is not None and value < low) or (high is not None and value > high):
        shown = f"{'-∞' if low is None else low}..{'∞' if high is None else high}"
        return f"{param} {value} is out of range {shown}"
    if kind == "INT" and isinstance(step, int) and step > 1 and (value - (low or 0)) % step:
        return f"{param} {value} is not a multiple of {step}"
    return None


def _is_a(kind: str, value: Any) -> bool:
    """Whether ``value`` is an ``INT`` (a Python int, not a bool) or a finite ``FLOAT``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return isinstance(value, int) if kind == "INT" else math.isfinite(value)


def _use_real_negative(graph: ApiGraph, sampler: str, prompt_node: str, text: str) -> Slot:
    """Replace a ConditioningZeroOut negative by a text encoder sharing the prompt's CLIP."""
    node_id = new_node_id(graph)
    graph[node_id] = {
        "class_type": graph[prompt_node]["class_type"],
        "inputs": {**copy_json(graph[prompt_node]["inputs"]), "text": text},
        "_meta": {"title": "Negative prompt"},
    }
    owner = (
        sampler if "negative" in graph[sampler]["inputs"] else graph[sampler]["inputs"]["guider"][0]
    )
    set_input(graph, owner, "negative", [node_id, 0])
    return (node_id, "text")


def _restructure(
    graph: ApiGraph, loras: Any, control_type: str | None, params: Mapping[str, Any]
) -> Slots:
    """LoRAs, the control type and inpaint loaders (nodes added or taken out) before any
    value is bound; the slots of the graph they leave."""
    slots, nodes = find_slots(graph), len(graph)
    parsed = parse_loras(loras)
    apply_loras(graph, slots, parsed)
    if control_type is not None:
        set_control_type(graph, control_type)
    attach_inpaint(graph, slots, [k for k in ("image", "mask") if params.get(k) is not None])
    if not parsed and control_type is None and len(graph) == nodes:
        return slots  # nothing was restructured
    return find_slots(graph)


def bind(
    graph: ApiGraph,
    *,
    definitions: Mapping[str, Any] | None = None,
    loras: Any = None,
    control_type: str | None = None,
    **params: Any,
) -> BoundGraph:
    """Return a copy of ``graph`` with ``params`` written in.

    Names are those of :data:`PARAMETERS` (found by tracing from the sampler), or a
    ``"node_id.input"`` / ``"Title.input"`` path. ``None`` leaves a value as the graph has
    it, except ``seed=None`` which picks a random seed. A name the graph has no place for,
    or several places for, is an error naming it; so is a value the input it binds to does
    not take (a number out of the node definition's range), its problem naming the parameter
    (:attr:`~comfyfn.errors.NodeProblem.param`). ``loras``
    (``[("name.safetensors", 0.8), …]`` or ``"NAME[:STRENGTH], …"``, see
    :func:`parse_loras`) go on the diffusion model; ``control_type`` (``canny``,
    ``depth``...) says how a ControlNet's map is made.
    """
    graph = copy_json(dict(graph))
    definitions = definitions if definitions is not None else bundled_object_info()
    slots = _restructure(graph, loras, control_type, params)
    named, paths, negative = _split(params, slots)
    given, where, problems = _locate(graph, slots, definitions, named, paths)
    slots = _bind_negative(graph, slots, negative, given, where)
    uploads = _bind_images(graph, slots, where, given)
    problems += _check(graph, where, given, definitions)
    if problems:
        raise WorkflowInvalid(problems, summary="invalid parameters")
    for name, value in given.items():
        _write(graph, where[name], value, everywhere=name in ("width", "height"))
    values = {name: input_value(graph, *slot) for name, slot in slots.params.items()}
    _warn_unusual_size(values)
    return BoundGraph(graph, values, slots, where, uploads)


def _split(params: Mapping[str, Any], slots: Slots) -> tuple[dict[str, Any], dict[str, Any], Any]:
    """The values given by name (``seed=None``: a random seed), those given by path, and the
    negative prompt (bound apart: it may need a node of its own); ``None`` values left out."""
    named = {k: v for k, v in params.items() if k in MEANINGS}
    paths = {k: v for k, v in params.items() if k not in MEANINGS and v is not None}
    if "seed" in named and named["seed"] is None and "seed" in slots.params:
        named["seed"] = random_seed()
    given = {k: v for k, v in named.items() if v is not None}
    return given, paths, given.pop("negative", None)


def _locate(
    graph: ApiGraph,
    slots: Slots,
    definitions: Mapping[str, Any],
    named: Mapping[str, Any],
    paths: Mapping[str, Any],
) -> tuple[dict[str, Any], dict[str, Slot], list[NodeProblem]]:
    """The values to write, the slot of each (and of each dynamic combo, set here first:
    its option decides which inputs the other paths may name) and the combos' problems."""
    where: dict[str, Slot] = {name: slots.resolve(name, graph) for name in named}
    problems = _choose_options(graph, definitions, paths, where)
    given = dict(named)
    for path, value in paths.items():
        if path not in where:
            where[path] = path_slot(graph, path)
            given[path] = value
    return given, where, problems


def _bind_negative(
    graph: ApiGraph, slots: Slots, negative: Any, given: dict[str, Any], where: dict[str, Slot]
) -> Slots:
    """Bind the negative prompt; the slots of the graph after. Above cfg 1, a workflow that
    zeroes its negative gets a real one (empty without a text); at cfg 1 a negative text
    there has no effect (a warning); elsewhere it is bound as any other value."""
    if "cfg" in given and not _is_a("FLOAT", given["cfg"]):
        return slots  # :func:`_check` refuses the cfg; what the negative needs is not known
    prompt, zeroed = slots.params.get("prompt"), list(slots.zero_out)
    if _guided(graph, slots, given) and len(zeroed) == 1 and prompt is not None:
        where["negative"] = _use_real_negative(graph, zeroed[0], prompt[0], negative or "")
        return find_slots(graph)
    if negative and zeroed:
        warnings.warn(
            "at cfg 1 the negative prompt has no effect (the workflow zeroes it); "
            "pass cfg > 1 to use it",
            ComfyWarning,
            stacklevel=3,
        )
    elif negative is not None:
        where["negative"] = slots.resolve("negative", graph)
        given["negative"] = negative
    return slots


def _guided(graph: ApiGraph, slots: Slots, given: Mapping[str, Any]) -> bool:
    """Whether the sampler will use its negative: a cfg (given, or the graph's) other than 1.
    A cfg that is not a number is not (:func:`_check` refuses it)."""
    slot = slots.params.get("cfg")
    cfg = given.get("cfg", graph[slot[0]]["inputs"][slot[1]] if slot else None)
    return _is_a("FLOAT", cfg) and not math.isclose(float(cfg), 1.0)


def is_image_slot(graph: ApiGraph, slot: Slot) -> bool:
    """Whether ``slot`` is the ``image`` input of a LoadImage/LoadImageMask node."""
    return slot[1] == "image" and graph[slot[0]].get("class_type") in IMAGE_LOADERS


def _is_server_file(value: object) -> bool:
    """A text naming a file already on the server (not a local file, not a URL)."""
    return isinstance(value, str) and not is_url(value) and not is_local_file(value)


def _bind_images(
    graph: ApiGraph, slots: Slots, where: dict[str, Slot], given: dict[str, Any]
) -> dict[str, InputImage]:
    """Turn each input image in ``given`` into its content-hashed server name (in place);
    by ``image``/``mask`` an image is always local or a URL, by path a text not naming a
    local file stays a server file name. Without a width/height, a size scaled from the
    image is set to the image's size rounded to multiples of 16."""
    uploads: dict[str, InputImage] = {}
    for name, value in list(given.items()):
        slot = where[name]
        if not is_image_slot(graph, slot) or (name not in MEANINGS and _is_server_file(value)):
            continue
        image = input_image(value, name)
        given[name] = image.server_name
        uploads[image.server_name] = image
        _default_size(graph, slots, slot[0], image.size, given, where)
    return uploads


def _default_size(
    graph: ApiGraph,
    slots: Slots,
    loader: str,
    size: tuple[int, int],
    given: dict[str, Any],
    where: dict[str, Slot],
) -> None:
    found: dict[str, Slot] = {n: slots.params[n] for n in ("width", "height") if n in slots.params}
    if len(found) != 2 or "width" in given or "height" in given:
        return
    if not all(_feeds(graph, loader, slot[0]) for slot in found.values()):
        return
    for name, side in zip(("width", "height"), size, strict=True):
        given[name] = max(16, round(side / 16) * 16)
        where[name] = found[name]


def _feeds(graph: ApiGraph, source: str, target: str) -> bool:
    """Whether ``target`` is reachable downstream from ``source``."""
    seen, todo = {source}, [source]
    while todo:
        for nxt in downstream(graph, todo.pop()):
            if nxt == target:
                return True
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return False


def _choose_options(
    graph: ApiGraph,
    definitions: Mapping[str, Any],
    paths: Mapping[str, Any],
    where: dict[str, Slot],
) -> list[NodeProblem]:
    """Set the dynamic combos among ``paths`` first (their options decide which inputs the
    other paths may name); each set one goes into ``where``."""
    problems: list[NodeProblem] = []
    for path, value in paths.items():
        slot = path_slot(graph, path)
        if dynamic_combo(graph, definitions, slot) is None:
            continue
        where[path] = slot
        if (problem := choose_option(graph, definitions, slot, value)) is not None:
            problems.append(dataclasses.replace(problem, param=path))
    return problems


def _write(graph: ApiGraph, slot: Slot, value: Any, *, everywhere: bool) -> None:
    """Set ``slot``; with ``everywhere``, a size a node computes (a resolution node's output)
    is replaced by ``value`` in every input it feeds, so the whole graph has that size."""
    current = graph[slot[0]].get("inputs", {}).get(slot[1])
    if everywhere and is_link(current):
        for node in graph.values():
            inputs = node.get("inputs") or {}
            for name, linked in inputs.items():
                if is_link(linked) and [str(linked[0]), linked[1]] == [str(current[0]), current[1]]:
                    inputs[name] = value
    set_input(graph, *slot, value)


def _warn_unusual_size(values: Mapping[str, Any]) -> None:
    if "z_image" not in str(values.get("model", "")):
        return
    low, high = _RECOMMENDED_SIDE
    w, h = values.get("width"), values.get("height")
    if any(isinstance(v, int) and not low <= v <= high for v in (w, h)):
        warnings.warn(
            f"size {w}x{h} is outside Z-Image's recommended {low}–{high} px per side; it will "
            "run, but expect lower quality",
            ComfyWarning,
            stacklevel=3,
        )
