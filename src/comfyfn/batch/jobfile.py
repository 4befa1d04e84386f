"""YAML job files: ``workflow``, ``defaults``, ``template``, ``vary`` and either ``rows`` (a
list) or ``input`` (a CSV/JSONL file next to the job file), checked by
:class:`comfyfn.batch._schema.JobFile` (pydantic, imported only when a file is read)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NotRequired, TypedDict

from comfyfn.batch.rows import RawRows, RowError, clean_values, count_rows, read_rows
from comfyfn.errors import ConfigError

__all__ = ["JobSettings", "read_job_file"]


class JobSettings(TypedDict):
    """What :func:`read_job_file` gives: the rows (streamed), the variations and the number
    of input rows; the other settings only where the file sets them."""

    rows: RawRows
    vary: list[tuple[str, list[Any]]]
    total: int  #: input rows, before variations
    workflow: NotRequired[str | dict[str, Any]]
    defaults: NotRequired[dict[str, Any]]
    template: NotRequired[str]
    prime: NotRequired[int]


def read_job_file(path: str | Path) -> JobSettings:
    """A YAML job file, checked (see :class:`comfyfn.batch._schema.JobFile`); every problem
    is a :class:`ConfigError` naming the file and the setting."""
    from comfyfn._yaml import load_yaml, validate_settings  # pydantic: only when one is read
    from comfyfn.batch._schema import JobFile

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the job file {path}: {exc}") from exc
    job = validate_settings(load_yaml(text, str(path)), str(path), JobFile)
    if job.input is not None:
        source = path.parent / job.input
        total = count_rows(source)  # also: a file unreadable mid-way fails before anything runs
        rows: RawRows = read_rows(source)
    else:
        listed = job.rows or []  # JobFile has made sure there is one or the other
        total = len(listed)
        rows = (
            (i, clean_values(r) if isinstance(r, dict) else RowError(i, None, "not a mapping"))
            for i, r in enumerate(listed, 1)
        )
    settings = JobSettings(rows=rows, vary=list((job.vary or {}).items()), total=total)
    if job.workflow is not None:
        settings["workflow"] = job.workflow
    if job.defaults is not None:
        settings["defaults"] = job.defaults
    if job.template is not None:
        settings["template"] = job.template
    if job.prime is not None:
        settings["prime"] = job.prime
    return settings
