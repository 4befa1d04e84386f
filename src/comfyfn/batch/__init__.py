"""Batches: many rows of parameters → images (and videos, audio, texts) on disk or in object
storage, over one or several servers.

::

    from comfyfn.batch import Batch, rows_from, run_batch
    batch = Batch(rows_from("prompts.csv"), "out/", servers=["http://gpu-1:8188"])
    summary = run_batch(batch)             # or: async for result in batch.results(): ...

A batch through the shared job store, worked by the workers of many machines:
:mod:`comfyfn.batch.shared` (it loads the store, so ``import comfyfn.batch`` does not).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from comfyfn._public import present as _present
from comfyfn.batch.jobfile import read_job_file
from comfyfn.batch.jobs import JobResult
from comfyfn.batch.manifest import Manifest
from comfyfn.batch.plan import JobPlan, output_place, plan_job_file
from comfyfn.batch.queued import QueuedBatch
from comfyfn.batch.report import Summary, write_report
from comfyfn.batch.rows import Row, RowError, read_rows
from comfyfn.batch.runner import Batch, BatchSettings, template_variables
from comfyfn.batch.unusable import unusable_output
from comfyfn.batch.variations import expand, parse_vary

__all__ = [
    "Batch",
    "BatchSettings",
    "JobPlan",
    "JobResult",
    "Manifest",
    "QueuedBatch",
    "Row",
    "RowError",
    "Summary",
    "amap_rows",
    "expand",
    "map_rows",
    "output_place",
    "parse_vary",
    "plan_job_file",
    "read_job_file",
    "read_rows",
    "rows_from",
    "run_batch",
    "template_variables",
    "unusable_output",
    "write_report",
]


def rows_from(
    path: str | Path, *, vary: Sequence[str] = (), template: str | None = None
) -> Iterator[Row | RowError]:
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


async def amap_rows(
    rows: Iterable[Mapping[str, Any]],
    *,
    server: str | None = None,
    workflow: Any = "zimage-turbo",
    prime: int | None = None,
) -> AsyncIterator[JobResult]:
    """One job per row (dicts of parameters) on one server, results as they finish.

    Each result's ``row`` is the row's 1-based place in ``rows`` and ``generation`` holds
    its images; a bad row gives an ``invalid`` result naming its column. For several
    servers, files on disk and resuming, use :class:`Batch`.
    """
    from comfyfn.client import aresolve_server

    url = await aresolve_server(server)
    batch = Batch(
        (Row(i, dict(r)) for i, r in enumerate(rows, 1)),
        None,
        servers=[url],
        workflow=workflow,
        settings=BatchSettings(prime=prime),
    )
    async for result in batch.results():
        yield result


def map_rows(rows: Iterable[Mapping[str, Any]], **options: Any) -> list[JobResult]:
    """Blocking :func:`amap_rows`: every row's result, in the order of ``rows``."""

    async def collect() -> list[JobResult]:
        return [result async for result in amap_rows(rows, **options)]

    return sorted(asyncio.run(collect()), key=lambda r: r.row)


_present(__name__, globals(), __all__)
