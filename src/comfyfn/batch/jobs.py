"""From an input row to a job: typed parameters, a stable seed, a key, and where it is saved.

A column feeding an input image (``image``, ``mask``, or a LoadImage input by path) holds a
local path — relative to the folder named by the row's ``_folder`` (the job file's folder,
set by ``comfyfn batch``), else to the working directory — or an http(s) URL, fetched here.
The image is read and checked when the row is prepared, before anything is submitted: a
missing file, a URL that fails, a file that is not an accepted image, or a path naming no
regular file within the byte limit (a device, a named pipe, a huge file: refused by its stat,
never read) is a row error naming row and column, and the other rows go on.
:func:`aprepare` reads and fetches without blocking the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from comfyfn._files import write_atomic
from comfyfn.batch.rows import Row, RowError, values_problem
from comfyfn.errors import ConfigError, WorkflowInvalid
from comfyfn.fleet import Ticket
from comfyfn.outputs import OutputFile, named_files
from comfyfn.result import Generation
from comfyfn.storage import Storage, put_files
from comfyfn.workflow import (
    MEANINGS,
    InputImage,
    Workflow,
    input_image,
    is_local_file,
    is_url,
    parse_loras,
)

__all__ = [
    "FOLDER",
    "Job",
    "JobResult",
    "aprepare",
    "image_path",
    "output_folders",
    "output_name",
    "prepare",
    "row_files",
    "save_outputs",
    "store_outputs",
    "stored_problem",
]

#: the row value naming the folder relative image paths are read from (the job file's)
FOLDER = "_folder"


@dataclass
class Job:
    key: str
    row: int
    label: str
    stem: str
    workflow: Workflow
    values: dict[str, Any]  #: what the manifest and contact sheet show
    name: str | None = None  #: output path (without suffix) relative to the output folder
    deliver: Mapping[str, Any] | None = None
    ticket: Ticket = field(init=False)  #: where it runs (and, on resume, where it was sent)

    def __post_init__(self) -> None:
        self.ticket = Ticket(self.workflow)


@dataclass(frozen=True)
class JobResult:
    """One row's outcome, as the batch yields it."""

    key: str
    row: int
    label: str
    state: str  #: done, failed, skipped (done by an earlier run) or invalid
    files: tuple[str, ...] = ()
    error: str | None = None
    server: str | None = None
    seconds: float | None = None  #: turnaround: submitted → outputs in hand
    executed: float | None = None  #: the server's execution time
    generation: Generation | None = field(default=None, repr=False)


def _stable_seed(values: Mapping[str, Any]) -> int:
    """A seed from the row's own values: the same content always gets the same seed."""
    blob = json.dumps(dict(values), sort_keys=True, default=str)
    return int(hashlib.sha256(blob.encode()).hexdigest()[:13], 16) % 2**53


def prepare(
    wf: Workflow,
    row: Row,
    *,
    variables: frozenset[str] = frozenset(),
    images: Mapping[str, InputImage] | None = None,
) -> Job | RowError:
    """Bind one row to the workflow; an unusable value gives a RowError naming its column.
    ``images``: the row's input images already read or fetched, by column
    (:func:`aprepare`); others are read and fetched here, blocking."""
    unusable = values_problem(row.values)  # rows made in code skip expand()'s checks
    if unusable is not None:
        return RowError(row.index, unusable[0], unusable[1], row.variant)
    bound_values = _row_params(wf, row, variables, images or {})
    if isinstance(bound_values, RowError):
        return bound_values
    if "prompt" in wf.slots.params and not bound_values.get("prompt"):
        return RowError(row.index, "prompt", "is empty", row.variant)
    if "seed" in wf.slots.params and "seed" not in bound_values:
        bound_values["seed"] = _stable_seed(bound_values)
    bound_values.update(
        wf.per_job_prefixes(f"{row.index // 1000:04d}/{row.stem}", given=bound_values)
    )
    try:
        bound = wf.bind(**bound_values)
    except ConfigError as exc:  # e.g. a server file name bound by path that is not text
        return RowError(row.index, None, str(exc), row.variant)
    except WorkflowInvalid as exc:
        problem = exc.problems[0]
        where = problem.param or problem.input_name
        return RowError(row.index, where, problem.message, row.variant)
    deliver = row.values.get("_deliver")
    # the row's place is part of the key: two identical rows are two jobs with two files
    blob = json.dumps(
        {
            "graph": dict(bound.graph),  # read only: no copy
            "deliver": deliver,
            "name": row.values.get("_name"),
            "stem": row.stem,
        },
        sort_keys=True,
    )
    key = hashlib.sha256(blob.encode()).hexdigest()[:32]
    return Job(
        key,
        row.index,
        row.label,
        row.stem,
        bound,
        _shown(bound, row, wf),
        row.values.get("_name"),
        deliver,
    )


async def aprepare(
    wf: Workflow, row: Row, *, variables: frozenset[str] = frozenset()
) -> Job | RowError:
    """:func:`prepare`, with the row's input images fetched (URLs) and read (files, on a
    worker thread) without blocking the event loop; one that fails is a RowError naming its
    column."""
    from comfyfn.client import fetch_url

    images = {}
    for column, value in row.values.items():
        if column.startswith("_") or not wf.is_image_input(column):
            continue
        try:
            if is_url(value):
                images[column] = await fetch_url(value, column)
            else:
                image = await asyncio.to_thread(_row_image, value, column, row.values.get(FOLDER))
                if isinstance(image, InputImage):
                    images[column] = image
        except ConfigError as exc:
            return RowError(row.index, column, str(exc), row.variant)
    return prepare(wf, row, variables=variables, images=images)


#: a batch column of LoRAs for the row: ``"style.safetensors:0.8, detail.safetensors"``
LORA_COLUMN = "lora"


def _row_params(
    wf: Workflow, row: Row, variables: frozenset[str], images: Mapping[str, InputImage]
) -> dict[str, Any] | RowError:
    """The row's values to bind, typed (input images read and checked); a RowError for the
    first column that is not a parameter or whose value does not fit it."""
    params = {p.name: p for p in wf.params} | {p.name: p for p in wf.inputs}
    values: dict[str, Any] = {}
    for column, value in row.values.items():
        is_param = column in MEANINGS or "." in column
        if column.startswith("_") or (column in variables and not is_param):
            continue  # recipe metadata, or a template variable
        if column == LORA_COLUMN:
            try:
                values["loras"] = parse_loras(value or None)
            except WorkflowInvalid as exc:
                reason = "; ".join(p.message for p in exc.problems) or str(exc)
                return RowError(row.index, column, reason, row.variant)
            continue
        if not is_param:
            named = ", ".join(p.name for p in wf.params)
            return RowError(
                row.index,
                column,
                f"is not a parameter of the workflow (it takes: {named})",
                row.variant,
            )
        param = params.get(column)
        if wf.is_image_input(column):
            try:
                value = images.get(column) or _row_image(value, column, row.values.get(FOLDER))
            except ConfigError as exc:
                return RowError(row.index, column, str(exc), row.variant)
        elif isinstance(value, str) and param is not None and param.type != "STRING":
            try:
                value = param.parse(value)
            except ValueError:
                kind = {"INT": "an integer", "FLOAT": "a number"}.get(param.type, param.type)
                return RowError(row.index, column, f"{value!r} is not {kind}", row.variant)
        values[column] = value
    return values


def image_path(value: str, folder: str | Path | None) -> Path:
    """A row's image path: relative paths are read from ``folder`` (the job file's), when
    one is given; absolute paths and ``~`` as they are."""
    path = Path(value).expanduser()
    return path if folder is None or path.is_absolute() else Path(folder) / path


def _row_image(value: Any, column: str, folder: Any) -> Any:
    """An input image from a row: a path or URL read, fetched and checked (ConfigError).
    A text bound by path that names no local file stays a file name on the server, as in
    :meth:`Workflow.bind`."""
    if is_url(value):
        return _fetch(str(value), column)
    if isinstance(value, str):
        path = image_path(value, folder)
        if column not in MEANINGS and not is_local_file(path):
            return value
        return input_image(path, column)
    return value


def _fetch(url: str, column: str) -> InputImage:
    """The client's URL fetch (bounded in time and bytes), run to its end on a thread of its
    own, for a caller of :func:`prepare` inside an event loop (the event loop waits: prefer
    :func:`aprepare` there)."""
    from comfyfn.client import fetch_url

    with ThreadPoolExecutor(1, thread_name_prefix="comfyfn-image-url") as pool:
        return pool.submit(asyncio.run, fetch_url(url, column)).result()


def _shown(bound: Workflow, row: Row, wf: Workflow) -> dict[str, Any]:
    """What the manifest, results.csv and the contact sheet show of a job: its main
    parameters (``width``/``height`` as generated), the input images as the row gave them
    (path or URL), and for a recipe's image its recipe, topic, output name and ``delivered``
    size."""
    shown = {
        k: v
        for k, v in bound.provenance().items()
        if k in ("prompt", "negative", "seed", "width", "height", "steps", "cfg", "model")
    }
    shown |= {
        k: v
        for k, v in row.values.items()
        if not k.startswith("_") and isinstance(v, str) and wf.is_image_input(k)
    }
    for key in ("recipe", "topic", "output"):
        if f"_{key}" in row.values:
            shown[key] = row.values[f"_{key}"]
    deliver = row.values.get("_deliver")
    if isinstance(deliver, Mapping):
        shown["delivered"] = [deliver["width"], deliver["height"]]
    return shown


def row_files(gen: Generation, job: Job) -> list[tuple[str, OutputFile]]:
    """Every output of the job as (path relative to the output folder or store, file), under
    names fixed by the job (:func:`comfyfn.outputs.named_files`: its images delivered at the
    row's size if it asks for one, then its videos, audio, text...)."""
    return named_files(gen, output_name(job), job.deliver)


def output_name(job: Job) -> str:
    """The job's output path without suffix: its row's ``_name``, else ``images/<stem>``."""
    return job.name or f"images/{job.stem}"


def _check(rel: str, data: bytes) -> dict[str, Any]:
    return {"path": rel, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def save_outputs(gen: Generation, job: Job, output: Path) -> list[dict[str, Any]]:
    """Write the job's outputs atomically under names fixed by the job, never twice; returns
    what was written (path, size, sha256) for the manifest. Each file's content is fsynced;
    its folder (:func:`output_folders`) is not: the manifest does that once for every job
    it marks done in one commit (:meth:`Manifest.done`)."""
    files = []
    for rel, file in row_files(gen, job):
        write_atomic(output / rel, file.data, sync_folder=False)
        files.append(_check(rel, file.data))
    return files


def output_folders(output: Path, files: list[dict[str, Any]]) -> set[Path]:
    """The folders :func:`save_outputs` wrote ``files`` into."""
    return {(output / check["path"]).parent for check in files}


async def store_outputs(gen: Generation, job: Job, storage: Storage) -> list[dict[str, Any]]:
    """As :func:`save_outputs`, into ``storage`` (an object store): each file is durable
    there when this returns. Encoding runs on a worker thread."""
    named = await asyncio.to_thread(row_files, gen, job)
    await put_files(storage, named)
    return [_check(rel, file.data) for rel, file in named]


async def stored_problem(storage: Storage, checks: list[dict[str, Any]]) -> str | None:
    """Why a done job's files are no longer all in ``storage`` (None if they are). Only
    their presence is checked (a HEAD each): reading them back would cost a download."""
    for check in checks:
        if not await storage.exists(check["path"]):
            return f"{check['path']} is missing from {storage!r}"
    return None
