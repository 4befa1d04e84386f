"""The stdio side: tools run on comfyfn's own batch runner over the fleet of ``--server``
URLs (retries, moves off a failed server), each call a batch in its own folder under the
output folder: ``<output>/<job id>/`` with the images (and a recipe's delivered sizes),
linked to the agent as file:// URIs. Jobs are known for as long as the server runs.

Input images: a file path on this machine, an http(s) URL (fetched through the gateway's
guard: no loopback or private addresses, bounded in bytes and time) or base64; they are
checked as the gateway checks uploads, and kept under ``<job folder>/inputs/``."""

from __future__ import annotations

import asyncio
import mimetypes
import secrets
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import anyio

from comfyfn.batch import Batch, BatchSettings, JobResult, Row
from comfyfn.events import Progress as ProgressEvent
from comfyfn.gateway.registry import Registry, Served
from comfyfn.gateway.uploads import UploadLimits, UploadMissing, UploadRefused, take_image
from comfyfn.mcp._backend import JobOutcome, OutputFile, Progress, ToolError
from comfyfn.storage import LocalStorage
from comfyfn.workflow import random_seed

__all__ = ["LocalBackend"]

_OWNER = "local"  #: the uploads' owner: there are no keys here


@dataclass
class _Call:
    """One tool call's batch: its rows' outcomes as they are known."""

    batch: Batch | None
    workflow: str
    rows: list[dict[str, Any]]
    outcomes: dict[int, JobOutcome] = field(default_factory=dict)


class LocalBackend:
    image_description = (
        "input image: a file path on this machine, an http(s) URL, or base64 image data "
        "(a data: URL too)"
    )

    def __init__(
        self,
        servers: list[str],
        registry: Registry,
        output: Path,
        settings: BatchSettings | None = None,
    ) -> None:
        self.servers, self.registry = servers, registry
        self.output = output.expanduser().resolve()
        self.settings = settings or BatchSettings()
        self.calls: dict[str, _Call] = {}

    async def caller(self, request: Any) -> None:
        return None

    async def run(
        self, caller: None, served: Served, values: dict[str, Any], progress: Progress
    ) -> JobOutcome:
        (outcome,) = await self._run(served, [values], progress)
        return outcome

    async def run_rows(
        self, caller: None, served: Served, rows: list[dict[str, Any]], progress: Progress
    ) -> list[JobOutcome]:
        return await self._run(served, rows, progress)

    async def get_job(self, caller: None, job_id: str) -> JobOutcome:
        call, row = self._find(job_id)
        return call.outcomes.get(row) or self._pending(job_id, call, row, "running")

    async def cancel_job(self, caller: None, job_id: str) -> JobOutcome:
        call, row = self._find(job_id)
        if row not in call.outcomes and call.batch is not None:
            call.batch.abandon()  # the call that runs it reports the rows as cancelled
        return call.outcomes.get(row) or self._pending(job_id, call, row, "cancelled")

    # -- running -------------------------------------------------------------------------

    async def _run(
        self, served: Served, rows: list[dict[str, Any]], progress: Progress
    ) -> list[JobOutcome]:
        call_id = f"job_{secrets.token_hex(8)}"
        folder = self.output / call_id
        rows = [await self._prepared(served, row, folder) for row in rows]
        call = self.calls[call_id] = _Call(None, served.name, rows)
        ids = [call_id] if len(rows) == 1 else [f"{call_id}.{i}" for i in range(1, len(rows) + 1)]
        fractions = [0.0] * len(rows)
        reports: asyncio.Queue[str] = asyncio.Queue()

        def on_event(kind: str, data: Any) -> None:
            if kind == "job_event" and isinstance(data[2], ProgressEvent) and data[2].max:
                fractions[data[1].row - 1] = data[2].value / data[2].max
                reports.put_nowait("running")

        call.batch = Batch(
            (Row(i, {"_name": f"{i:03d}", **row}) for i, row in enumerate(rows, 1)),
            folder,
            servers=self.servers,
            workflow=served.workflow,
            settings=self.settings,
            on_event=on_event,
        )

        async def report() -> None:
            while True:
                message = await reports.get()
                await progress(sum(fractions), float(len(rows)), message)

        sender = asyncio.create_task(report())
        try:
            await self._collect(call, ids, folder, fractions, reports)
        finally:
            sender.cancel()
        return [
            call.outcomes.get(i, self._pending(ids[i - 1], call, i, "cancelled"))
            for i in range(1, len(rows) + 1)
        ]

    async def _collect(
        self,
        call: _Call,
        ids: list[str],
        folder: Path,
        fractions: list[float],
        reports: asyncio.Queue[str],
    ) -> None:
        """Every row's outcome as the batch yields it; cancelled, the batch is abandoned
        (its running jobs cancelled on their servers) before the cancellation goes on."""
        assert call.batch is not None
        # an async generator: closed here, so its jobs end before the call does
        results = cast(AsyncGenerator[JobResult, None], call.batch.results())
        try:
            async for result in results:
                call.outcomes[result.row] = self._outcome(ids[result.row - 1], call, result, folder)
                fractions[result.row - 1] = 1.0
                reports.put_nowait(f"{len(call.outcomes)} of {len(ids)} done")
        except anyio.get_cancelled_exc_class():
            call.batch.abandon()
            with anyio.CancelScope(shield=True):
                await results.aclose()
            raise
        finally:
            await results.aclose()

    async def _prepared(self, served: Served, row: dict[str, Any], folder: Path) -> dict[str, Any]:
        """``row`` with a seed drawn if none is given (so it is reported) and its input
        images checked and kept as files."""
        row = dict(row)
        if "seed" in served.request_model.model_fields and row.get("seed") is None:
            row["seed"] = random_seed()
        storage = LocalStorage(folder / "inputs")
        for name in served.images:
            value = row.get(name)
            if isinstance(value, str):
                row[name] = await _input_file(storage, value, name)
        return row

    def _outcome(self, job_id: str, call: _Call, result: JobResult, folder: Path) -> JobOutcome:
        params = (
            dict(result.generation.params) if result.generation else self._given(call, result.row)
        )
        outputs = [_output(folder / rel) for rel in result.files]
        state = {"done": "succeeded", "skipped": "succeeded"}.get(result.state, "failed")
        return JobOutcome(
            job_id,
            call.workflow,
            state,
            params,
            outputs,
            result.error,
            _labels(call.rows[result.row - 1]),
        )

    def _pending(self, job_id: str, call: _Call, row: int, state: str) -> JobOutcome:
        return JobOutcome(
            job_id, call.workflow, state, self._given(call, row), row=_labels(call.rows[row - 1])
        )

    @staticmethod
    def _given(call: _Call, row: int) -> dict[str, Any]:
        return {k: v for k, v in call.rows[row - 1].items() if not k.startswith("_")}

    def _find(self, job_id: str) -> tuple[_Call, int]:
        call_id, _, row = job_id.partition(".")
        call = self.calls.get(call_id)
        if call is None or not (row.isdigit() or not row) or int(row or 1) > len(call.rows):
            raise ToolError(f"no job {job_id!r}", param="job_id")
        return call, int(row or 1)


async def _input_file(storage: LocalStorage, value: str, param: str) -> str:
    """The path of an input image given as a local file, a URL or base64 (checked as the
    gateway checks uploads)."""
    file = await asyncio.to_thread(_local_file, value)
    data = value if file is None else await asyncio.to_thread(file.read_bytes)
    return str(await _take(storage, data, param))


def _local_file(value: str) -> Path | None:
    try:
        path = Path(value).expanduser()
        return path if path.is_file() else None
    except (OSError, ValueError):  # base64 is no file name (too long, or NUL)
        return None


async def _take(storage: LocalStorage, value: str | bytes, param: str) -> Path:
    try:
        upload = await take_image(storage, _OWNER, value, param, UploadLimits())
    except (UploadRefused, UploadMissing) as exc:
        raise ToolError(str(exc), param=param) from None
    return storage.path(upload.key)


def _output(path: Path) -> OutputFile:
    kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return OutputFile(path.name, path.as_uri(), kind, path.read_bytes())


def _labels(row: dict[str, Any]) -> dict[str, Any]:
    return {k[1:]: v for k, v in row.items() if k in ("_name", "_topic")}
