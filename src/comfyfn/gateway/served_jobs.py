"""The gateway's API jobs as a worker (:class:`comfyfn.jobs.Worker`) runs them: bound from
the served workflows with the caller's uploads, stored in the gateway's storage, counted in
its metrics, announced to their webhooks. ``comfyfn serve`` and ``comfyfn worker`` run the
same worker (:func:`gateway_worker`)."""

from __future__ import annotations

from typing import Any

from comfyfn.errors import ComfyError
from comfyfn.fleet import FleetLike
from comfyfn.gateway.metrics import Metrics
from comfyfn.gateway.registry import Registry
from comfyfn.gateway.settings import GatewaySettings
from comfyfn.gateway.uploads import resolve_inputs
from comfyfn.gateway.webhooks import webhook_sender
from comfyfn.jobs import JobBus, JobRecord, Store, Worker, error_record, models_key
from comfyfn.models import model_set
from comfyfn.storage import Storage
from comfyfn.workflow import Workflow

__all__ = ["ServedJobs", "gateway_worker", "served_models"]


class ServedJobs:
    """The API jobs of the workflows in ``registry`` (:class:`comfyfn.jobs.ApiJobs`): input
    images read back from the caller's uploads in ``storage`` (within ``max_pixels``), and
    outputs stored there."""

    def __init__(self, registry: Registry, storage: Storage, *, max_pixels: int) -> None:
        self.registry, self._storage, self.max_pixels = registry, storage, max_pixels

    @property
    def storage(self) -> Storage:
        return self._storage

    async def bind(self, job: JobRecord) -> Workflow | dict[str, Any]:
        """The job's workflow bound to its parameters (input images read from the uploads
        of its key, never into ``job.params``: those are published and shown), with the
        job's own file prefixes; or the error to store."""
        served = self.registry.get(job.workflow)
        if served is None:
            return {"type": "WorkflowGone", "message": f"workflow {job.workflow!r} is not served"}
        params = {
            **job.params,
            **served.workflow.per_job_prefixes(f"{job.id[4:6]}/{job.id}", given=job.params),
        }
        try:
            params = await resolve_inputs(
                self._storage,
                served.workflow,
                params,
                key_id=job.key_id,
                max_pixels=self.max_pixels,
            )
            return served.workflow.bind(**params)
        except ComfyError as exc:
            return error_record(exc)

    def models(self, workflow: str) -> str | None:
        return served_models(self.registry, workflow)


def served_models(registry: Registry, workflow: str) -> str | None:
    """The digest of the models a job of ``workflow`` loads (as served here), for claims
    that prefer the jobs whose models a worker's server holds; None if not served."""
    served = registry.get(workflow)
    return models_key(model_set(served.workflow)) if served is not None else None


def gateway_worker(
    store: Store,
    registry: Registry,
    settings: GatewaySettings,
    metrics: Metrics,
    storage: Storage,
    *,
    bus: JobBus | None = None,
    fleet: FleetLike | None = None,
) -> Worker:
    """A worker of this gateway's jobs (and of any batch's rows in its store)."""
    return Worker(
        store,
        settings.worker_settings(),
        bus,
        api=ServedJobs(registry, storage, max_pixels=settings.max_pixels),
        metrics=metrics,
        notify=webhook_sender(metrics, allow_private=settings.allow_private_webhooks),
        fleet=fleet,
    )
