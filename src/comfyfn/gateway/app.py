"""The HTTP gateway application: an OpenAI-compatible images API and async jobs in front of
ComfyUI, assembled from its routers (:mod:`comfyfn.gateway.routes`).

Every route but ``/healthz`` and ``/readyz`` needs an API key (``Authorization: Bearer``);
errors use OpenAI's shape ``{"error": {"message", "type", "param", "code"}}`` (database outages:
503 ``database_unavailable``). What the routes share — settings, store, workflows, metrics,
rate limiter, event bus, worker — is one :class:`~comfyfn.gateway.runtime.Runtime` in
``app.state.runtime``, handed to them by :mod:`comfyfn.gateway.dependencies`; the job rules
live in :mod:`comfyfn.gateway.service`. With the ``mcp`` extra, ``/mcp`` serves the same
workflows to AI agents (MCP, streamable HTTP; :mod:`comfyfn.mcp`) under the same keys.
With ``worker=False`` (``serve --no-worker``) the replica only serves the API: its jobs are
run by ``comfyfn worker`` runners on the GPU machines (:class:`~.runtime.Submitter`).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
from collections.abc import AsyncIterator, Callable

from fastapi import FastAPI
from sqlalchemy.exc import SQLAlchemyError

from comfyfn._tasks import cancel_and_wait
from comfyfn.errors import ConfigError
from comfyfn.gateway.errors import ERROR_RESPONSES, ApiError, BodyLimit, install_handlers
from comfyfn.gateway.metrics import MetricsMiddleware
from comfyfn.gateway.registry import Registry
from comfyfn.gateway.routes import files, health, jobs, openai, uploads, workflows
from comfyfn.gateway.runtime import Runtime, Submitter, WarmUp
from comfyfn.gateway.served_jobs import gateway_worker
from comfyfn.gateway.settings import GatewaySettings
from comfyfn.gateway.ui import router as _ui_router
from comfyfn.jobs import Store, Worker
from comfyfn.storage import open_storage

__all__ = ["ApiError", "create_app"]


def create_app(
    settings: GatewaySettings,
    *,
    store: Store | None = None,
    mcp: bool | None = None,
    ui: bool = True,
    worker: bool = True,
) -> FastAPI:
    """The gateway application; the worker starts and stops with it (``worker=False``: no
    worker, jobs are only queued; no warm-up either). A store made here
    (none given) is closed when the application stops. ``mcp``: serve the MCP endpoint
    ``/mcp`` (:mod:`comfyfn.mcp`); None: if the ``mcp`` extra is installed. ``ui``: serve
    the web app at ``/`` (:mod:`comfyfn.gateway.ui`)."""
    registry = Registry()
    registry.load(
        settings.workflows, max_prompt=settings.max_prompt_chars, servers=settings.servers
    )
    runtime = Runtime(
        settings,
        store or Store(settings.db_url),
        registry,
        open_storage(settings.storage),
        warm_up=WarmUp(settings.warm if worker else ()),
    )
    runtime.metrics.watch(runtime.store)
    services: list[Callable[[], contextlib.AbstractAsyncContextManager[None]]] = []
    app = FastAPI(
        responses=ERROR_RESPONSES,
        title="comfyfn gateway",
        version="1",
        lifespan=_lifespan(runtime, services, owns_store=store is None, worker=worker),
        description="OpenAI-compatible images API and async jobs for ComfyUI.",
    )
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["*"],
            allow_headers=["*"],
        )
    # an image route's body: the image as base64 (4/3) plus the other fields and the form
    image_body = settings.max_upload_bytes * 4 // 3 + 64 * 1024
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes, image_limit=image_body)
    app.add_middleware(MetricsMiddleware, metrics=runtime.metrics)  # outermost: counts all
    install_handlers(app)
    app.include_router(health.router)
    app.include_router(openai.router)
    app.include_router(jobs.router)
    app.include_router(workflows.workflow_router(registry))
    app.include_router(files.router)
    app.include_router(uploads.router)
    if ui:
        app.include_router(_ui_router)
    if _serves_mcp(mcp):
        from comfyfn.mcp import mcp_endpoint

        route, sessions = mcp_endpoint(runtime)
        app.router.routes.append(route)
        services.append(sessions.run)
    app.state.runtime = runtime
    return app


def _serves_mcp(asked: bool | None) -> bool:
    installed = importlib.util.find_spec("mcp") is not None
    if asked and not installed:
        raise ConfigError("the MCP endpoint needs the mcp SDK: pip install 'comfyfn[mcp]'")
    return installed if asked is None else asked


def _lifespan(
    runtime: Runtime,
    services: list[Callable[[], contextlib.AbstractAsyncContextManager[None]]],
    *,
    owns_store: bool,
    worker: bool,
) -> Callable[[FastAPI], contextlib.AbstractAsyncContextManager[None]]:
    """Starts the worker (or the submitter), the warm-up and ``services`` (the MCP
    sessions); stops them."""

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        with contextlib.suppress(SQLAlchemyError, OSError):  # read once, off the event loop
            await asyncio.to_thread(runtime.store.secret)
        runner = _runner(runtime) if worker else Submitter(runtime.store, runtime.registry)
        await runner.start()
        runtime.worker = runner
        clients = runner.fleet.clients if isinstance(runner, Worker) else {}
        warming = asyncio.create_task(
            runtime.warm_up.run(clients, runtime.registry, runtime.settings.job_timeout)
        )
        try:
            async with contextlib.AsyncExitStack() as running:
                for service in services:
                    await running.enter_async_context(service())
                yield
        finally:
            await cancel_and_wait(warming)
            await runner.stop()
            if runtime.background:  # cancels asked for by callers who left: a moment to end
                await asyncio.wait(list(runtime.background), timeout=5)
            if owns_store:
                runtime.store.close()

    return lifespan


def _runner(runtime: Runtime) -> Worker:
    return gateway_worker(
        runtime.store,
        runtime.registry,
        runtime.settings,
        runtime.metrics,
        runtime.storage,
        bus=runtime.bus,
    )
