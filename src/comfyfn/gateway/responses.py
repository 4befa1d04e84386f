"""Response bodies of the gateway's JSON routes, as the OpenAPI document shows them (the
request bodies are in :mod:`comfyfn.gateway.requests`, the error shape in
:mod:`comfyfn.gateway.errors`).

A field that a body leaves out when it has no value (rather than sending ``null``) is
declared with :func:`_left_out_if_none`: the document shows it as optional, never null."""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema

__all__ = [
    "Alive",
    "Base64Image",
    "Delivery",
    "ImagesResponse",
    "JobError",
    "JobObject",
    "JobOutput",
    "JobPage",
    "JobState",
    "JobStreamEvent",
    "ModelList",
    "Ready",
    "RecipeItem",
    "RecipeList",
    "RecipeOutline",
    "RecipeOutput",
    "RecipeRunResponse",
    "ServedModel",
    "TopicJobs",
    "UploadInfo",
    "UrlImage",
    "WorkflowInfo",
    "WorkflowList",
]

#: a job's states (:data:`comfyfn.jobs.schema.STATES`)
JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]


def _is_none(value: object) -> bool:
    return value is None


def _left_out_if_none() -> Any:
    """A field the body leaves out (not ``null``) when it has no value."""
    return Field(default=None, exclude_if=_is_none)


# -- health -----------------------------------------------------------------------------------


class Alive(BaseModel):
    """``GET /healthz``: the process answers."""

    status: Literal["ok"] = "ok"


class Ready(BaseModel):
    """``GET /readyz``: this replica can take jobs."""

    status: Literal["ready"] = "ready"


# -- OpenAI's routes --------------------------------------------------------------------------


class ServedModel(BaseModel):
    """A served workflow, as OpenAI lists a model."""

    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "comfyfn"


class ModelList(BaseModel):
    """``GET /v1/models``."""

    object: Literal["list"] = "list"
    data: list[ServedModel]


class UrlImage(BaseModel):
    """An image as a signed, time-limited URL (``response_format=url``)."""

    url: str
    revised_prompt: str


class Base64Image(BaseModel):
    """An image's bytes as base64 (``response_format=b64_json``)."""

    b64_json: str
    revised_prompt: str


class ImagesResponse(BaseModel):
    """``POST /v1/images/generations`` and ``/v1/images/edits``."""

    created: int = Field(description="when the (first) job was created, epoch seconds")
    data: list[UrlImage | Base64Image]


# -- jobs -------------------------------------------------------------------------------------


class JobOutput(BaseModel):
    """A stored output of a job: ``GET`` its signed ``url`` for the bytes."""

    id: str
    url: str
    content_type: str | SkipJsonSchema[None] = _left_out_if_none()
    size: int | SkipJsonSchema[None] = _left_out_if_none()


class JobError(BaseModel):
    """Why a job failed, as an API caller may read it (:func:`~.errors.public_error`);
    the node's fields only for a failure in a node."""

    type: str
    message: str
    node_id: str | SkipJsonSchema[None] = _left_out_if_none()
    class_type: str | SkipJsonSchema[None] = _left_out_if_none()
    exception_type: str | SkipJsonSchema[None] = _left_out_if_none()


class JobObject(BaseModel):
    """A job: ``POST``/``GET``/``DELETE /v1/jobs``, ``POST /v1/workflows/{name}/jobs``."""

    id: str
    object: Literal["job"] = "job"
    workflow: str
    state: JobState
    progress: float = Field(description="0 to 1")
    params: dict[str, Any]
    priority: int
    created_at: float
    started_at: float | None
    finished_at: float | None
    outputs: list[JobOutput]
    error: JobError | None


class JobStreamEvent(BaseModel):
    """One server-sent event of ``GET /v1/jobs/{job_id}/events``. Its ``data`` is JSON: the
    job as ``GET`` shows it (a ``queued`` one with its ``position`` too), a ``preview``
    (``job_id``, ``step``, ``content_type``, the image's base64 ``data``) or, ending the
    stream, an ``error`` body (the database became unavailable: reconnect after ``retry``)."""

    event: Literal["queued", "progress", "succeeded", "failed", "cancelled", "preview", "error"]
    data: str = Field(json_schema_extra={"contentMediaType": "application/json"})
    id: str | SkipJsonSchema[None] = None
    retry: int | SkipJsonSchema[None] = Field(default=None, description="milliseconds")


class JobPage(BaseModel):
    """A page of a key's jobs, newest first; ``next``: the ``before`` of the next page."""

    object: Literal["list"] = "list"
    data: list[JobObject]
    next: float | None


# -- uploads ----------------------------------------------------------------------------------


class UploadInfo(BaseModel):
    """``POST /v1/uploads``: a stored input image; its ``id`` is an input of later jobs."""

    id: str
    object: Literal["upload"] = "upload"
    bytes: int
    width: int
    height: int
    media_type: str


# -- the web app's own routes (not in the OpenAPI document) ------------------------------------


class WorkflowInfo(BaseModel):
    """A served workflow's typed parameters: the JSON Schema of its route's body."""

    model_config = ConfigDict(populate_by_name=True)

    name: str
    images: list[str]
    json_schema: dict[str, Any] = Field(alias="schema")


class WorkflowList(BaseModel):
    object: Literal["list"] = "list"
    data: list[WorkflowInfo]


class RecipeOutput(BaseModel):
    name: str
    deliver: list[int]
    generate: list[int]
    count: int


class RecipeOutline(BaseModel):
    name: str
    description: str
    workflow: str
    images_per_topic: int
    outputs: list[RecipeOutput]


class RecipeList(BaseModel):
    object: Literal["list"] = "list"
    data: list[RecipeOutline]
    max_pixels: int


class Delivery(BaseModel):
    """The size an image is delivered at and how it is fitted (``background``: contain)."""

    width: int
    height: int
    fit: str
    background: list[int] | SkipJsonSchema[None] = _left_out_if_none()


class RecipeItem(BaseModel):
    output: str
    name: str
    deliver: Delivery
    job: JobObject


class TopicJobs(BaseModel):
    topic: str
    items: list[RecipeItem]


class RecipeRunResponse(BaseModel):
    """A recipe run: its jobs grouped by topic, and notes on what was changed."""

    recipe: str
    groups: list[TopicJobs]
    notes: list[str]
