"""What a simulated ComfyUI (tests/support/simcomfy.py) knows of graphs: node definitions, the order
ComfyUI 0.3.75 runs nodes in, its output cache, the models a job needs, and its images.

Pure functions and small data: no I/O but reading the object_info file once.
"""

from __future__ import annotations

import gzip
import json
import struct
import zlib
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_MODELS",
    "Plan",
    "invalid_prompt",
    "model_inputs",
    "node_definitions",
    "output_size",
    "plan",
    "png",
]

DATA = Path(__file__).parents[2] / "src" / "comfyfn" / "workflow" / "data"
DEFAULT_OBJECT_INFO = DATA / "object_info_0.3.75.json.gz"

#: Model files each folder offers (the local engine's tiny models, and a checkpoint for
#: ComfyfnLoadModel); they fill the loaders' file lists in /object_info.
DEFAULT_MODELS: Mapping[str, Sequence[str]] = {
    "diffusion_models": ("z_image_bf16.safetensors", "z_image_turbo_bf16.safetensors"),
    "text_encoders": ("qwen_3_4b.safetensors",),
    "vae": ("ae.safetensors",),
    "checkpoints": ("model-a.safetensors", "model-b.safetensors"),
    "loras": (),
}

#: Loader inputs naming a model file, and the folder each lists.
_MODEL_INPUTS = {
    "unet_name": "diffusion_models",
    "clip_name": "text_encoders",
    "clip_name1": "text_encoders",
    "clip_name2": "text_encoders",
    "clip_name3": "text_encoders",
    "clip_name4": "text_encoders",
    "vae_name": "vae",
    "ckpt_name": "checkpoints",
    "lora_name": "loras",
}

#: The engine's test-only nodes (src/comfyfn/engine/assets/custom_nodes), as it lists them.
_TEST_NODES: dict[str, Any] = {
    "ComfyfnSleep": {
        "input": {
            "required": {
                "images": ["IMAGE"],
                "milliseconds": ["INT", {"default": 100, "min": 0, "max": 3600000}],
                "steps": ["INT", {"default": 8, "min": 1, "max": 10000}],
            }
        },
        "input_order": {"required": ["images", "milliseconds", "steps"]},
        "output": ["IMAGE"],
        "output_is_list": [False],
        "output_name": ["IMAGE"],
        "name": "ComfyfnSleep",
        "display_name": "Sleep (comfyfn test)",
        "description": "",
        "python_module": "custom_nodes.comfyfn_sleep",
        "category": "testing/comfyfn",
        "output_node": False,
    },
    "ComfyfnLoadModel": {
        "input": {
            "required": {
                "images": ["IMAGE"],
                "ckpt_name": [[]],
                "load_milliseconds": ["INT", {"default": 500, "min": 0, "max": 3600000}],
            }
        },
        "input_order": {"required": ["images", "ckpt_name", "load_milliseconds"]},
        "output": ["IMAGE"],
        "output_is_list": [False],
        "output_name": ["IMAGE"],
        "name": "ComfyfnLoadModel",
        "display_name": "Load model (comfyfn test)",
        "description": "",
        "python_module": "custom_nodes.comfyfn_load_model",
        "category": "testing/comfyfn",
        "output_node": False,
    },
}

#: Nodes that run every time (ComfyUI's IS_CHANGED): never served from the cache.
ALWAYS_RUN = frozenset({"ComfyfnLoadModel", "SaveImageWebsocket"})


@cache
def _base_definitions(path: Path) -> dict[str, Any]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        data: dict[str, Any] = json.load(fh)
    return data


def node_definitions(
    path: Path = DEFAULT_OBJECT_INFO, models: Mapping[str, Sequence[str]] = DEFAULT_MODELS
) -> dict[str, Any]:
    """The ``/object_info`` a server with ``models`` answers: a real ComfyUI's, the engine's
    test nodes added, every loader's file list filled from ``models``."""
    info = {**_base_definitions(path), **_TEST_NODES}
    for name, node in info.items():
        if not any(k in _MODEL_INPUTS for group in node["input"].values() for k in group):
            continue
        node = info[name] = json.loads(json.dumps(node))  # a copy: the base is shared
        for group in node["input"].values():
            for key, spec in group.items():
                if key in _MODEL_INPUTS and isinstance(spec, list) and isinstance(spec[0], list):
                    spec[0] = sorted(models.get(_MODEL_INPUTS[key], ()))
    return info


def _error(kind: str, message: str, details: str) -> dict[str, Any]:
    return {
        "error": {"type": kind, "message": message, "details": details, "extra_info": {}},
        "node_errors": {},
    }


def invalid_prompt(prompt: Any, info: Mapping[str, Any]) -> dict[str, Any] | None:
    """ComfyUI's 400 body for a prompt it would refuse before looking at inputs; None if OK."""
    if not isinstance(prompt, dict):
        return _error("invalid_prompt", "Prompt must be a dictionary.", "")
    for node_id, node in prompt.items():
        if not isinstance(node, dict) or "class_type" not in node:
            message = "Cannot execute because a node is missing the class_type property."
            return _error("invalid_prompt", message, f"Node ID '#{node_id}'")
        if node["class_type"] not in info:
            message = f"Cannot execute because node {node['class_type']} does not exist."
            return _error("invalid_prompt", message, f"Node ID '#{node_id}'")
    if not outputs_of(prompt, info):
        return _error("prompt_no_outputs", "Prompt has no outputs", "")
    return None


def outputs_of(prompt: Mapping[str, Any], info: Mapping[str, Any]) -> list[str]:
    return [n for n, node in prompt.items() if info[node["class_type"]].get("output_node")]


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[1], int)


def _links(node: Mapping[str, Any]) -> list[str]:
    return [str(v[0]) for v in node.get("inputs", {}).values() if _is_link(v)]


def signatures(prompt: Mapping[str, Any], nonce: str) -> dict[str, str]:
    """Each node's cache key: its class and inputs, links replaced by their source's key; a
    node that always runs (and so everything downstream) also has this job's ``nonce``."""
    found: dict[str, str] = {}

    def sign(node_id: str, seen: frozenset[str]) -> str:
        if node_id in found:
            return found[node_id]
        node = prompt.get(node_id)
        if node is None or node_id in seen:
            return f"missing:{node_id}"
        inputs = {
            k: ["link", sign(str(v[0]), seen | {node_id}), v[1]] if _is_link(v) else v
            for k, v in sorted(node.get("inputs", {}).items())
        }
        fresh = nonce if node["class_type"] in ALWAYS_RUN else ""
        key = [node["class_type"], inputs, fresh]
        found[node_id] = json.dumps(key, sort_keys=True, default=str)
        return found[node_id]

    for node_id in prompt:
        sign(node_id, frozenset())
    return found


class Plan:
    """The nodes of one job in the order ComfyUI 0.3.75 runs them (its ExecutionList: a
    topological dissolve that prefers output nodes and the nodes feeding them), with the
    nodes its output cache serves."""

    def __init__(
        self,
        prompt: Mapping[str, Any],
        outputs: Sequence[str],
        info: Mapping[str, Any],
        cached: set[str],
    ) -> None:
        self.prompt = prompt
        self.info = info
        self.cached = cached
        self.pending: dict[str, bool] = {}
        self.blocking: dict[str, set[str]] = {}
        self.block_count: dict[str, int] = {}
        for output in outputs:
            self._add(output)

    def _add(self, start: str) -> None:
        stack, links = [start], []
        while stack:
            node_id = stack.pop()
            if node_id in self.pending:
                continue
            self.pending[node_id] = True
            self.block_count[node_id] = 0
            self.blocking[node_id] = set()
            for source in _links(self.prompt[node_id]):
                if source not in self.cached:
                    stack.append(source)
                    links.append((source, node_id))
        for source, target in links:
            if target not in self.blocking[source]:
                self.blocking[source].add(target)
                self.block_count[target] += 1

    def _is_output(self, node_id: str) -> bool:
        return bool(self.info[self.prompt[node_id]["class_type"]].get("output_node"))

    def _pick(self, ready: list[str]) -> str:
        for node_id in ready:
            if self._is_output(node_id):
                return node_id
        for node_id in ready:
            if any(self._is_output(b) for b in self.blocking[node_id]):
                return node_id
        for node_id in ready:
            for b in self.blocking[node_id]:
                if any(self._is_output(b1) for b1 in self.blocking[b]):
                    return node_id
        return ready[0]

    def order(self) -> list[str]:
        done: list[str] = []
        while self.pending:
            node_id = self._pick([n for n in self.pending if self.block_count[n] == 0])
            del self.pending[node_id]
            for blocked in self.blocking.pop(node_id):
                self.block_count[blocked] -= 1
            done.append(node_id)
        return done


def plan(
    prompt: Mapping[str, Any], outputs: Sequence[str], info: Mapping[str, Any], cached: set[str]
) -> list[str]:
    return Plan(prompt, outputs, info, cached).order()


def model_inputs(node: Mapping[str, Any]) -> list[str]:
    """The model files a loader node names (none for other nodes)."""
    inputs = node.get("inputs", {})
    return [str(inputs[k]) for k in _MODEL_INPUTS if isinstance(inputs.get(k), str)]


def output_size(prompt: Mapping[str, Any], node_id: str) -> tuple[int, int, int]:
    """``(width, height, batch)`` of the images reaching ``node_id``: from the nearest node
    upstream (first link first) with integer ``width`` and ``height``; 64×64×1 if none."""
    seen: set[str] = set()
    current: str | None = node_id
    while current is not None and current in prompt and current not in seen:
        seen.add(current)
        inputs = prompt[current].get("inputs", {})
        width, height = inputs.get("width"), inputs.get("height")
        if current != node_id and isinstance(width, int) and isinstance(height, int):
            batch = inputs.get("batch_size", 1)
            return max(width, 1), max(height, 1), batch if isinstance(batch, int) else 1
        sources = _links(prompt[current])
        current = sources[0] if sources else None
    return 64, 64, 1


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@cache
def png(width: int, height: int) -> bytes:
    """A valid grey RGB PNG of this size (cached: one encoding per size)."""
    row = b"\x00" + b"\x80" * (3 * width)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = zlib.compress(row * height, 6)
    chunks = _chunk(b"IHDR", header) + _chunk(b"IDAT", body) + _chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks
