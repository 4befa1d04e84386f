"""The gateway's typed responses: every route's 2xx answer has a schema in the OpenAPI
document (a pydantic model for JSON; a documented media type for streams and files), every
error is documented in the gateway's error shape, and the models give exactly the JSON the
service layer makes (fields left out stay left out, nulls stay null)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any, get_args

import pytest
from fastapi import FastAPI

from comfyfn.gateway import create_app
from comfyfn.gateway.responses import ImagesResponse, JobState
from comfyfn.gateway.service import job_view
from comfyfn.jobs.schema import STATES, FileRecord, JobRecord
from tests.support.gateway_proc import settings_for

#: what a route may answer that is neither JSON nor an event stream: files and metrics,
#: documented as text or bytes
_NOT_JSON = {
    "text/plain",
    "image/png",
    "image/*",
    "video/*",
    "audio/*",
    "application/octet-stream",
}
_ERROR_BODY = "#/components/schemas/ErrorBody"


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    root = tmp_path_factory.mktemp("responses")
    return create_app(settings_for(root, ["http://127.0.0.1:9"]))  # no lifespan: no worker


@pytest.fixture(scope="module")
def openapi(app: FastAPI) -> dict[str, Any]:
    return app.openapi()


def _operations(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            yield f"{method.upper()} {path}", operation


def _component(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any] | None:
    """The component a response schema refers to; None for an inline schema."""
    ref = schema.get("$ref", "")
    if not ref.startswith("#/components/schemas/"):
        return None
    return doc["components"]["schemas"][ref.rsplit("/", 1)[-1]]


def _untyped_2xx(doc: dict[str, Any], operation: dict[str, Any]) -> list[str]:
    """What is wrong with an operation's success responses (none: nothing)."""
    found = {s: r for s, r in operation["responses"].items() if s.startswith("2")}
    if not found:
        return ["no 2xx response"]
    problems = []
    for status, response in found.items():
        content = response.get("content") or {}
        if not content and status != "204":  # (204 is "No Content" by definition)
            problems.append(f"{status}: no content")
        for kind, media in content.items():
            schema = media.get("schema") or {}
            if kind == "application/json":
                component = _component(doc, schema)
                if component is None or component.get("type") != "object":
                    problems.append(f"{status} {kind}: not a model ({schema})")
                elif not component.get("properties"):
                    problems.append(f"{status} {kind}: a model without fields ({schema})")
            elif kind == "text/event-stream":  # OpenAPI 3.1: the schema is each event's
                if not schema.get("properties", {}).get("data"):
                    problems.append(f"{status} {kind}: events without data ({schema})")
            elif kind not in _NOT_JSON or schema.get("type") != "string":
                problems.append(f"{status} {kind}: an undocumented body ({schema})")
    return problems


def test_every_route_documents_a_typed_success_response(openapi: dict[str, Any]) -> None:
    problems = {
        name: found
        for name, operation in _operations(openapi)
        if (found := _untyped_2xx(openapi, operation))
    }
    assert not problems, problems


def test_the_json_routes_answer_with_their_models(openapi: dict[str, Any]) -> None:
    answers = {}
    for name, operation in _operations(openapi):
        for status, response in operation["responses"].items():
            schema = (response.get("content") or {}).get("application/json", {}).get("schema")
            if status.startswith("2") and schema is not None:
                answers[name] = (status, schema["$ref"].rsplit("/", 1)[-1])
    assert answers == {
        "GET /healthz": ("200", "Alive"),
        "GET /readyz": ("200", "Ready"),
        "GET /v1/models": ("200", "ModelList"),
        "POST /v1/images/generations": ("200", "ImagesResponse"),
        "POST /v1/images/edits": ("200", "ImagesResponse"),
        "POST /v1/jobs": ("202", "JobObject"),
        "GET /v1/jobs/{job_id}": ("200", "JobObject"),
        "DELETE /v1/jobs/{job_id}": ("200", "JobObject"),
        "POST /v1/workflows/zimage-turbo/jobs": ("202", "JobObject"),
        "POST /v1/workflows/zimage-edit/jobs": ("202", "JobObject"),
        "POST /v1/uploads": ("201", "UploadInfo"),
    }


def test_every_error_a_route_documents_has_the_error_shape(openapi: dict[str, Any]) -> None:
    wrong = {}
    for name, operation in _operations(openapi):
        errors = {s: r for s, r in operation["responses"].items() if s[0] in "45"}
        assert {"401", "404", "422", "429", "500", "503"} <= set(errors), name
        for status, response in errors.items():
            schema = response["content"]["application/json"]["schema"]
            if schema.get("$ref") != _ERROR_BODY:
                wrong[f"{name} {status}"] = schema
    assert not wrong, wrong


def test_the_job_states_are_the_stores() -> None:
    assert get_args(JobState) == STATES


def _job(**changes: Any) -> JobRecord:
    job = JobRecord(
        id="job_1",
        key_id="key_1",
        workflow="zimage-turbo",
        params={"prompt": "a fox", "seed": 7, "image": {"upload": "upl_" + "0" * 64}},
        state="succeeded",
        server=None,
        prompt_id=None,
        progress=1.0,
        error=None,
        outputs=["fil_known", "fil_unknown"],
        webhook=None,
        idempotency_key=None,
        created_at=1700000000.5,
        updated_at=1700000009.0,
        started_at=1700000001.0,
        finished_at=1700000009.0,
        claimed_by=None,
        heartbeat_at=None,
        cancel_requested=False,
        priority=3,
    )
    return dataclasses.replace(job, **changes)


@pytest.mark.parametrize(
    "changes",
    [
        {},  # an output whose record is known here (type, size) and one whose is not
        {"state": "queued", "progress": 0.0, "started_at": None, "finished_at": None},
        {"state": "failed", "outputs": [], "error": {"type": "Timeout", "message": "slow"}},
        {
            "state": "failed",
            "outputs": [],
            "error": {
                "type": "NodeError",
                "message": "bad /srv/comfy/x.png",
                "node_id": 9,
                "class_type": "LoadImage",
                "exception_type": "FileNotFoundError",
                "traceback": "Traceback (most recent call last): …",
            },
        },
    ],
)
def test_a_job_answers_exactly_what_a_caller_may_see(app: FastAPI, changes: dict) -> None:
    """A field the gateway does not know stays out (an unknown output's type and size, a
    failure's node), a null stays null, nothing internal (a traceback) is added."""
    runtime = app.state.runtime
    runtime.files.remember(
        [FileRecord("fil_known", "job_1", "job_1/0.png", "image/png", 1234, "e1", 1.0)]
    )
    job = _job(**changes)
    shown = job_view(runtime, job, "http://gw").model_dump(mode="json")
    urls = [output.pop("url") for output in shown["outputs"]]
    assert all(
        u.startswith(f"http://gw/v1/files/{f}?") for u, f in zip(urls, job.outputs, strict=True)
    )
    known = {"fil_known": {"content_type": "image/png", "size": 1234}}
    error = None
    if job.error is not None:
        message = job.error["message"].replace("/srv/comfy/x.png", "<path>")  # no server path
        error = {"type": job.error["type"], "message": message}
        error |= {k: str(v) for k, v in job.error.items() if k in ("node_id", "class_type")}
        error |= {k: v for k, v in job.error.items() if k == "exception_type"}
    assert shown == {
        "id": job.id,
        "object": "job",
        "workflow": job.workflow,
        "state": job.state,
        "progress": job.progress,
        "params": job.params,
        "priority": job.priority,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "outputs": [{"id": f, **known.get(f, {})} for f in job.outputs],
        "error": error,
    }


def test_an_images_answer_keeps_each_images_one_form() -> None:
    body = {
        "created": 1700000000,
        "data": [
            {"url": "http://gw/v1/files/f?exp=1&sig=s", "revised_prompt": "p"},
            {"b64_json": "iVBORw0K", "revised_prompt": "p"},
        ],
    }
    assert ImagesResponse.model_validate(body).model_dump(mode="json") == body
