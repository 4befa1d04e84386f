"""The HTTP gateway: an OpenAI-compatible images API and async jobs in front of ComfyUI.

Every route but ``/healthz`` and ``/readyz`` needs an API key (``Authorization: Bearer``);
errors use OpenAI's shape ``{"error": {"message", "type", "param", "code"}}`` (database outages:
503 ``database_unavailable``). Every job-creating route runs the same checks, in
:func:`create_app`'s ``create_job``, before anything is stored: texts storable, parameters
valid, cost limits (:meth:`GatewaySettings.cost_error`), webhook target, a server ready.
What a caller sees of a job's error is :func:`comfyfn.gateway.errors.public_error` of it.
"""
# No ``from __future__ import annotations``: FastAPI reads the per-workflow models at runtime.

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Depends, FastAPI, Header, Request
from fastapi.responses import FileResponse, PlainTextResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError

from comfyfn.gateway.errors import (
    ERROR_RESPONSES,
    ApiError,
    BodyLimit,
    error_response,
    install_handlers,
    public_error,
)
from comfyfn.gateway.metrics import Metrics, MetricsMiddleware
from comfyfn.gateway.models import ImagesRequest, JobRequest, text_problem
from comfyfn.gateway.registry import Registry, Served
from comfyfn.gateway.security import RateLimiter, sign_url, verify_url, webhook_target_error
from comfyfn.gateway.settings import GatewaySettings
from comfyfn.gateway.store import JobRecord, KeyRecord, Store
from comfyfn.gateway.worker import Worker, storage_path

__all__ = ["ApiError", "create_app"]

_FINAL = ("succeeded", "failed", "cancelled")
#: a job parameter's name in OpenAI's terms, for /v1/images/generations errors
_OPENAI_PARAM = {"width": "size", "height": "size", "batch_size": "n"}
_TEXT = "text must be valid Unicode (no lone surrogates) without NUL characters"


def create_app(settings: GatewaySettings, *, store: Store | None = None) -> FastAPI:
    """The gateway application; the worker starts and stops with it."""
    store = store or Store(settings.db_url)
    metrics = Metrics()
    registry = Registry()
    limiter = RateLimiter()
    state: dict[str, Any] = {}
    background: set[asyncio.Task[None]] = set()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        worker = Worker(store, registry, settings, metrics)
        await worker.start()
        state["worker"] = worker
        yield
        await worker.stop()

    app = FastAPI(
        responses=ERROR_RESPONSES,
        title="comfyfn gateway",
        version="1",
        lifespan=lifespan,
        description="OpenAI-compatible images API and async jobs for ComfyUI.",
    )
    registry.load(settings.workflows, max_prompt=settings.max_prompt_chars)
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["*"],
            allow_headers=["*"],
        )
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # outermost: counts every answer
    install_handlers(app)

    async def auth(request: Request, authorization: str | None = Header(None)) -> KeyRecord:
        secret = (authorization or "").removeprefix("Bearer ").strip()
        key = await asyncio.to_thread(store.find_key, secret) if secret else None
        if key is None:
            raise ApiError(
                401,
                "missing or invalid API key",
                type="authentication_error",
                code="invalid_api_key",
            )
        wait = limiter.check(key.id, key.rate)
        if wait:
            raise ApiError(
                429,
                f"rate limit {key.rate} exceeded for this key",
                type="rate_limit_error",
                code="rate_limit_exceeded",
                headers={"Retry-After": str(max(1, round(wait + 0.5)))},
            )
        return key

    def served_or_404(name: str) -> Served:
        served = registry.get(name)
        if served is None:
            raise ApiError(
                404,
                f"unknown model/workflow {name!r}; GET /v1/models lists them",
                param="model",
                code="model_not_found",
            )
        return served

    def ready() -> bool:
        worker = state.get("worker")
        return worker is not None and worker.healthy()

    def not_ready() -> ApiError:
        worker = state.get("worker")
        if worker is not None and not worker.db_ok:
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

    def job_json(job: JobRecord, request: Request) -> dict[str, Any]:
        secret = store.secret()
        base = str(request.base_url).rstrip("/")
        outputs = [
            {"id": f, "url": f"{base}/v1/files/{f}?{sign_url(secret, f, settings.url_ttl)}"}
            for f in job.outputs
        ]
        return {
            "id": job.id,
            "object": "job",
            "workflow": job.workflow,
            "state": job.state,
            "progress": job.progress,
            "params": job.params,
            "created_at": job.created_at,
            "started_at": job.started_at,
            "finished_at": job.finished_at,
            "outputs": outputs,
            "error": public_error(job.error),
        }

    async def create_job(
        key: KeyRecord,
        name: str,
        params: dict[str, Any],
        webhook: str | None,
        idempotency_key: str | None,
        *,
        where: str = "params",
    ) -> JobRecord:
        """Check everything, then queue: the one way every route creates a job. Refusals are
        422 naming the parameter (``where`` prefixes parameter names: ``params.width``)."""
        served = served_or_404(name)
        prefix = f"{where}." if where else ""
        for value, path in (
            (params, where),
            (webhook, "webhook"),
            (idempotency_key, "Idempotency-Key"),
        ):
            bad = text_problem(value, path)
            if bad is not None:
                raise ApiError(422, f"{bad}: {_TEXT}", param=bad, code="invalid_text")
        try:
            values = served.params(params)
        except ValidationError as exc:
            first = exc.errors()[0]
            param = prefix + ".".join(str(p) for p in first["loc"])
            raise ApiError(422, f"{param}: {first['msg']}", param=param) from None
        over = settings.cost_error(served.effective(values))
        if over is not None:
            raise ApiError(422, over[1], param=prefix + over[0], code="limit_exceeded")
        if webhook:
            problem = await asyncio.to_thread(
                webhook_target_error, webhook, allow_private=settings.allow_private_webhooks
            )
            if problem:
                raise ApiError(400, problem, param="webhook")
        if not ready():
            raise not_ready()
        job, _ = await asyncio.to_thread(
            store.create_job,
            key_id=key.id,
            workflow=name,
            params=values,
            webhook=webhook,
            idempotency_key=idempotency_key,
        )
        state["worker"].wakeup.set()
        return job

    async def own_job(job_id: str, key: KeyRecord) -> JobRecord:
        job = await asyncio.to_thread(store.get_job, job_id, key.id)
        if job is None:
            raise ApiError(404, f"no job {job_id!r}", param="id", code="job_not_found")
        return job

    async def cancel_job(job_id: str) -> None:
        """Dequeue the job if no worker holds it, else ask its worker to stop it (this
        replica's at once; another replica's sees ``cancel_requested`` at its heartbeat)."""
        if await asyncio.to_thread(store.cancel_if_queued, job_id):
            return
        await asyncio.to_thread(store.request_cancel, job_id)
        worker = state.get("worker")
        if worker is not None:
            await worker.cancel(job_id)

    async def wait_for_caller(job: JobRecord, request: Request) -> JobRecord:
        """The job once final, for a caller who waits: 504 after ``sync_timeout``; if the
        caller goes away meanwhile, the job is cancelled (answered 499, to no one)."""
        deadline = time.monotonic() + settings.sync_timeout
        worker = state["worker"]
        done = worker.finished_event(job.id)
        try:
            while job.state not in _FINAL:
                if await request.is_disconnected():
                    await cancel_job(job.id)
                    raise ApiError(499, "the caller went away; the job is cancelled")
                if time.monotonic() > deadline:
                    raise ApiError(
                        504,
                        f"the image was not ready within {settings.sync_timeout:g}s; "
                        f"follow job {job.id} at /v1/jobs/{job.id}",
                        type="server_error",
                    )
                # woken at once when this replica finishes it; another replica's: polled
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), 0.25)
                job = await asyncio.to_thread(store.get_job, job.id)
            return job
        except asyncio.CancelledError:  # the server dropped the request: the caller is gone
            task = asyncio.create_task(cancel_job(job.id))
            background.add(task)
            task.add_done_callback(background.discard)
            raise
        finally:
            worker.forget(job.id)

    # -- health and metrics -----------------------------------------------------------------

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    async def readyz() -> Any:
        """Ready or not, nothing more (no server addresses: no key is needed here)."""
        if not ready():
            return error_response(503, "not ready", "server_error", code="not_ready")
        return {"status": "ready"}

    @app.get(
        "/metrics",
        tags=["health"],
        response_class=PlainTextResponse,
        responses={200: {"content": {"text/plain": {}}}},
    )
    async def metrics_route(_: KeyRecord = Depends(auth)) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # -- OpenAI-compatible ------------------------------------------------------------------

    @app.get("/v1/models", tags=["openai"])
    async def models(_: KeyRecord = Depends(auth)) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {"id": s.name, "object": "model", "created": 0, "owned_by": "comfyfn"}
                for s in registry
            ],
        }

    @app.post("/v1/images/generations", tags=["openai"])
    async def images(
        body: ImagesRequest, request: Request, key: KeyRecord = Depends(auth)
    ) -> dict[str, Any]:
        bad = text_problem(body.model_dump(), "")
        if bad is not None:  # 422, like the lone surrogates pydantic refuses in some fields
            raise ApiError(422, f"{bad}: {_TEXT}", param=bad, code="invalid_text")
        served = served_or_404(body.model)
        params: dict[str, Any] = {"prompt": body.prompt}
        if len(body.prompt) > settings.max_prompt_chars:
            raise ApiError(
                400, f"prompt over {settings.max_prompt_chars} characters", param="prompt"
            )
        if body.n > settings.max_images:
            raise ApiError(400, f"n must be at most {settings.max_images}", param="n")
        if body.size:
            try:
                width, height = (int(v) for v in body.size.lower().split("x"))
            except ValueError:
                raise ApiError(
                    400, f"size {body.size!r} is not WIDTHxHEIGHT", param="size"
                ) from None
            params.update(width=width, height=height)
        if body.n > 1:
            params["batch_size"] = body.n
        for name, value in (
            ("seed", body.seed),
            ("negative", body.negative_prompt),
            ("steps", body.steps),
        ):
            if value is not None:
                params[name] = value
        names = {p.name for p in served.workflow.params}
        params = {k: v for k, v in params.items() if k in names}
        try:
            job = await create_job(key, body.model, params, None, None, where="")
        except ApiError as exc:
            if exc.status == 422:  # OpenAI's clients expect 400, and its parameter names
                param = _OPENAI_PARAM.get(exc.param or "", exc.param)
                raise ApiError(400, exc.message, param=param, code=exc.code) from None
            raise
        job = await wait_for_caller(job, request)
        if job.state != "succeeded":
            error = public_error(job.error) or {}
            raise ApiError(
                500,
                f"generation {job.state}: {error.get('message')}",
                type="server_error",
                code=error.get("type"),
            )
        data = []
        for file_id in job.outputs:
            record = await asyncio.to_thread(store.get_file, file_id)
            if body.response_format == "b64_json":
                raw = await asyncio.to_thread(_read, settings, record.path)
                data.append(
                    {"b64_json": base64.b64encode(raw).decode(), "revised_prompt": body.prompt}
                )
            else:
                query = sign_url(store.secret(), file_id, settings.url_ttl)
                url = f"{str(request.base_url).rstrip('/')}/v1/files/{file_id}?{query}"
                data.append({"url": url, "revised_prompt": body.prompt})
        return {"created": int(job.created_at), "data": data}

    # -- jobs ------------------------------------------------------------------------------

    @app.post("/v1/jobs", status_code=202, tags=["jobs"])
    async def post_job(
        body: JobRequest,
        request: Request,
        key: KeyRecord = Depends(auth),
        idempotency_key: str | None = Header(None, max_length=200),
    ) -> dict[str, Any]:
        job = await create_job(key, body.workflow, body.params, body.webhook, idempotency_key)
        return job_json(job, request)

    for served in registry:
        _typed_route(app, served, auth, create_job, job_json)

    @app.get("/v1/jobs/{job_id}", tags=["jobs"])
    async def get_job(
        job_id: str, request: Request, key: KeyRecord = Depends(auth)
    ) -> dict[str, Any]:
        return job_json(await own_job(job_id, key), request)

    @app.delete("/v1/jobs/{job_id}", tags=["jobs"])
    async def delete_job(
        job_id: str, request: Request, key: KeyRecord = Depends(auth)
    ) -> dict[str, Any]:
        job = await own_job(job_id, key)
        if job.state not in _FINAL:
            await cancel_job(job.id)
            for _ in range(200):  # up to 10 s for its worker to end it
                if job.state in _FINAL:
                    break
                await asyncio.sleep(0.05)
                job = await asyncio.to_thread(store.get_job, job.id)
        job = await asyncio.to_thread(store.get_job, job.id)
        return job_json(job, request)

    @app.get(
        "/v1/jobs/{job_id}/events",
        tags=["jobs"],
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}}},
    )
    async def job_events(
        job_id: str, request: Request, key: KeyRecord = Depends(auth)
    ) -> StreamingResponse:
        job = await own_job(job_id, key)

        async def stream() -> AsyncIterator[str]:
            last: tuple[Any, ...] = ()
            current = job
            while True:
                position = None
                if current.state == "queued":  # this job's place: queued jobs ahead of it
                    position = await asyncio.to_thread(store.queue_position, current.id)
                now = (current.state, current.progress, position)
                if now != last:
                    last = now
                    data = job_json(current, request)
                    if position is not None:
                        data["position"] = position
                    kind = "progress" if current.state == "running" else current.state
                    yield f"event: {kind}\ndata: {json.dumps(data)}\n\n"
                if current.state in _FINAL or await request.is_disconnected():
                    return
                await asyncio.sleep(0.1)
                current = await asyncio.to_thread(store.get_job, job.id)

        return StreamingResponse(
            stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )

    # -- files -----------------------------------------------------------------------------

    @app.get(
        "/v1/files/{file_id}",
        tags=["files"],
        response_class=Response,
        responses={200: {"content": {"image/png": {}}}, 304: {"description": "Unchanged"}},
    )
    async def get_file(
        file_id: str,
        request: Request,
        exp: str | None = None,
        sig: str | None = None,
        authorization: str | None = Header(None),
    ) -> Response:
        record = await asyncio.to_thread(store.get_file, file_id)
        signed = (
            exp is not None and sig is not None and verify_url(store.secret(), file_id, exp, sig)
        )
        if not signed:
            key = await auth(request, authorization)
            job = record and await asyncio.to_thread(store.get_job, record.job_id, key.id)
            if job is None:
                raise ApiError(404, f"no file {file_id!r}", code="file_not_found")
        if record is None:
            raise ApiError(404, f"no file {file_id!r}", code="file_not_found")
        path = storage_path(settings, record.path)
        if path is None or not path.exists():
            raise ApiError(404, f"no file {file_id!r}", code="file_not_found")
        etag = f'"{record.etag}"'
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers={"ETag": etag})
        return FileResponse(
            path,
            media_type=record.content_type,
            headers={"ETag": etag, "Cache-Control": "private, max-age=3600"},
        )

    app.state.store, app.state.registry, app.state.settings = store, registry, settings
    app.state.runtime = state
    return app


def _read(settings: GatewaySettings, path: str) -> bytes:
    safe = storage_path(settings, path)
    if safe is None:
        raise ApiError(404, "file missing")
    return safe.read_bytes()


def _typed_route(app: FastAPI, served: Served, auth: Any, create_job: Any, job_json: Any) -> None:
    """``POST /v1/workflows/{name}/jobs`` with the workflow's own typed parameters."""
    model = served.model

    async def endpoint(
        body: model,
        request: Request,  # type: ignore[valid-type]
        key: KeyRecord = Depends(auth),
        idempotency_key: str | None = Header(None, max_length=200),
        webhook: str | None = Header(None, alias="X-Webhook-Url", pattern=r"^https?://\S+$"),
    ) -> dict[str, Any]:
        params = body.model_dump(exclude_unset=True, exclude_none=True)
        job = await create_job(key, served.name, params, webhook, idempotency_key, where="")
        return job_json(job, request)

    app.post(
        f"/v1/workflows/{served.name}/jobs",
        status_code=202,
        tags=["workflows"],
        summary=f"Run {served.name}",
        name=f"run_{served.name}",
    )(endpoint)
