"""Batches: many rows of parameters → images on disk, over one or several servers.

::

    from comfyfn.batch import Batch, rows_from
    batch = Batch(rows_from("prompts.csv"), "out/", servers=["http://gpu-1:8188"])
    summary = batch.run()                  # or: async for result in batch.results(): ...
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from comfyfn.batch.jobs import JobResult
from comfyfn.batch.manifest import Manifest
from comfyfn.batch.report import Summary, write_report
from comfyfn.batch.rows import Row, RowError, expand, parse_vary, read_job_file, read_rows
from comfyfn.batch.runner import Batch, BatchSettings, template_variables

__all__ = [
    "Batch",
    "BatchSettings",
    "JobResult",
    "Manifest",
    "Row",
    "RowError",
    "Summary",
    "expand",
    "parse_vary",
    "read_job_file",
    "read_rows",
    "rows_from",
    "run_batch",
    "template_variables",
    "write_report",
]


def rows_from(path: str | Path, *, vary: Sequence[str] = (), template: str | None = None):
    """Rows of a CSV/JSONL file (streamed), with ``--vary``-style variations."""
    return expand(read_rows(path), vary=[parse_vary(v) for v in vary], template=template)


async def _consume(batch: Batch, on_result: Any = None) -> dict[str, int]:
    counted: dict[str, int] = {}
    async for result in batch.results():
        counted[result.state] = counted.get(result.state, 0) + 1
        if on_result is not None:
            on_result(result)
    return counted


def run_batch(batch: Batch, *, on_result: Any = None, thumbnails: int = 500) -> Summary:
    """Run to the end (blocking); write the summary JSON and the contact sheet."""
    if batch.output is None:
        from comfyfn.errors import ConfigError

        raise ConfigError("run_batch needs a batch with an output folder")
    counted = asyncio.run(_consume(batch, on_result))
    summary, _ = write_report(batch, counted, thumbnails=thumbnails)
    return summary
