"""Schemathesis against the gateway's own OpenAPI document, on a live gateway."""

from __future__ import annotations

import base64

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import positive_data_acceptance

from tests.support.gateway_proc import Gateway, make_key

# about the gateway's OpenAPI document, not the ComfyUI version: run once, in the 0.33.0 tier
pytestmark = [pytest.mark.engine, pytest.mark.any_version]


@pytest.fixture(scope="module")
def live(server, tmp_path_factory):
    root = tmp_path_factory.mktemp("schema")
    db = f"sqlite:///{root / 'g.db'}"
    gateway = Gateway([server], db, root / "files")
    gateway.key = make_key(db, "schema", rate="100000/min")
    yield gateway
    gateway.stop()


def _few_steps(values: dict) -> None:
    steps = values.get("steps")
    values["steps"] = max(1, min(steps, 3)) if isinstance(steps, int) else 2


def _small(values: dict) -> None:
    """Keep a generated job tiny so the CPU engine runs it in moments: 64 px, at most 3
    steps, one image, whatever was generated or left to the workflow's defaults."""
    values.update(width=64, height=64, batch_size=1)
    _few_steps(values)


def test_api_conforms_to_its_schema(live):
    """Every operation, with generated requests, answers within its documented responses."""
    schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]  # an Err (a schema error) fails the test here
    assert len(operations) >= 9
    failures = []
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=8,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
            phases=[Phase.explicit, Phase.generate],  # no shrinking: each call is a live one
        )
        def check(case):
            shrink(case)
            # Business rules the schema cannot say (an unresolvable webhook host, a model
            # file the server lacks) rightly refuse some schema-valid requests with a 4xx.
            case.call_and_validate(
                headers={"Authorization": f"Bearer {live.key}"},
                excluded_checks=[positive_data_acceptance],
            )

        try:
            check()
        except Exception as exc:  # collect every operation's failure, then report them all
            failures.append(f"{operation.label}: {_described(exc)}")
    assert not failures, "\n\n".join(failures)


def _described(exc: BaseException) -> str:
    """The failure and, of a group (several failures of one operation), each of its own."""
    if isinstance(exc, BaseExceptionGroup):
        return "\n".join(_described(sub) for sub in exc.exceptions)
    return str(exc)


def shrink(case):
    if case.method != "POST" or not isinstance(case.body, dict):
        return
    if case.path == "/v1/images/generations":
        case.body.update(size="64x64", n=1)
        _few_steps(case.body)
    elif case.path == "/v1/jobs":
        params = case.body.setdefault("params", {})  # none given: the workflow's defaults
        if isinstance(params, dict):
            _small(params)
    elif case.path.startswith("/v1/workflows/"):
        _small(case.body)


def test_each_typed_answer_is_checked_against_the_schema(live):
    """One request of each kind that succeeds, its answer put through every default check
    (the response schema's among them): each 2xx body is what the document says — a job
    queued, streamed to its end, finished (its outputs' types and sizes), a stored file,
    images as URLs and as base64, a workflow route's job, an upload."""
    schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
    small = {"prompt": "a red fox", "width": 64, "height": 64, "steps": 2, "batch_size": 1}

    def call(label, **parts):
        operation = schema.find_operation_by_label(label)
        assert operation is not None, label
        checks = schema.config.checks_config_for(operation=operation, phase=None)
        assert checks.response_schema_conformance.enabled, label
        response = operation.Case(**parts).call_and_validate(
            headers={"Authorization": f"Bearer {live.key}"},
            timeout=300,  # schemathesis stops reading an event stream after 10 s by default
        )
        assert 200 <= response.status_code < 300, (label, response.status_code, response.text)
        return response

    for label in ("GET /healthz", "GET /readyz", "GET /v1/models"):
        call(label)
    job = call("POST /v1/jobs", body={"workflow": "zimage-turbo", "params": small}).json()
    ids = {"job_id": job["id"]}
    events = call("GET /v1/jobs/{job_id}/events", path_parameters=ids)  # ends with the job
    done = call("GET /v1/jobs/{job_id}", path_parameters=ids).json()
    assert done["state"] == "succeeded" and done["outputs"], (done, events.text[-3000:])
    assert {"content_type", "size"} <= set(done["outputs"][0]), done
    deleted = call("DELETE /v1/jobs/{job_id}", path_parameters=ids).json()

    def unsigned(job: dict) -> dict:  # each answer signs its URLs anew (their expiry differs)
        outputs = [{**o, "url": o["url"].split("?")[0]} for o in job["outputs"]]
        return {**job, "outputs": outputs}

    assert unsigned(deleted) == unsigned(done)  # a finished job: DELETE changes nothing
    file_id, query = done["outputs"][0]["url"].split("/v1/files/")[1].split("?")
    signed = dict(part.split("=", 1) for part in query.split("&"))
    png = call("GET /v1/files/{file_id}", path_parameters={"file_id": file_id}, query=signed)
    for response_format in ("url", "b64_json"):
        body = {"prompt": "a red fox", "size": "64x64", "steps": 2}
        call("POST /v1/images/generations", body={**body, "response_format": response_format})
    call("POST /v1/workflows/zimage-turbo/jobs", body=small)
    b64 = base64.b64encode(png.content).decode()
    upload = call("POST /v1/uploads", body={"b64_json": b64}, media_type="application/json")
    assert upload.json()["width"] == 64
