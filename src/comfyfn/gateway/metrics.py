"""Prometheus metrics of one gateway process (its own registry, exposed at /metrics).

Request labels are bounded, so random requests cannot grow the series without bound: the
route is the matched route's template (``/v1/jobs/{job_id}``) or ``unmatched``, the method
one of the standard ones or ``other``, the status one the gateway itself sends.

The queue as the store has it (every replica sees the same; read at each scrape, for
autoscalers such as KEDA): ``comfyfn_queued_jobs{workflow, priority}``, and the runners
alive (a heartbeat within the last minute) with their free slots: ``comfyfn_workers``,
``comfyfn_worker_free_slots``. A scrape while the store is down leaves them out.

The same middleware writes the access log: one line per request on the logger
``comfyfn.gateway.access`` (INFO), ``METHOD PATH STATUS SECONDS KEY_ID``: the path without
its query string (a file URL's signature), the API key's id (``-`` if none was
authenticated), never the key itself nor anything of the body.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.exc import SQLAlchemyError

if TYPE_CHECKING:
    from comfyfn.jobs.schema import JobRecord
    from comfyfn.jobs.store import Store

__all__ = ["KEY_ID", "METHODS", "Metrics", "MetricsMiddleware", "route_label"]

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: where the request's authenticated key id is left (``request.state``) for the access log
KEY_ID = "key_id"

access_log = logging.getLogger("comfyfn.gateway.access")
log = logging.getLogger("comfyfn.gateway")
ALIVE_WITHIN = 60.0  #: seconds since its last heartbeat for a runner to count as alive


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "comfyfn_requests_total",
            "HTTP requests by route template, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.job_seconds = Histogram(
            "comfyfn_job_seconds",
            "Job duration by final state",
            ["workflow", "state"],
            registry=self.registry,
            buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900),
        )
        self.queue_depth = Gauge(
            "comfyfn_server_jobs",
            "Our jobs on each ComfyUI server, by its place in --server (from 0; the log "
            "names them at start): no server URL reaches a caller",
            ["server"],
            registry=self.registry,
        )
        self.failures = Counter(
            "comfyfn_failures_total", "Failures by kind", ["kind"], registry=self.registry
        )

    # the worker's counts (:class:`comfyfn.jobs.WorkerMetrics`)

    def failed(self, kind: str) -> None:
        self.failures.labels(kind=kind).inc()

    def job_ended(self, job: JobRecord, seconds: float) -> None:
        self.job_seconds.labels(workflow=job.workflow, state=job.state).observe(seconds)

    def in_flight(self, server: int, jobs: int) -> None:
        self.queue_depth.labels(server=str(server)).set(jobs)

    def watch(self, store: Store) -> None:
        """Export the queue and the runners of ``store`` (read at each scrape)."""
        self.registry.register(QueueCollector(store))


class QueueCollector(Collector):
    """The store's queue depth by workflow and priority, and the live runners."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            queued = self.store.queued_by_workflow()
            workers = self.store.workers()
        except (SQLAlchemyError, OSError) as exc:
            log.warning("/metrics: the job store did not answer (%s)", exc)
            return
        depth = GaugeMetricFamily(
            "comfyfn_queued_jobs",
            "Jobs waiting for a worker, by workflow and priority (all replicas)",
            labels=["workflow", "priority"],
        )
        for workflow, priority, count in queued:
            depth.add_metric([workflow, str(priority)], count)
        now = self.store.clock()
        alive = [w for w in workers if now - w.heartbeat_at < ALIVE_WITHIN]
        yield depth
        yield GaugeMetricFamily("comfyfn_workers", "Runners alive", value=len(alive))
        yield GaugeMetricFamily(
            "comfyfn_worker_free_slots",
            "Free slots of the runners alive, summed",
            value=sum(w.free_slots for w in alive),
        )

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())  # no look at the store when registered


def route_label(scope: dict[str, Any]) -> str:
    """The matched route's path template, else ``unmatched`` (never the raw path)."""
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) else "unmatched"


class MetricsMiddleware:
    """Counts every HTTP request once, after the router has matched it, and logs it to the
    access log (plain ASGI)."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status, started = 500, time.monotonic()
        state = scope.setdefault("state", {})  # request.state: where the key's id is left

        async def sending(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            method = scope.get("method", "")
            self.metrics.requests.labels(
                route=route_label(scope),
                method=method if method in METHODS else "other",
                status=str(status),
            ).inc()
            access_log.info(
                "%s %s %d %.3f %s",
                method if method in METHODS else "other",
                repr(scope.get("path", ""))[1:-1],  # control characters escaped
                status,
                time.monotonic() - started,
                state.get(KEY_ID, "-"),
            )
