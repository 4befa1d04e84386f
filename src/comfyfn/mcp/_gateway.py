"""The gateway's MCP endpoint (``/mcp``, streamable HTTP, stateless: any replica answers
any request): the tools run as gateway jobs through its job API
(:mod:`comfyfn.gateway.service`), so keys, cost limits, rate limits, the job store, the
outputs' signed URLs and the input images' checks (uploads, the URL fetcher's SSRF guard)
are the HTTP API's own.

Every HTTP request needs a live API key (``Authorization: Bearer``; 401 otherwise, in the
API's error shape); every tool call counts against the key's rate, and a batch counts one
request per job."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import anyio
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.routing import Route

from comfyfn.gateway.dependencies import rate_limit
from comfyfn.gateway.errors import ApiError, error_response, public_error
from comfyfn.gateway.metrics import KEY_ID
from comfyfn.gateway.registry import Served
from comfyfn.gateway.routes.uploads import image_params
from comfyfn.gateway.runtime import Runtime
from comfyfn.gateway.service import (
    cancel_job,
    create_job,
    file_url,
    follow,
    output_records,
    own_job,
    read_output,
    wait_cancelled,
)
from comfyfn.jobs.bus import JobUpdate
from comfyfn.jobs.schema import TERMINAL, JobRecord, KeyRecord
from comfyfn.mcp._backend import JobOutcome, OutputFile, Progress, ToolError
from comfyfn.mcp._server import build_server

__all__ = ["MCP_PATH", "GatewayBackend", "mcp_endpoint"]

MCP_PATH = "/mcp"
_KEY = "comfyfn_mcp_key"  #: where the request's authenticated key is kept (request.state)
_EXTENSIONS = {
    "image/png": ".png",
    "image/apng": ".png",
    "image/jpeg": ".jpg",
    "image/webp": ".webp",
}


@dataclass(frozen=True)
class _Caller:
    key: KeyRecord
    base_url: str  #: the gateway's URL as the caller reached it (for signed file URLs)


class GatewayBackend:
    image_description = (
        "input image: an upload id (upl_…, from POST /v1/uploads), an http(s) URL, or base64 "
        "image data (a data: URL too)"
    )

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.registry = runtime.registry

    async def caller(self, request: Any) -> _Caller:
        key = getattr(request.state, _KEY, None) if isinstance(request, Request) else None
        if not isinstance(key, KeyRecord):  # the endpoint lets no request in without one
            raise ToolError("missing or invalid API key")
        base = str(request.base_url).rstrip("/")
        return _Caller(rate_limit(self.runtime.limiter, key), base)

    async def run(
        self, caller: _Caller, served: Served, values: dict[str, Any], progress: Progress
    ) -> JobOutcome:
        job = await self._create(caller, served, values)
        return await self._follow(caller, job, progress)

    async def run_rows(
        self, caller: _Caller, served: Served, rows: list[dict[str, Any]], progress: Progress
    ) -> list[JobOutcome]:
        jobs: list[JobRecord] = []
        try:
            for i, row in enumerate(rows):
                if i:  # the call counted the first
                    rate_limit(self.runtime.limiter, caller.key)
                values = {k: v for k, v in row.items() if not k.startswith("_")}
                try:
                    jobs.append(await self._create(caller, served, values))
                except ApiError as exc:
                    param = f"rows[{i}].{exc.param}" if exc.param else f"rows[{i}]"
                    raise ToolError(f"rows[{i}].{exc.message}", param=param) from None
        except BaseException:  # nothing half-made: the jobs already queued are cancelled
            for job in jobs:
                self.runtime.in_background(cancel_job(self.runtime, job.id))
            raise
        done = [0.0] * len(jobs)

        def each(i: int) -> Progress:
            async def report(value: float, _total: float | None, message: str | None) -> None:
                done[i] = value
                await progress(sum(done), len(jobs), message)

            return report

        followed = [self._follow(caller, job, each(i)) for i, job in enumerate(jobs)]
        outcomes = await asyncio.gather(*followed)
        labels = [{k[1:]: v for k, v in r.items() if k in ("_name", "_topic")} for r in rows]
        return [
            JobOutcome(**{**vars(o), "row": label})
            for o, label in zip(outcomes, labels, strict=True)
        ]

    async def get_job(self, caller: _Caller, job_id: str) -> JobOutcome:
        return await self._outcome(caller, await self._own(caller, job_id))

    async def cancel_job(self, caller: _Caller, job_id: str) -> JobOutcome:
        job = await self._own(caller, job_id)
        if job.state not in TERMINAL:
            job = await wait_cancelled(self.runtime, job)
        return await self._outcome(caller, job)

    # -- jobs ----------------------------------------------------------------------------

    async def _own(self, caller: _Caller, job_id: str) -> JobRecord:
        try:
            return await own_job(self.runtime, job_id, caller.key)
        except ApiError as exc:
            raise ToolError(exc.message, param="job_id") from None

    async def _create(self, caller: _Caller, served: Served, values: dict[str, Any]) -> JobRecord:
        """The job, checked and queued as the typed HTTP route does it (images stored as
        uploads of the key first)."""
        images = {name: values.pop(name) for name in served.images if name in values}
        if images:
            values = await image_params(self.runtime, caller.key, served, values, images)
        return await create_job(self.runtime, caller.key, served.name, values, None, None, where="")

    async def _follow(self, caller: _Caller, job: JobRecord, progress: Progress) -> JobOutcome:
        """Follow the job to its end, reporting its progress; cancelled (the agent cancelled
        the request, or left), the job is cancelled."""
        try:
            async for current, position, _ in follow(self.runtime, job):
                job = current
                if current.state == "queued":
                    await progress(0.0, 1.0, f"queued (position {position})")
                elif current.state == "running":
                    await progress(current.progress, 1.0, "running")
        except anyio.get_cancelled_exc_class():
            self.runtime.in_background(cancel_job(self.runtime, job.id))
            raise
        return await self._outcome(caller, job)

    async def _outcome(self, caller: _Caller, job: JobRecord) -> JobOutcome:
        outputs: list[OutputFile] = []
        if job.state == "succeeded":
            for record in await output_records(self.runtime, JobUpdate(job)):
                data = await read_output(self.runtime, record)
                outputs.append(
                    OutputFile(
                        name=record.id + _EXTENSIONS.get(record.content_type, ""),
                        uri=file_url(self.runtime, caller.base_url, record.id),
                        content_type=record.content_type,
                        data=data,
                    )
                )
        error = public_error(job.error)
        return JobOutcome(
            job_id=job.id,
            workflow=job.workflow,
            state=job.state,
            params={k: v for k, v in job.params.items()},
            outputs=outputs,
            error=error["message"] if error else None,
        )


class _Authenticated:
    """The endpoint behind the API key check: 401 (the API's error) without a live key."""

    def __init__(self, app: Any, runtime: Runtime) -> None:
        self.app, self.runtime = app, runtime

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        headers = dict(scope.get("headers") or ())
        secret = headers.get(b"authorization", b"").decode("latin-1")
        secret = secret.removeprefix("Bearer ").strip()
        try:
            key = await asyncio.to_thread(self.runtime.store.find_key, secret) if secret else None
        except SQLAlchemyError:
            refusal = error_response(
                503,
                "the job database is unavailable; try again shortly",
                "server_error",
                code="database_unavailable",
                headers={"Retry-After": "2"},
            )
            return await refusal(scope, receive, send)
        if key is None:
            refusal = error_response(
                401,
                "missing or invalid API key",
                "authentication_error",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )
            return await refusal(scope, receive, send)
        state = scope.setdefault("state", {})
        state[KEY_ID], state[_KEY] = key.id, key
        await self.app(scope, receive, send)


def mcp_endpoint(runtime: Runtime) -> tuple[Route, StreamableHTTPSessionManager]:
    """The ``/mcp`` route, and the session manager to run while the application runs
    (``async with manager.run()``)."""
    manager = StreamableHTTPSessionManager(
        app=build_server(GatewayBackend(runtime)), stateless=True
    )
    endpoint = _Authenticated(manager.handle_request, runtime)
    return Route(MCP_PATH, endpoint=endpoint, methods=["GET", "POST", "DELETE"]), manager
