"""The HTTP gateway: an OpenAI-compatible images API and async jobs in front of ComfyUI.

Every route but ``/healthz`` and ``/readyz`` needs an API key (``Authorization: Bearer``);
errors use OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``.
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
from fastapi.exceptions import RequestValidationError
from fastapi.responses import (
    FileResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
    StreamingResponse,
)
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from comfyfn.gateway.errors import ERROR_RESPONSES, ApiError, BodyLimit, error_response
from comfyfn.gateway.metrics import Metrics
from comfyfn.gateway.models import ImagesRequest, JobRequest
from comfyfn.gateway.registry import Registry, Served
from comfyfn.gateway.security import RateLimiter, sign_url, verify_url, webhook_target_error
from comfyfn.gateway.settings import GatewaySettings
from comfyfn.gateway.store import JobRecord, KeyRecord, Store
from comfyfn.gateway.worker import Worker, storage_path

__all__ = ["ApiError", "create_app"]

_FINAL = ("succeeded", "failed", "cancelled")


def create_app(settings: GatewaySettings, *, store: Store | None = None) -> FastAPI:
    """The gateway application; the worker starts and stops with it."""
    store = store or Store(settings.db_url)
    metrics = Metrics()
    registry = Registry()
    limiter = RateLimiter()
    state: dict[str, Any] = {}

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
    _load_workflows(settings, registry)
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["*"],
            allow_headers=["*"],
        )
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)

    @app.middleware("http")
    async def count(request: Request, call_next: Any) -> Response:
        response = await call_next(request)
        route = request.scope.get("route")
        metrics.requests.labels(
            route=getattr(route, "path", "unmatched"),
            method=request.method,
            status=response.status_code,
        ).inc()
        return response

    @app.exception_handler(ApiError)
    async def apierror_response(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.type, exc.param, exc.code, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"] if p != "body")
        messages = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'] if p != 'body')}: {e['msg']}" for e in exc.errors()
        )
        return error_response(422, messages, "invalid_request_error", param or None)

    @app.exception_handler(StarletteHTTPException)
    async def httperror_response(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), "invalid_request_error")

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

    def ready_or_503() -> None:
        worker = state.get("worker")
        if worker is None or not worker.healthy():
            raise ApiError(
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
            "error": job.error,
        }

    async def create_job(
        key: KeyRecord,
        name: str,
        params: dict[str, Any],
        webhook: str | None,
        idempotency_key: str | None,
    ) -> JobRecord:
        served = served_or_404(name)
        try:
            values = served.params(params)
        except ValidationError as exc:
            first = exc.errors()[0]
            param = ".".join(str(p) for p in first["loc"])
            raise ApiError(
                422, f"params.{param}: {first['msg']}", param=f"params.{param}"
            ) from None
        if webhook:
            problem = await asyncio.to_thread(
                webhook_target_error, webhook, allow_private=settings.allow_private_webhooks
            )
            if problem:
                raise ApiError(400, problem, param="webhook")
        ready_or_503()
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

    async def _wait_final(job: JobRecord, done: asyncio.Event, deadline: float) -> JobRecord:
        while job.state not in _FINAL:
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

    # -- health and metrics -----------------------------------------------------------------

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    async def readyz() -> dict[str, Any]:
        ready_or_503()
        worker = state["worker"]
        return {"status": "ready", "servers": {u: s.healthy for u, s in worker.pool.states.items()}}

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
            job = await create_job(key, body.model, params, None, None)
        except ApiError as exc:
            if exc.status == 422:  # e.g. width not a multiple of 16: a bad size in OpenAI terms
                raise ApiError(
                    400,
                    exc.message.removeprefix("params."),
                    param="size"
                    if exc.param and exc.param.split(".")[-1] in ("width", "height")
                    else exc.param,
                ) from None
            raise
        deadline = time.monotonic() + settings.sync_timeout
        done = state["worker"].finished_event(job.id)
        try:
            job = await _wait_final(job, done, deadline)
        finally:
            state["worker"].forget(job.id)
        if job.state != "succeeded":
            raise ApiError(
                500,
                f"generation {job.state}: {(job.error or {}).get('message')}",
                type="server_error",
                code=(job.error or {}).get("type"),
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
        if job.state not in _FINAL and not await asyncio.to_thread(store.cancel_if_queued, job.id):
            # running (or claimed this instant): its worker interrupts it on the server
            await asyncio.to_thread(store.request_cancel, job.id)
            task = state["worker"].running.get(job.id)
            if task is not None:
                task.cancel()
            for _ in range(200):
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
                now = (current.state, current.progress)
                if now != last:
                    last = now
                    data = job_json(current, request)
                    if current.state == "queued":
                        depth = await asyncio.to_thread(store.queue_depth)
                        data["position"] = depth.get("queued", 1) - 1
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
        job = await create_job(key, served.name, params, webhook, idempotency_key)
        return job_json(job, request)

    app.post(
        f"/v1/workflows/{served.name}/jobs",
        status_code=202,
        tags=["workflows"],
        summary=f"Run {served.name}",
        name=f"run_{served.name}",
    )(endpoint)


def _load_workflows(settings: GatewaySettings, registry: Registry) -> None:
    from comfyfn.workflow import Workflow
    from comfyfn.workflows import BUILTIN, builtin

    for name, source in settings.workflows:
        wf = builtin(source) if source in BUILTIN else Workflow.load(source, name=name)
        registry.add(name, wf, max_prompt=settings.max_prompt_chars)
