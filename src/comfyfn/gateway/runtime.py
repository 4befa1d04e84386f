"""What one gateway application holds while it runs: settings, store, file storage,
workflows, metrics, rate limiter, event bus and (once started) the worker. Built by
:func:`comfyfn.gateway.app.create_app`, kept in ``app.state.runtime`` and handed to the
routes by :mod:`comfyfn.gateway.dependencies`."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from comfyfn.gateway.bus import JobBus
from comfyfn.gateway.errors import ApiError
from comfyfn.gateway.metrics import Metrics
from comfyfn.gateway.registry import Registry
from comfyfn.gateway.security import RateLimiter
from comfyfn.gateway.settings import GatewaySettings
from comfyfn.gateway.store import Store
from comfyfn.gateway.worker import Worker
from comfyfn.storage import Storage

__all__ = ["Runtime"]


@dataclass
class Runtime:
    settings: GatewaySettings
    store: Store
    registry: Registry
    storage: Storage  #: where output files (and uploads) are kept
    metrics: Metrics = field(default_factory=Metrics)
    bus: JobBus = field(default_factory=JobBus)
    limiter: RateLimiter = field(default_factory=RateLimiter)
    worker: Worker | None = None  #: set while the application runs
    background: set[asyncio.Task[None]] = field(default_factory=set)

    def ready(self) -> bool:
        """Able to take jobs: the worker runs, the store answers, a server is up."""
        return self.worker is not None and self.worker.healthy()

    def not_ready(self) -> ApiError:
        """Why a job cannot be taken now (503: the database, or no ComfyUI server)."""
        if self.worker is not None and not self.worker.db_ok:
            return ApiError(
                503,
                "the job database is unavailable; try again shortly",
                type="server_error",
                code="database_unavailable",
                headers={"Retry-After": "2"},
            )
        return ApiError(
            503, "no ComfyUI server is available", type="server_error", code="no_server"
        )

    def in_background(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` to its end even if the request that started it is gone."""
        task = asyncio.create_task(work)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
