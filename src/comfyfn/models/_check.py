"""Which model files a workflow needs (and loads: its model set and prompt key, by which the
fleet places its jobs), and which servers have them.

The files are the literal inputs of the workflow's loader nodes whose definitions name a
``models/`` folder (``unet_name`` → ``diffusion_models``, ``clip_name`` → ``text_encoders``,
``vae_name``, ``ckpt_name``, ``lora_name``…). A server has a file when its
``GET /models/<folder>`` lists it. Where a file comes from is known from the workflow file
itself (the ComfyUI frontend and the official templates record ``properties.models`` —
name, url, directory — on loader nodes) or from a manifest (the built-in ones by default).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from comfyfn.client import AsyncClient, WorkflowSource
from comfyfn.errors import ComfyError, HTTPStatusError
from comfyfn.models._manifest import BUILTIN_MANIFESTS, ModelManifest, load_manifest
from comfyfn.provenance import read_text_chunks
from comfyfn.workflow import Workflow

__all__ = [
    "ModelSet",
    "Needed",
    "ServerModels",
    "Source",
    "check_server",
    "check_servers",
    "model_set",
    "needed_models",
    "prompt_key",
    "sources_from",
]

FileKey = tuple[str, str]  #: (folder, file name)
ModelSet = frozenset[FileKey]  #: (folder, file name) of each model a job loads


@dataclass(frozen=True)
class Source:
    """Where a model file can be downloaded: a URL, and the manifest that lists it."""

    url: str
    manifest: str | None = None


@dataclass(frozen=True)
class Needed:
    """One model file a workflow needs, the nodes that load it, and where it comes from."""

    folder: str
    name: str
    nodes: tuple[tuple[str, str], ...]  #: (node id, class type) of each node loading it
    source: Source | None = None

    @property
    def relpath(self) -> str:
        return f"{self.folder}/{self.name}"

    def describe(self) -> str:
        """``diffusion_models/x.safetensors (node 16 UNETLoader): put it in
        models/diffusion_models/; download: <url> (comfyfn models pull <manifest>)``."""
        nodes = ", ".join(f"node {n} {c}" for n, c in self.nodes)
        text = f"{self.relpath} ({nodes}): put it in models/{self.folder}/"
        if self.source is not None:
            text += f"; download: {self.source.url}"
            if self.source.manifest:
                text += f" (comfyfn models pull {self.source.manifest})"
        return text


@dataclass(frozen=True)
class ServerModels:
    """What one server has of what a workflow needs."""

    server: str
    needed: tuple[Needed, ...]
    missing: tuple[Needed, ...]
    unknown_folders: tuple[str, ...] = ()  #: folders the server does not have at all

    @property
    def ok(self) -> bool:
        return not self.missing


def needed_models(
    workflow: Workflow, sources: Mapping[FileKey, Source] | None = None
) -> tuple[Needed, ...]:
    """The model files ``workflow`` loads, in graph order, each once (typed with the
    workflow's definitions: load it with the server's to see that server's folders)."""
    nodes: dict[FileKey, list[tuple[str, str]]] = {}
    for param in workflow.inputs:
        if param.folder and isinstance(param.default, str) and param.default:
            key = (param.folder, param.default)
            nodes.setdefault(key, []).append((param.node_id, param.class_type))
    known = sources or {}
    return tuple(
        Needed(folder, name, tuple(where), known.get((folder, name)))
        for (folder, name), where in nodes.items()
    )


def sources_from(
    workflow_source: WorkflowSource | Workflow | None = None,
    manifests: Iterable[ModelManifest] = (),
) -> dict[FileKey, Source]:
    """Download sources: ``manifests``, then the built-in manifests (both also say which
    manifest to pull), then the workflow file's own ``properties.models``; the first that
    names a file wins."""
    found: dict[FileKey, Source] = {}
    for manifest in (*manifests, *(load_manifest(name) for name in BUILTIN_MANIFESTS)):
        for f in manifest.files:
            found.setdefault((f.folder, f.name), Source(f.url, manifest.name))
    return _from_properties(_raw(workflow_source)) | found


def _raw(source: WorkflowSource | Workflow | None) -> Any:
    """The workflow file's JSON as written (UI format keeps node properties), if readable."""
    if isinstance(source, Mapping):
        return source
    if not isinstance(source, str | Path):
        return None
    try:
        data = Path(source).read_bytes()
    except OSError:
        return None
    try:
        if data.startswith(b"\x89PNG"):
            return json.loads(read_text_chunks(data).get("workflow", "null"))
        return json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None


def _from_properties(data: Any) -> dict[FileKey, Source]:
    """``properties.models`` entries ({name, url, directory}) anywhere in a UI workflow
    (subgraph definitions included)."""
    found: dict[FileKey, Source] = {}
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, Mapping):
            props = item.get("properties")
            models = props.get("models") if isinstance(props, Mapping) else None
            for entry in models if isinstance(models, list) else ():
                if isinstance(entry, Mapping) and all(
                    isinstance(entry.get(k), str) for k in ("name", "url", "directory")
                ):
                    found[(entry["directory"], entry["name"])] = Source(entry["url"])
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


async def check_server(
    client: AsyncClient,
    source: WorkflowSource | Workflow,
    sources: Mapping[FileKey, Source] | None = None,
) -> ServerModels:
    """Which files ``source`` needs (typed with the server's definitions) that the server
    lacks. Raises what loading the workflow raises (``WorkflowInvalid``, transport errors)."""
    workflow = await client.workflow(source)
    needed = needed_models(workflow, sources)
    listed: dict[str, set[str] | None] = {}
    for folder in dict.fromkeys(n.folder for n in needed):
        listed[folder] = await _listing(client, folder)
    missing = tuple(
        n for n in needed if n.name.replace("\\", "/") not in (listed[n.folder] or set())
    )
    unknown = tuple(folder for folder, names in listed.items() if names is None)
    return ServerModels(client.server, needed, missing, unknown)


async def check_servers(
    servers: Sequence[str],
    source: WorkflowSource | Workflow,
    sources: Mapping[FileKey, Source] | None = None,
) -> list[tuple[str, ServerModels | ComfyError]]:
    """:func:`check_server` on every server at once: each server's gaps, or the error that
    stopped its check (an unreachable server, a workflow it cannot load), in order."""

    async def one(url: str) -> ServerModels | ComfyError:
        try:
            async with AsyncClient(url) as client:
                return await check_server(client, source, sources)
        except ComfyError as exc:
            return exc

    found = await asyncio.gather(*(one(url) for url in servers))
    return list(zip(servers, found, strict=True))


async def _listing(client: AsyncClient, folder: str) -> set[str] | None:
    """The files in one of the server's model folders (None: it has no such folder)."""
    try:
        names = await client.models(folder)
    except HTTPStatusError as exc:
        if exc.status_code == 404:
            return None
        raise
    return {name.replace("\\", "/") for name in names}


def model_set(workflow: Workflow) -> ModelSet:
    """The model files ``workflow`` loads, as a set (see :func:`needed_models`)."""
    return frozenset((n.folder, n.name) for n in needed_models(workflow))


def prompt_key(workflow: Workflow) -> str | None:
    """What the text encoders of ``workflow`` encode (prompt and negative), or None."""
    values = workflow.provenance()
    texts = [values.get("prompt"), values.get("negative")]
    return None if texts == [None, None] else json.dumps(texts, ensure_ascii=False)
