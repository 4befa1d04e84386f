"""LoRAs on a graph's diffusion model (pure): ``loras=[("name.safetensors", 0.8), …]``.

Each LoRA goes on the model the sampler uses, right after its loader (found by meaning):
the graph's own LoRA loaders on that path (``LoraLoaderModelOnly``, ``LoraLoader``) are
bound first, in order; the rest become ``LoraLoaderModelOnly`` nodes chained after the
last one, each with its strength. Loaders the list does not reach stay as they are. A
file the server lacks is then named like any missing model (validation against the
server's ``loras`` list; ``comfyfn models check``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from comfyfn.errors import NodeProblem, WorkflowInvalid
from comfyfn.workflow._graph import ApiGraph, is_link, new_node_id
from comfyfn.workflow._meaning import Slots

__all__ = ["LORA_CLASSES", "Lora", "apply_loras", "parse_lora", "parse_loras"]

Lora = tuple[str, float]  #: (file name in models/loras/, strength)
#: LoRA loader class → its strength input on the model
LORA_CLASSES = {"LoraLoaderModelOnly": "strength_model", "LoraLoader": "strength_model"}
DEFAULT_STRENGTH = 1.0
_SEPARATORS = (",", ";", "\n")


def _invalid(message: str) -> WorkflowInvalid:
    return WorkflowInvalid([NodeProblem(None, None, "loras", message)], summary="invalid LoRA")


def _strength(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _invalid(f"LoRA {name!r}: strength {value!r} is not a finite number")
    return float(value)


def parse_lora(text: str) -> Lora:
    """``"NAME[:STRENGTH]"`` (the CLI's ``--lora``) → ``(NAME, STRENGTH)``, strength 1.0 by
    default. A suffix after the last ``:`` that is not a number is part of the name."""
    text = text.strip()
    name, sep, tail = text.rpartition(":")
    strength: object = DEFAULT_STRENGTH
    if sep:
        try:
            strength = float(tail)
        except ValueError:
            name = text
    else:
        name = text
    name = name.strip()
    if not name:
        raise _invalid(f"{text!r} names no LoRA file (NAME[:STRENGTH])")
    return name, _strength(strength, name)


def _split(text: str) -> list[str]:
    for sep in _SEPARATORS[1:]:
        text = text.replace(sep, _SEPARATORS[0])
    return [part for part in text.split(_SEPARATORS[0]) if part.strip()]


def parse_loras(value: Any) -> tuple[Lora, ...]:
    """Any way of giving LoRAs → ``((name, strength), …)``: None or ``""`` (none); a text
    (a batch ``lora`` column, an HTTP field): ``"a.safetensors:0.8, b.safetensors"``,
    separated by ``,``, ``;`` or new lines; a list of such texts and/or ``(name, strength)``
    pairs. Anything else is an error naming ``loras``."""
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(parse_lora(part) for part in _split(value))
    if not isinstance(value, Iterable) or isinstance(value, bytes | dict):
        raise _invalid(f"loras takes a list of (name, strength), not a {type(value).__name__}")
    return tuple(_one(item) for item in value)


def _one(item: object) -> Lora:
    if isinstance(item, str):
        return parse_lora(item)
    if isinstance(item, Sequence) and len(item) == 2 and isinstance(item[0], str):
        name = item[0].strip()
        if not name:
            raise _invalid(f"{item!r} names no LoRA file")
        return name, _strength(item[1], name)
    raise _invalid(f"{item!r} is not a LoRA: give (name, strength) or 'NAME[:STRENGTH]'")


def _consumers(graph: ApiGraph, node_id: str) -> list[tuple[str, str]]:
    """Every (node, input) linked from output 0 (the MODEL) of ``node_id``."""
    return [
        (nid, name)
        for nid, node in graph.items()
        for name, value in (node.get("inputs") or {}).items()
        if is_link(value) and str(value[0]) == node_id and value[1] == 0
    ]


def _existing(graph: ApiGraph, model_loader: str) -> list[str]:
    """The graph's LoRA loaders chained on the model right after ``model_loader``."""
    chain: list[str] = []
    current = model_loader
    while True:
        nxt = [n for n, name in _consumers(graph, current) if name == "model"]
        if len(nxt) != 1 or graph[nxt[0]].get("class_type") not in LORA_CLASSES:
            return chain
        current = nxt[0]
        chain.append(current)


def _insert_after(graph: ApiGraph, source: str, lora: Lora) -> str:
    """A LoraLoaderModelOnly taking ``source``'s model; its users now take the LoRA's."""
    users = _consumers(graph, source)
    node_id = new_node_id(graph)
    graph[node_id] = {
        "class_type": "LoraLoaderModelOnly",
        "inputs": {"model": [source, 0], "lora_name": lora[0], "strength_model": lora[1]},
        "_meta": {"title": f"LoRA {lora[0]}"},
    }
    for user, name in users:
        graph[user]["inputs"][name] = [node_id, 0]
    return node_id


def apply_loras(graph: ApiGraph, slots: Slots, loras: Iterable[Lora]) -> None:
    """Put ``loras`` on the model the sampler uses (in place; see the module doc)."""
    loras = list(loras)
    if not loras:
        return
    loaders = slots.candidates.get("model", ())
    if len(loaders) != 1:
        what = "no diffusion model loader" if not loaders else "several diffusion model loaders"
        listed = ", ".join(f"{n} ({graph[n]['class_type']})" for n, _ in loaders)
        raise _invalid(f"cannot place LoRAs: this workflow has {what} {listed}".rstrip())
    last = loaders[0][0]
    existing = _existing(graph, last)
    for node_id, lora in zip(existing, loras, strict=False):
        inputs = graph[node_id]["inputs"]
        inputs["lora_name"], inputs[LORA_CLASSES[graph[node_id]["class_type"]]] = lora
        last = node_id
    for lora in loras[len(existing) :]:
        last = _insert_after(graph, last, lora)
