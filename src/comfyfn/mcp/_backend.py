"""What the tools ask of where jobs run: the :class:`Backend` protocol both transports
implement (the gateway's job API, :mod:`comfyfn.mcp._gateway`; comfyfn's own batch runner
on the fleet, :mod:`comfyfn.mcp._local`), and the values that cross it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import ValidationError

from comfyfn.errors import ComfyError
from comfyfn.gateway.errors import ApiError
from comfyfn.gateway.registry import Registry, Served
from comfyfn.gateway.routes.uploads import validation_error

__all__ = [
    "Backend",
    "JobOutcome",
    "OutputFile",
    "Progress",
    "ToolError",
    "validated",
]

#: progress so far, the total (None: unknown) and a message
Progress = Callable[[float, float | None, str | None], Awaitable[None]]


class ToolError(ComfyError):
    """A refusal or failure the agent sees as the tool's error: one sentence, naming the
    parameter where one is at fault (the same sentences as the HTTP API's)."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param

    @classmethod
    def of(cls, exc: ApiError) -> ToolError:
        """The HTTP API's refusal, as the tool's."""
        return cls(exc.message, param=exc.param)


@dataclass(frozen=True)
class OutputFile:
    """One output image of a job: where the agent can fetch it, and its bytes (for the
    preview)."""

    name: str
    uri: str  #: a signed URL (gateway) or a file:// URI (stdio)
    content_type: str
    data: bytes = field(repr=False)


@dataclass(frozen=True)
class JobOutcome:
    """A job once it has ended (or as it is now, for ``get_job``)."""

    job_id: str
    workflow: str
    state: str  #: queued, running, succeeded, failed, cancelled
    params: Mapping[str, Any]
    outputs: Sequence[OutputFile] = ()
    error: str | None = None
    row: Mapping[str, Any] = field(default_factory=dict)  #: a batch row's recipe labels

    def json(self) -> dict[str, Any]:
        """The structured content of this job (no image bytes)."""
        data: dict[str, Any] = {
            "job_id": self.job_id,
            "workflow": self.workflow,
            "state": self.state,
            "seed": self.params.get("seed"),
            "params": dict(self.params),
            "outputs": [
                {"name": o.name, "uri": o.uri, "content_type": o.content_type} for o in self.outputs
            ],
        }
        if self.error is not None:
            data["error"] = self.error
        if self.row:
            data["row"] = dict(self.row)
        return data


class Backend(Protocol):
    """Where the tools' jobs run. ``caller`` is what :meth:`caller` returned for the
    request (the gateway: its API key; stdio: nothing)."""

    registry: Registry
    #: how an input image parameter may be given (the tools' schemas say it)
    image_description: str

    async def caller(self, request: Any) -> Any:
        """Who calls (raises ToolError if they may not: a wrong key, over the rate)."""

    async def run(
        self, caller: Any, served: Served, values: dict[str, Any], progress: Progress
    ) -> JobOutcome:
        """Run one job of ``served`` with validated ``values`` (input images as given) to
        its end; cancelled (the MCP request was), the job is cancelled."""

    async def run_rows(
        self, caller: Any, served: Served, rows: list[dict[str, Any]], progress: Progress
    ) -> list[JobOutcome]:
        """Run one job per row (recipe rows keep their ``_``-keys) to their ends."""

    async def get_job(self, caller: Any, job_id: str) -> JobOutcome:
        """The job as it is now (ToolError if it is not the caller's)."""

    async def cancel_job(self, caller: Any, job_id: str) -> JobOutcome:
        """Cancel the job; the job as it is then."""


def validated(served: Served, arguments: Mapping[str, Any]) -> dict[str, Any]:
    """``arguments`` checked against the workflow's typed request (input images as text);
    the values given. A bad one is a ToolError naming it, as the typed HTTP route says it."""
    try:
        model = served.request_model.model_validate(dict(arguments))
    except ValidationError as exc:
        raise ToolError.of(validation_error(exc, "")) from None
    return model.model_dump(exclude_unset=True, exclude_none=True)
