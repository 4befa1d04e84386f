"""``comfyfn worker`` (a runner on a GPU machine) and ``comfyfn workers`` (the runners).

A runner is the gateway's worker (:class:`comfyfn.jobs.Worker`, given the gateway's API
jobs) without the HTTP app: it registers itself in the shared store, claims the jobs every
gateway replica queued, drives its ComfyUI servers through the fleet layer, writes the
outputs to the storage and hands its jobs back at once on SIGTERM or Ctrl-C. It needs the
same workflows as the gateway (``--workflow``) and the same storage.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from typing import TYPE_CHECKING, Annotated

import typer

from comfyfn.cli._common import ComfyOrgKeyOpt, ServersOpt, err, esc, fail
from comfyfn.cli._gateway import DbOpt, require_extras, served_workflows
from comfyfn.errors import ComfyError

if TYPE_CHECKING:
    from comfyfn.gateway.settings import GatewaySettings

__all__ = ["worker_command", "workers_command"]


def worker_command(
    server: ServersOpt = None,
    db: DbOpt = None,
    name: Annotated[
        str | None,
        typer.Option(help="This runner's name in `comfyfn workers` [host-pid]."),
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option(
            help="Where output files go: the gateway's storage (a folder every replica "
            "reads, or s3://bucket/prefix). Default: $COMFYFN_STORAGE, else files/ in the "
            "data dir."
        ),
    ] = None,
    workflow: Annotated[
        list[str] | None,
        typer.Option(
            "--workflow",
            "-w",
            help="NAME=FILE or a built-in name, as the gateway serves it (repeatable; "
            "default zimage-turbo and zimage-edit).",
        ),
    ] = None,
    prime: Annotated[
        int | None,
        typer.Option(help="Jobs queued per server beyond the running one [adaptive]."),
    ] = None,
    stale_after: Annotated[
        float,
        typer.Option(help="Seconds without heartbeat before a running job is taken over."),
    ] = 30.0,
    allow_private_webhooks: Annotated[
        bool,
        typer.Option(help="Deliver webhooks to loopback/private addresses (as the gateway)."),
    ] = False,
    comfy_org_key: ComfyOrgKeyOpt = None,
) -> None:
    """Run the gateway's jobs on this machine's ComfyUI servers (a runner)."""
    require_extras(db)
    from comfyfn.cli._batch import resolve_servers
    from comfyfn.gateway.settings import GatewaySettings

    try:
        settings = GatewaySettings.resolve(
            servers=resolve_servers(server),
            db_url=db,
            storage=storage,
            workflows=served_workflows(workflow),
            prime=prime,
            stale_after=stale_after,
            heartbeat=max(0.2, stale_after / 4),
            worker_id=name or f"{socket.gethostname()}-{os.getpid()}",
            allow_private_webhooks=allow_private_webhooks,
            comfy_org_key=comfy_org_key,
        )
        asyncio.run(_run(settings))
    except ComfyError as exc:
        raise fail(exc) from None


async def _run(settings: GatewaySettings) -> None:
    """Work until SIGTERM or SIGINT, then hand the jobs back."""
    from comfyfn.gateway.metrics import Metrics
    from comfyfn.gateway.registry import Registry
    from comfyfn.gateway.served_jobs import gateway_worker
    from comfyfn.jobs import Store
    from comfyfn.storage import open_storage

    registry = Registry()
    registry.load(
        settings.workflows, max_prompt=settings.max_prompt_chars, servers=settings.servers
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    with Store(settings.db_url) as store:
        storage = open_storage(settings.storage)
        worker = gateway_worker(store, registry, settings, Metrics(), storage)
        await worker.start()
        err.print(
            esc(
                f"worker {settings.worker_id} → {', '.join(settings.servers)} "
                f"(db {settings.db_url.split('@')[-1]}, files {settings.storage})"
            ),
            highlight=False,
        )
        try:
            await stop.wait()
        finally:
            await worker.stop()
    err.print(esc(f"worker {settings.worker_id} stopped; its jobs are back in the queue"))


def workers_command(db: DbOpt = None) -> None:
    """The runners: their servers, loaded models, jobs in flight and last heartbeat."""
    require_extras(db)
    from comfyfn.cli._gateway import open_store

    try:
        with open_store(db) as store:
            workers, now = store.workers(), time.time()
    except ComfyError as exc:
        raise fail(exc) from None
    if not workers:
        err.print("no worker has registered", highlight=False)
        return
    for w in workers:
        age = now - w.heartbeat_at
        typer.echo(
            f"{w.name}  {w.host} pid {w.pid}  jobs {w.running}  free slots {w.free_slots}  "
            f"heartbeat {age:.0f}s ago" + ("  (silent: stopped or cut off?)" if age > 60 else "")
        )
        for server in w.servers:
            models = ", ".join(server.get("models") or []) or "no models loaded by us yet"
            state = "up" if server.get("up", True) else "DOWN"
            typer.echo(
                f"    {server['url']}  {state}  in flight {server.get('in_flight', 0)}  {models}"
            )
