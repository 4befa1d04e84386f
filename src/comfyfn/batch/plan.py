"""From a job file and the command's options to the rows a batch runs (the planning
``comfyfn batch`` does before anything is submitted), for Python users too::

    from comfyfn.batch import Batch, plan_job_file
    plan = plan_job_file("job.yaml", vary=["seed=1..4"])
    batch = Batch(plan.rows, "out/", servers=[...], workflow=plan.workflow,
                  settings=BatchSettings(prime=plan.prime, variables=plan.variables))

Every mistake a file or an option can hold that is found without running anything is a
:class:`~comfyfn.ConfigError` naming it, raised here: an empty file, a CSV whose header names
no parameter, a bad template, a variation that nothing uses.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from comfyfn.batch.jobfile import read_job_file
from comfyfn.batch.jobs import FOLDER
from comfyfn.batch.rows import (
    RawRows,
    Row,
    RowError,
    count_rows,
    csv_columns,
    prompt_placeholders,
    read_rows,
    template_fields,
    template_problem,
    variation_problem,
)
from comfyfn.batch.runner import template_variables
from comfyfn.batch.variations import expand, parse_vary
from comfyfn.errors import ConfigError
from comfyfn.storage import Storage
from comfyfn.workflow import MEANINGS

__all__ = ["JobPlan", "output_place", "plan_job_file"]


@dataclass
class JobPlan:
    """What a job file comes to: its rows (read lazily), how many jobs, and the settings
    the file chose (a job.yaml can name its workflow, template and priming)."""

    rows: Iterator[Row | RowError]
    total: int  #: jobs: rows × the combinations of the variations
    workflow: str | dict[str, Any] | None  #: None: the default (``zimage-turbo``)
    variables: frozenset[str]  #: names that only fill the template (never bound)
    prime: int | None


def plan_job_file(
    source: str | Path,
    *,
    workflow: str | None = None,
    template: str | None = None,
    vary: Sequence[str] = (),
    prime: int | None = None,
) -> JobPlan:
    """Plan the batch of a CSV/JSONL file or a job.yaml (options given here win over the
    job file's). A CSV with an ``image`` column defaults to ``zimage-edit``; relative image
    paths are read from the file's folder."""
    path = Path(source)
    chosen: str | dict[str, Any] | None = workflow
    if path.suffix.lower() in (".yaml", ".yml"):
        job = read_job_file(path)
        raw, varies, defaults = job["rows"], list(job["vary"]), job.get("defaults")
        template = template or job.get("template")
        chosen = workflow or job.get("workflow")
        prime = job.get("prime", prime)
        total, columns = job["total"], list(defaults or ())
    else:
        total = count_rows(path)  # a file unreadable mid-way fails before anything runs
        raw, varies, defaults = read_rows(path), [], None
        _check_header(path, template)
        columns = csv_columns(path) or []
    if total == 0:
        raise ConfigError(f"{path}: no rows to run (see examples/ for the formats)")
    defaults = {FOLDER: str(path.parent.resolve()), **(defaults or {})}
    if chosen is None and "image" in columns:
        chosen = "zimage-edit"  # as generate(image=...) does
    if template is not None and (problem := template_problem(template)):
        raise ConfigError(f"--template {template!r}: {problem}")
    varies += [parse_vary(v) for v in vary]
    names = [n for n, _ in varies]
    _check_variations(names, template, lambda: _reread(path), defaults)
    combos = 1
    for _, values in varies:
        combos *= len(values)
    return JobPlan(
        expand(raw, vary=varies, template=template, defaults=defaults),
        total * combos,
        chosen,
        template_variables(template, names),
        prime,
    )


def _check_variations(
    names: list[str],
    template: str | None,
    rows: Callable[[], RawRows],
    defaults: dict[str, Any],
) -> None:
    """A variation nothing uses (neither a workflow parameter nor a placeholder of the
    template or, without one, of any row's prompt) is a usage error naming it, before
    anything runs: every combination would be the same job. The rows are read again only
    for a name that is not a parameter."""
    if all(variation_problem(name, ()) is None for name in names):
        return
    if template is not None:
        placeholders = set(template_fields(template))
    else:
        placeholders = prompt_placeholders(rows(), names, defaults)
    for name in names:
        if (problem := variation_problem(name, placeholders)) is not None:
            raise ConfigError(f"--vary {name}: {problem}")


def _reread(source: Path) -> RawRows:
    """The input rows of ``source`` from the start."""
    if source.suffix.lower() in (".yaml", ".yml"):
        return read_job_file(source)["rows"]
    return read_rows(source)


def _check_header(source: Path, template: str | None) -> None:
    """A CSV's first line must name workflow parameters (or, with --template, its columns):
    a list of topics given to ``batch`` would otherwise make rows of nothing."""
    columns = csv_columns(source)
    if columns is None or template is not None:
        return
    if not any(c in MEANINGS or "." in c for c in columns):
        first = ",".join(columns)[:80]
        raise ConfigError(
            f"{source}: its first line ({first}) names no workflow parameter; a CSV starts "
            "with a header such as prompt,seed,width,height (see examples/prompts.csv). "
            "For one topic per line, use comfyfn recipe run"
        )


def output_place(output: str, state: Path | None = None) -> tuple[Path, Storage | None]:
    """The local folder of the manifest and report, and the object store of the images
    (None: they go to that folder). ``-o s3://bucket/prefix`` keeps the manifest in
    ``state``, by default a folder in the comfyfn home named after the URL, so the same
    command resumes from anywhere on this machine."""
    if not output.startswith("s3://"):
        if state is not None:
            raise ConfigError("--state is for -o s3://…; an output folder keeps its own manifest")
        return Path(output), None
    from comfyfn.engine import engine_home
    from comfyfn.storage import open_storage, parse_s3_url

    bucket, prefix = parse_s3_url(output)
    if state is None:
        name = hashlib.sha256(f"s3://{bucket}/{prefix}".encode()).hexdigest()[:16]
        state = engine_home() / "batches" / name
    return state, open_storage(output)
