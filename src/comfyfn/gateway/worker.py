"""Running the gateway's jobs on the ComfyUI pool: claim, run or re-attach, store, notify.

Jobs live in the store, not in memory: a worker claims one (atomically, so two gateway
replicas never run the same job), records the server and its prompt id *before* submitting,
and heartbeats while it runs. A job whose worker died (no heartbeat) is claimed by another
worker or by the restarted one and re-attached by prompt id on its server — or run again if
the server lost it. Server choice and health reuse the batch pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import stamina

from comfyfn._files import write_atomic
from comfyfn.batch.jobs import sharded_prefixes
from comfyfn.batch.pool import Pool
from comfyfn.client import AsyncClient
from comfyfn.errors import ComfyError, ExecutionFailed, GenerationTimeout, TransportError
from comfyfn.events import Failed, Interrupted, Progress, Queued, Started, Succeeded
from comfyfn.gateway.metrics import Metrics
from comfyfn.gateway.registry import Registry
from comfyfn.gateway.security import sign_webhook
from comfyfn.gateway.settings import GatewaySettings
from comfyfn.gateway.store import JobRecord, Store

__all__ = ["Worker"]

log = logging.getLogger("comfyfn.gateway")


class Worker:
    def __init__(
        self, store: Store, registry: Registry, settings: GatewaySettings, metrics: Metrics
    ) -> None:
        self.store, self.registry, self.settings, self.metrics = store, registry, settings, metrics
        self.pool = Pool(list(settings.servers), settings.prime + 1)
        self.clients: dict[str, AsyncClient] = {}
        self.running: dict[str, asyncio.Task[None]] = {}
        self.wakeup = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._notifications: set[asyncio.Task[None]] = set()
        self._done: dict[str, asyncio.Event] = {}

    async def start(self) -> None:
        timeout = httpx.Timeout(10.0, connect=3.0)
        for url in self.settings.servers:
            client = AsyncClient(url, timeout=timeout, retries=1, check_interval=2.0)
            await client.open()
            self.clients[url] = client
            try:  # readiness must be true from the start, not only after a failure
                await client.system_stats()
            except ComfyError:
                await self.pool.mark_down(url)
        self._tasks = [
            asyncio.create_task(self._claim_loop()),
            asyncio.create_task(self._heartbeat_loop()),
            asyncio.create_task(self._health_loop()),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for job_id, task in list(self.running.items()):
            task.cancel()  # the job stays 'running' in the store: a restart re-attaches it
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            log.info("left job %s to be re-attached", job_id)
        for client in self.clients.values():
            await client.aclose()

    def healthy(self) -> bool:
        return any(s.healthy for s in self.pool.states.values())

    # -- loops -----------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        while True:
            if not any(
                s.healthy and s.in_flight < self.pool.slots for s in self.pool.states.values()
            ):
                await self._sleep(0.2)
                continue
            job = await asyncio.to_thread(
                self.store.claim_job, self.settings.worker_id, stale_after=self.settings.stale_after
            )
            if job is None:
                await self._sleep(0.5)
                continue
            self.running[job.id] = asyncio.create_task(self._run(job))

    async def _sleep(self, seconds: float) -> None:
        self.wakeup.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wakeup.wait(), seconds)

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat)
            await asyncio.to_thread(self.store.heartbeat, self.settings.worker_id)
            for job_id, task in list(self.running.items()):
                job = await asyncio.to_thread(self.store.get_job, job_id)
                if job is not None and job.cancel_requested:
                    task.cancel()
            for url, state in self.pool.states.items():
                self.metrics.queue_depth.labels(server=url).set(state.in_flight)

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            for url in self.pool.down():
                try:
                    await self.clients[url].system_stats()
                except ComfyError:
                    continue
                await self.pool.mark_up(url)

    # -- one job ---------------------------------------------------------------------------

    async def _run(self, job: JobRecord) -> None:
        served = self.registry.get(job.workflow)
        attach = bool(job.prompt_id and job.server in self.clients)
        if attach:
            url = job.server
            self.pool.states[url].in_flight += 1
        else:
            url = await self.pool.acquire()
        started = time.monotonic()
        ok = False
        try:
            if served is None:
                raise ComfyError(f"workflow {job.workflow!r} is no longer served")
            params = {
                **job.params,
                **sharded_prefixes(served.workflow, f"{job.id[4:6]}/{job.id}", given=job.params),
            }
            wf = served.workflow.bind(**params)
            prompt_id = job.prompt_id if attach else str(uuid.uuid4())
            if not attach:
                await asyncio.to_thread(
                    self.store.update_job, job.id, server=url, prompt_id=prompt_id, progress=0.0
                )
            outcome = None
            async for event in self.clients[url].stream_graph(
                wf,
                prompt_id=prompt_id,
                attach=attach,
                timeout=self.settings.job_timeout,
                validate=not attach,
            ):
                if isinstance(event, Progress) and event.max:
                    await asyncio.to_thread(
                        self.store.update_job, job.id, progress=round(event.value / event.max, 3)
                    )
                elif isinstance(event, Queued | Started):
                    continue
                elif isinstance(event, Succeeded | Failed | Interrupted):
                    outcome = event
            if isinstance(outcome, Succeeded):
                files = await asyncio.to_thread(self._store_files, job.id, outcome.generation)
                await asyncio.to_thread(
                    self.store.update_job, job.id, state="succeeded", progress=1.0, outputs=files
                )
                ok = True
                self._finished(job, "succeeded", started)
            elif isinstance(outcome, Interrupted) and outcome.error.lost:
                await self._requeue(job, "the server lost the job; running it again")
                return
            elif outcome is not None:
                await self._fail(
                    job,
                    outcome.error,
                    started,
                    "cancelled" if isinstance(outcome, Interrupted) else "failed",
                )
        except (TransportError, GenerationTimeout) as exc:
            await self.pool.mark_down(url)
            self.metrics.failures.labels(kind=type(exc).__name__).inc()
            await self._requeue(job, str(exc))
        except asyncio.CancelledError:
            fresh = await asyncio.to_thread(self.store.get_job, job.id)
            if fresh is not None and fresh.cancel_requested:
                await asyncio.to_thread(
                    self.store.update_job,
                    job.id,
                    state="cancelled",
                    error={"type": "cancelled", "message": "cancelled"},
                )
                self._finished(job, "cancelled", started)
            raise
        except ComfyError as exc:
            await self._fail(job, exc, started, "failed")
        finally:
            self.running.pop(job.id, None)
            await self.pool.release(url, ok=ok)
            self.wakeup.set()

    async def _requeue(self, job: JobRecord, reason: str) -> None:
        log.warning("job %s goes back to the queue: %s", job.id, reason)
        await asyncio.to_thread(
            self.store.update_job,
            job.id,
            state="queued",
            server=None,
            prompt_id=None,
            claimed_by=None,
            progress=0.0,
        )

    async def _fail(self, job: JobRecord, error: BaseException, started: float, state: str) -> None:
        kind = type(error).__name__
        detail: dict[str, Any] = {"type": kind, "message": str(error)}
        if isinstance(error, ExecutionFailed):
            detail.update(node_id=error.node_id, class_type=error.class_type)
        self.metrics.failures.labels(kind=kind).inc()
        await asyncio.to_thread(self.store.update_job, job.id, state=state, error=detail)
        self._finished(job, state, started)

    def finished_event(self, job_id: str) -> asyncio.Event:
        """Set when this process finishes ``job_id`` (callers still re-read the store)."""
        return self._done.setdefault(job_id, asyncio.Event())

    def forget(self, job_id: str) -> None:
        self._done.pop(job_id, None)

    def _finished(self, job: JobRecord, state: str, started: float) -> None:
        self.metrics.job_seconds.labels(workflow=job.workflow, state=state).observe(
            time.monotonic() - started
        )
        event = self._done.pop(job.id, None)
        if event is not None:
            event.set()
        if job.webhook:
            task = asyncio.create_task(self._notify(job.id))
            self._notifications.add(task)
            task.add_done_callback(self._notifications.discard)

    def _store_files(self, job_id: str, generation) -> list[str]:
        folder = self.settings.storage / job_id
        ids = []
        for i, image in enumerate(generation.images):
            data = image.png_bytes()
            path = folder / f"{i}.png"
            write_atomic(path, data)
            record = self.store.add_file(
                job_id=job_id,
                path=str(path),
                content_type="image/png",
                size=len(data),
                etag=hashlib.sha256(data).hexdigest()[:32],
            )
            ids.append(record.id)
        return ids

    async def _notify(self, job_id: str) -> None:
        """POST the finished job to its webhook, signed, retried with backoff."""
        job = await asyncio.to_thread(self.store.get_job, job_id)
        if job is None or not job.webhook:
            return
        body = json.dumps(
            {
                "id": job.id,
                "state": job.state,
                "workflow": job.workflow,
                "outputs": job.outputs,
                "error": job.error,
            }
        ).encode()
        secret = await asyncio.to_thread(self.store.secret)
        try:
            async for attempt in stamina.retry_context(
                on=httpx.HTTPError, attempts=5, wait_initial=0.2, wait_max=5.0
            ):
                with attempt:
                    stamp = int(time.time())
                    async with httpx.AsyncClient(timeout=10) as http:
                        response = await http.post(
                            job.webhook,
                            content=body,
                            headers={
                                "Content-Type": "application/json",
                                "X-Comfyfn-Timestamp": str(stamp),
                                "X-Comfyfn-Signature": sign_webhook(secret, body, stamp),
                            },
                        )
                        response.raise_for_status()
        except httpx.HTTPError as exc:
            self.metrics.failures.labels(kind="WebhookFailed").inc()
            log.warning("webhook for %s failed: %s", job_id, exc)


def storage_path(settings: GatewaySettings, path: str) -> Path | None:
    """The stored file's path if it lies inside the storage folder (no traversal)."""
    root = settings.storage.resolve()
    candidate = Path(path).resolve()
    return candidate if candidate.is_relative_to(root) else None
