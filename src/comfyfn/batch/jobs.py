"""From an input row to a job: typed parameters, a stable seed, a key, and where it is saved."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from comfyfn._files import write_atomic
from comfyfn.batch.rows import Row, RowError, values_problem
from comfyfn.errors import WorkflowInvalid
from comfyfn.fleet import Ticket
from comfyfn.result import Generation
from comfyfn.workflow import MEANINGS, Workflow

__all__ = ["Job", "JobResult", "prepare", "save_outputs"]


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
    seconds: float | None = None
    generation: Generation | None = field(default=None, repr=False)


def _stable_seed(values: Mapping[str, Any]) -> int:
    """A seed from the row's own values: the same content always gets the same seed."""
    blob = json.dumps(dict(values), sort_keys=True, default=str)
    return int(hashlib.sha256(blob.encode()).hexdigest()[:13], 16) % 2**53


def prepare(wf: Workflow, row: Row, *, variables: frozenset[str] = frozenset()) -> Job | RowError:
    """Bind one row to the workflow; an unusable value gives a RowError naming its column."""
    unusable = values_problem(row.values)  # rows made in code skip expand()'s checks
    if unusable is not None:
        return RowError(row.index, unusable[0], unusable[1], row.variant)
    params = {p.name: p for p in wf.params} | {p.name: p for p in wf.inputs}
    bound_values: dict[str, Any] = {}
    for column, value in row.values.items():
        is_param = column in MEANINGS or "." in column
        if column.startswith("_") or (column in variables and not is_param):
            continue  # recipe metadata, or a template variable
        if not is_param:
            named = ", ".join(p.name for p in wf.params)
            return RowError(
                row.index,
                column,
                f"is not a parameter of the workflow (it takes: {named})",
                row.variant,
            )
        param = params.get(column)
        if isinstance(value, str) and param is not None and param.type != "STRING":
            try:
                value = param.parse(value)
            except ValueError:
                kind = {"INT": "an integer", "FLOAT": "a number"}.get(param.type, param.type)
                return RowError(row.index, column, f"{value!r} is not {kind}", row.variant)
        bound_values[column] = value
    if "prompt" in wf.slots.params and not bound_values.get("prompt"):
        return RowError(row.index, "prompt", "is empty", row.variant)
    if "seed" in wf.slots.params and "seed" not in bound_values:
        bound_values["seed"] = _stable_seed(bound_values)
    bound_values.update(
        sharded_prefixes(wf, f"{row.index // 1000:04d}/{row.stem}", given=bound_values)
    )
    try:
        bound = wf.bind(**bound_values)
    except WorkflowInvalid as exc:
        problem = exc.problems[0]
        slots = wf.slots.params
        where = next(
            (name for name, slot in slots.items() if slot == (problem.node_id, problem.input_name)),
            problem.input_name,
        )
        return RowError(row.index, where, problem.message, row.variant)
    deliver = row.values.get("_deliver")
    # the row's place is part of the key: two identical rows are two jobs with two files
    blob = json.dumps(
        {
            "graph": bound.to_api(),
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
        _shown(bound, row),
        row.values.get("_name"),
        deliver,
    )


def _shown(bound: Workflow, row: Row) -> dict[str, Any]:
    """What the manifest, results.csv and the contact sheet show of a job: its main
    parameters (``width``/``height`` as generated), and for a recipe's image its recipe,
    topic, output name and ``delivered`` size."""
    shown = {
        k: v
        for k, v in bound.provenance().items()
        if k in ("prompt", "negative", "seed", "width", "height", "steps", "cfg", "model")
    }
    for key in ("recipe", "topic", "output"):
        if f"_{key}" in row.values:
            shown[key] = row.values[f"_{key}"]
    deliver = row.values.get("_deliver")
    if isinstance(deliver, Mapping):
        shown["delivered"] = [deliver["width"], deliver["height"]]
    return shown


def sharded_prefixes(wf: Workflow, tail: str, *, given: Mapping[str, Any]) -> dict[str, str]:
    """Output prefixes with a per-job tail, ``<prefix>/<tail>``, for every output node.

    ComfyUI's SaveImage lists its whole output folder on every save to find the next file
    number, so a folder with 100,000 images costs tens of milliseconds per save (measured:
    3.6 → 66 ms per trivial job after 45,000 images). Giving each job its own small folder
    keeps every save cheap, however long the batch.
    """
    if "filename_prefix" in given:
        return {}
    out = {}
    for node_id, input_name in wf.slots.candidates.get("filename_prefix", ()):
        path = f"{node_id}.{input_name}"
        if path not in given:
            out[path] = f"{wf.graph[node_id]['inputs'][input_name]}/{tail}"
    return out


def save_outputs(gen: Generation, job: Job, output: Path) -> list[dict[str, Any]]:
    """Write the job's images atomically (and durably) under names fixed by the job, never
    twice; returns what was written (path, size, sha256) for the manifest."""
    from comfyfn.batch._delivery import deliver

    base = job.name or f"images/{job.stem}"
    files = []
    for i, image in enumerate(gen.images):
        rel = f"{base}.png" if len(gen.images) == 1 else f"{base}_{i}.png"
        data = image.png_bytes()
        if job.deliver:
            data = deliver(
                data,
                int(job.deliver["width"]),
                int(job.deliver["height"]),
                job.deliver.get("fit", "cover"),
            )
        write_atomic(output / rel, data)
        files.append({"path": rel, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    return files
