"""What a worker is given by the application it runs in: its settings, the API jobs it
serves (the gateway binds and stores those), its metrics and its webhooks.

A worker runs two kinds of jobs from one store (:mod:`comfyfn.jobs.worker`): batch rows,
which carry their bound graph and output place with them and need nothing more, and the
gateway's API jobs, which need the gateway's served workflows, its uploads and its storage
(:class:`ApiJobs`). ``comfyfn batch --work`` runs a worker without any of them;
``comfyfn serve`` and ``comfyfn worker`` give it the gateway's (:mod:`comfyfn.gateway`).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from comfyfn.jobs.schema import JobRecord
from comfyfn.storage import Storage
from comfyfn.workflow import Workflow

__all__ = ["ApiJobs", "NoMetrics", "Notify", "WorkerMetrics", "WorkerSettings", "new_worker_id"]


def new_worker_id() -> str:
    """A worker name unique to this process and call (``w-<pid>-<6 hex digits>``)."""
    return f"w-{os.getpid()}-{os.urandom(3).hex()}"


@dataclass(frozen=True)
class WorkerSettings:
    """How a worker runs its jobs on its servers (the gateway's are in its own settings)."""

    servers: tuple[str, ...]
    #: the worker's name in the store: its claims, heartbeats and ``comfyfn workers``
    worker_id: str = field(default_factory=lambda: new_worker_id())
    prime: int | None = None  #: jobs queued per server beyond the running one; None: adaptive
    job_timeout: float | None = None
    http_timeout: float = 10.0  #: a ComfyUI server silent this long counts as failed
    retries: int = 3  #: times a job is moved to another server after a server failure
    #: for partner (paid cloud) nodes; None: $COMFY_ORG_API_KEY, read by each client at use
    comfy_org_key: str | None = field(default=None, repr=False)
    stale_after: float = 30.0  #: a running job without heartbeat this long is taken over
    heartbeat: float = 5.0  #: seconds between heartbeats (and looks for cancel requests)


class ApiJobs(Protocol):
    """The API jobs a worker can run: how one is bound, what it loads, where its files go."""

    @property
    def storage(self) -> Storage:
        """Where the API jobs' outputs go, under ``<job id>/<i>.<ext>``."""
        ...

    async def bind(self, job: JobRecord) -> Workflow | dict[str, Any]:
        """The job's bound workflow, or the error to store (``type``, ``message``) if it
        cannot be bound (its workflow no longer served, an input gone)."""
        ...

    def models(self, workflow: str) -> str | None:
        """The digest of the model set a job of ``workflow`` loads
        (:func:`comfyfn.jobs.schema.models_key`), or None if unknown."""
        ...


class WorkerMetrics(Protocol):
    """What a worker counts (the gateway's ``/metrics``)."""

    def failed(self, kind: str) -> None:
        """A failure of this kind: an error's type, ``StoreError``, ``WebhookFailed``…"""
        ...

    def job_ended(self, job: JobRecord, seconds: float) -> None:
        """A job ended in its final state after ``seconds`` in this worker."""
        ...

    def in_flight(self, server: int, jobs: int) -> None:
        """The jobs on the worker's ``server`` (by index), at each heartbeat."""
        ...


class NoMetrics:
    """A worker that counts nothing (``comfyfn batch --work``)."""

    def failed(self, kind: str) -> None:
        pass

    def job_ended(self, job: JobRecord, seconds: float) -> None:
        pass

    def in_flight(self, server: int, jobs: int) -> None:
        pass


#: deliver a finished job's webhook, given the job and the store's signing secret
Notify = Callable[[JobRecord, bytes], Awaitable[None]]
