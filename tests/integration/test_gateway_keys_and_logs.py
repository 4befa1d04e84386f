"""What one API key may ask for and be told, and what the gateway logs of a request.

A key's highest job priority (``comfyfn keys create --max-priority``, 0 by default), a
priority only as a JSON integer, a queue position that counts only the key's own jobs, a
blank prompt and the one step limit refused naming the field, and an access log without
keys, query strings or prompts (also in ``comfyfn serve``'s output, and none of uvicorn's).

An in-process gateway whose only ComfyUI server is unreachable is enough: everything here is
decided before a job runs (a request that passes every check gets 503 ``no_server``).
"""

from __future__ import annotations

import json
import logging

import httpx
import pytest

from comfyfn.jobs.store import Store
from tests.support.cli_proc import run_cli
from tests.support.gateway_proc import Gateway, InProcess, auth, make_key, settings_for
from tests.support.polling import wait_for

NOWHERE = "http://127.0.0.1:9"  # nothing listens: the gateway is up but not ready
TYPED = "/v1/workflows/zimage-turbo/jobs"


@pytest.fixture(scope="module")
def offline(tmp_path_factory):
    with InProcess(settings_for(tmp_path_factory.mktemp("keys"), [NOWHERE])) as gateway:
        yield gateway


def error_of(answer: httpx.Response) -> dict:
    body = answer.json()
    assert set(body) == {"error"}, body
    return body["error"]


def post_job(gateway, secret: str, **body) -> httpx.Response:
    body.setdefault("params", {"prompt": "p"})
    return httpx.post(f"{gateway.url}/v1/jobs", headers=auth(secret), json=body, timeout=30)


def first_event(gateway, secret: str, job_id: str) -> tuple[str, dict]:
    url = f"{gateway.url}/v1/jobs/{job_id}/events"
    kind = None
    with httpx.stream("GET", url, headers=auth(secret), timeout=30) as stream:
        for line in stream.iter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                assert kind is not None, f"data before an event line: {line}"
                return kind, json.loads(line.removeprefix("data: "))
    pytest.fail("the event stream ended without an event")


# -- priority: a key's maximum, JSON integers only ----------------------------------------------


def test_keys_create_records_the_highest_priority_a_key_may_ask_for(tmp_path):
    db = f"sqlite:///{tmp_path / 'g.db'}"
    made = run_cli("keys", "create", "urgent", "--max-priority", "5", "--db", db)
    assert made.returncode == 0, made.stderr
    assert "max priority 5" in made.stderr
    with Store(db) as store:
        record = store.find_key(made.stdout.strip())
        assert record is not None and record.max_priority == 5
    listed = run_cli("keys", "list", "--db", db)
    assert "max priority 5" in listed.stdout
    refused = run_cli("keys", "create", "greedy", "--max-priority", "101", "--db", db)
    assert refused.returncode == 2 and "max priority 101" in refused.stderr
    assert "Traceback" not in refused.stderr
    with Store(db) as store:
        assert [k.name for k in store.list_keys()] == ["urgent"]


def test_a_job_above_its_key_s_highest_priority_is_refused_naming_priority(offline):
    capped = offline.store.create_key("capped", max_priority=5)[0]
    plain = offline.store.create_key("plain")[0]  # the default maximum: 0
    for secret, priority in ((capped, 6), (capped, 100), (plain, 1)):
        answer = post_job(offline, secret, priority=priority)
        assert answer.status_code == 422, answer.text
        error = error_of(answer)
        assert (error["param"], error["code"]) == ("priority", "limit_exceeded")
        assert "maximum" in error["message"]
    for secret, priority in ((capped, 5), (capped, -100), (plain, 0), (plain, -3)):
        answer = post_job(offline, secret, priority=priority)
        assert error_of(answer)["code"] == "no_server", (priority, answer.text)


@pytest.mark.parametrize("priority", [True, False, "5", 5.0, 1.5, None, [1]])
def test_a_priority_that_is_not_a_json_integer_is_refused_naming_it(offline, priority):
    """Refused by its type, not by the key's maximum: this key may ask for any priority."""
    secret = offline.store.create_key(f"any-{priority!r}", max_priority=100)[0]
    answer = post_job(offline, secret, priority=priority)
    assert answer.status_code == 422, answer.text
    assert error_of(answer)["param"] == "priority"


# -- the queue position counts only the key's own jobs ------------------------------------------


def test_the_queue_position_counts_only_the_key_s_own_jobs(offline):
    """Another key's jobs ahead (older, more urgent) are not counted, nor told."""
    ours_secret, theirs_secret = (offline.store.create_key(n)[0] for n in ("ours", "theirs"))
    ours = offline.store.find_key(ours_secret).id
    theirs = offline.store.find_key(theirs_secret).id

    def queued(key_id, priority=0):
        return offline.store.create_job(
            key_id=key_id, workflow="zimage-turbo", params={"prompt": "p"}, priority=priority
        )[0]

    others = [queued(theirs, priority=9) for _ in range(3)]
    mine = [queued(ours), queued(ours)]
    assert [first_event(offline, ours_secret, j.id)[1]["position"] for j in mine] == [0, 1]
    kind, data = first_event(offline, theirs_secret, others[0].id)
    assert (kind, data["position"]) == ("queued", 0)


# -- prompt and steps ---------------------------------------------------------------------------


@pytest.mark.parametrize("blank", [" ", "\n\t  ", "\u3000"])
def test_a_blank_prompt_is_refused_naming_it_on_every_route(offline, blank):
    secret = offline.store.create_key(f"blank-{blank!r}")[0]
    for path, body, status, param in (
        ("/v1/jobs", {"params": {"prompt": blank}}, 422, "params.prompt"),
        (TYPED, {"prompt": blank}, 422, "prompt"),
        ("/v1/images/generations", {"prompt": blank}, 400, "prompt"),  # OpenAI's: all 400
    ):
        answer = httpx.post(f"{offline.url}{path}", headers=auth(secret), json=body, timeout=30)
        assert answer.status_code == status, (path, answer.text)
        assert error_of(answer)["param"] == param, path


@pytest.mark.parametrize("steps", [101, 150, 201, 10_000])
def test_every_route_states_the_one_step_limit_of_the_settings(offline, steps):
    limit = offline.app.state.runtime.settings.max_steps
    secret = offline.store.create_key(f"steps-{steps}")[0]
    for path, body in (
        ("/v1/jobs", {"params": {"prompt": "p", "steps": steps}}),
        (TYPED, {"prompt": "p", "steps": steps}),
        ("/v1/images/generations", {"prompt": "p", "size": "64x64", "steps": steps}),
    ):
        answer = httpx.post(f"{offline.url}{path}", headers=auth(secret), json=body, timeout=30)
        error = error_of(answer)
        assert error["param"].endswith("steps"), (path, error)
        assert f"limit of {limit}" in error["message"], (path, error)


# -- the access log -----------------------------------------------------------------------------


def test_every_request_is_in_the_access_log_without_key_query_or_prompt(offline, caplog):
    secret = offline.store.create_key("logged")[0]
    key_id = offline.store.find_key(secret).id
    caplog.set_level(logging.INFO, logger="comfyfn.gateway.access")
    answer = httpx.post(
        f"{offline.url}/v1/jobs?token=QUERY-SECRET",
        headers=auth(secret),
        json={"params": {"prompt": "PROMPT-SECRET"}},
    )
    assert answer.status_code == 503
    httpx.get(f"{offline.url}/v1/models?api_key=QUERY-SECRET")  # no key: 401

    def lines() -> list[str]:
        """This gateway's two requests (a late line of another test's gateway is not one)."""
        access = [r.getMessage() for r in caplog.records if r.name == "comfyfn.gateway.access"]
        return [line for line in access if line.split(" ")[1] in ("/v1/jobs", "/v1/models")]

    wait_for(lambda: len(lines()) >= 2, 30, "both requests are logged")
    posted, unauthenticated = lines()[:2]
    method, path, status, seconds, who = posted.split(" ")
    assert (method, path, status, who) == ("POST", "/v1/jobs", "503", key_id)
    assert float(seconds) >= 0
    assert unauthenticated.split(" ")[:3] == ["GET", "/v1/models", "401"]
    assert unauthenticated.endswith(" -")
    for line in lines():
        assert "SECRET" not in line and secret[:12] not in line and "?" not in line


def test_serve_logs_each_request_and_uvicorn_logs_no_query_string(tmp_path):
    db = f"sqlite:///{tmp_path / 'gateway.db'}"
    gateway = Gateway([NOWHERE], db, tmp_path / "files", ready="/healthz")
    try:
        secret = make_key(db, "served")
        with Store(db) as store:
            record = store.find_key(secret)
            assert record is not None
            key_id = record.id
        answer = httpx.get(f"{gateway.url}/v1/models?api_key=QUERY-SECRET", headers=auth(secret))
        assert answer.status_code == 200
        logged = "comfyfn.gateway.access: GET /v1/models 200 "
        wait_for(lambda: logged in gateway.log.read_text(), 30, "the request is logged")
    finally:
        gateway.stop()
    log = gateway.log.read_text()
    assert key_id in log.split(logged, 1)[1].splitlines()[0]
    assert "QUERY-SECRET" not in log and secret not in log
