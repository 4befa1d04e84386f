"""What one gateway application holds while it runs: settings, store, file storage,
workflows, metrics, rate limiter, event bus, (once started) the worker — or, in a replica
started with ``--no-worker``, a :class:`Submitter` that only queues jobs for the
``comfyfn worker`` runners elsewhere — and the servers' warm-up. Built by
:func:`comfyfn.gateway.app.create_app`, kept in ``app.state.runtime`` and handed to the
routes by :mod:`comfyfn.gateway.dependencies`.

Readiness (``/readyz``): with a worker, the store answers and one of its ComfyUI servers is
up (and the warm-up is done); without one, the store answers — this replica can queue jobs,
whether or not a runner is up at the moment (runners may be scaled from zero on the queue's
depth, which ``/metrics`` exports)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

from comfyfn._tasks import cancel_and_wait
from comfyfn.client import AsyncClient
from comfyfn.errors import ComfyError
from comfyfn.gateway._outputs import KnownFiles
from comfyfn.gateway.errors import ApiError
from comfyfn.gateway.metrics import Metrics
from comfyfn.gateway.registry import Registry
from comfyfn.gateway.security import RateLimiter
from comfyfn.gateway.served_jobs import served_models
from comfyfn.gateway.settings import GatewaySettings
from comfyfn.jobs import DB_ERRORS, JobBus, JobRecord, Store, Worker
from comfyfn.models import awarm
from comfyfn.storage import Storage

__all__ = ["Runtime", "Submitter", "WarmUp"]

log = logging.getLogger("comfyfn.gateway")


@dataclass
class WarmUp:
    """The warm-up of every server at start: each of ``workflows`` run once as its smallest
    job (:func:`comfyfn.models.awarm`), so the first user job does not load models.
    ``/readyz`` is not ready until it is done, nor after it failed (``failed`` names the
    workflows, by name and never by folder, and never the servers; the log has the
    details). A server down at start fails its warm-up: the gateway then stays not ready
    until it is restarted."""

    workflows: tuple[str, ...]
    done: bool = False
    failed: list[str] = field(default_factory=list)

    def problem(self) -> ApiError | None:
        """Why the gateway is not ready on account of the warm-up, or None."""
        if not self.workflows:
            return None
        if not self.done:
            return ApiError(
                503,
                f"warming up the servers with {', '.join(map(_shown, self.workflows))}",
                type="server_error",
                code="warming_up",
                headers={"Retry-After": "5"},
            )
        if self.failed:
            return ApiError(
                503,
                f"the warm-up failed: {'; '.join(self.failed)} (see the gateway's log)",
                type="server_error",
                code="warm_up_failed",
            )
        return None

    async def run(
        self, clients: dict[str, AsyncClient], registry: Registry, timeout: float | None
    ) -> None:
        """Warm every server (all at once; one workflow after the other on each)."""
        try:
            await asyncio.gather(*(self._server(c, registry, timeout) for c in clients.values()))
        finally:
            self.done = True

    async def _server(self, client: AsyncClient, registry: Registry, timeout: float | None) -> None:
        where = client.server
        for name in self.workflows:
            served = registry.get(name)
            try:
                warmed = await awarm(client, served.workflow if served else name, timeout=timeout)
            except Exception as exc:  # any failure must end the warm-up, not leave it pending
                if isinstance(exc, ComfyError):
                    log.error("warm-up of %s on %s failed: %s", name, where, exc)
                else:
                    log.exception("warm-up of %s on %s failed inside the gateway", name, where)
                failure = f"{_shown(name)} ({type(exc).__name__})"
                if failure not in self.failed:
                    self.failed.append(failure)
                continue
            log.info("warm-up of %s on %s took %.2f s", name, where, warmed.seconds)


def _shown(workflow: str) -> str:
    """A workflow as ``/readyz`` may name it (no key is needed there): a file by its name."""
    return PurePath(workflow).name or workflow


class Submitter:
    """Jobs for workers elsewhere (``serve --no-worker``): :meth:`submit` queues them (on
    PostgreSQL the store notifies the listening workers) and nothing here runs them. The
    store is looked at every ``interval`` seconds: :meth:`healthy` says whether it answers."""

    def __init__(self, store: Store, registry: Registry, *, interval: float = 2.0) -> None:
        self.store, self.registry, self.interval = store, registry, interval
        self.db_ok = True
        self._watch: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._look()
        self._watch = asyncio.create_task(self._watching())

    async def stop(self) -> None:
        if self._watch is not None:
            await cancel_and_wait(self._watch)

    def healthy(self) -> bool:
        return self.db_ok

    async def submit(self, **job: Any) -> JobRecord:
        """Queue a job (:meth:`Store.create_job`'s arguments)."""
        models = served_models(self.registry, job["workflow"])
        try:
            record, _ = await asyncio.to_thread(self.store.create_job, models=models, **job)
        except DB_ERRORS:
            self.db_ok = False
            raise
        self.db_ok = True
        return record

    async def cancel(self, job_id: str) -> bool:
        """No job runs here: its worker sees the request at its next heartbeat."""
        return False

    async def _look(self) -> None:
        try:
            await asyncio.to_thread(self.store.ping)
        except DB_ERRORS as exc:
            if self.db_ok:
                log.error("the job store does not answer: %s", exc)
            self.db_ok = False
        else:
            self.db_ok = True

    async def _watching(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self._look()


@dataclass
class Runtime:
    settings: GatewaySettings
    store: Store
    registry: Registry
    storage: Storage  #: where output files (and uploads) are kept
    files: KnownFiles = field(default_factory=KnownFiles)  #: file records seen here
    warm_up: WarmUp = field(default_factory=lambda: WarmUp(()))
    metrics: Metrics = field(default_factory=Metrics)
    bus: JobBus = field(default_factory=JobBus)
    limiter: RateLimiter = field(default_factory=RateLimiter)
    worker: Worker | Submitter | None = None  #: set while the application runs
    background: set[asyncio.Task[None]] = field(default_factory=set)

    def ready(self) -> bool:
        """Able to take jobs: the worker runs, the store answers, a server is up (without a
        worker: the store answers)."""
        return self.worker is not None and self.worker.healthy()

    def not_ready(self) -> ApiError:
        """Why a job cannot be taken now (503: the database, the worker's own loops failing,
        or no ComfyUI server)."""
        if self.worker is not None and not self.worker.db_ok:
            return ApiError(
                503,
                "the job database is unavailable; try again shortly",
                type="server_error",
                code="database_unavailable",
                headers={"Retry-After": "2"},
            )
        if isinstance(self.worker, Worker) and self.worker.loops_failing():
            return ApiError(
                503,
                "the gateway's worker is failing; try again shortly",
                type="server_error",
                code="worker_failing",
                headers={"Retry-After": "10"},
            )
        return ApiError(
            503, "no ComfyUI server is available", type="server_error", code="no_server"
        )

    def in_background(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` to its end even if the request that started it is gone."""
        task = asyncio.create_task(work)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
