"""A job's server-sent events from a gateway served in this process (uvicorn on loopback,
its only ComfyUI server unreachable, so nothing runs the stored jobs): sse-starlette's
stream with the gateway's event names, woken by the process's bus when a job changes."""

from __future__ import annotations

import json
import logging
import time

import httpx
import pytest
from sqlalchemy.exc import OperationalError

from comfyfn.gateway import service
from tests.support.gateway_proc import InProcess, auth, settings_for


@pytest.fixture
def offline(tmp_path, monkeypatch):
    # Only the event bus can wake a stream in time: the store is re-read once a minute.
    monkeypatch.setattr(service, "FALLBACK_POLL", 60.0)
    with InProcess(settings_for(tmp_path, ["http://127.0.0.1:9"])) as gateway:
        gateway.secret = gateway.key()
        gateway.key_id = gateway.store.find_key(gateway.secret).id
        yield gateway


def events(lines):
    """(event, data) pairs from an event stream's lines."""
    kind = None
    for line in lines:
        if line.startswith("event: "):
            kind = line.removeprefix("event: ")
        elif line.startswith("data: "):
            yield kind, json.loads(line.removeprefix("data: "))


def test_a_cancel_reaches_the_jobs_event_stream_at_once(offline):
    job = offline.store.create_job(key_id=offline.key_id, workflow="zimage-turbo", params={})[0]
    auth = {"Authorization": f"Bearer {offline.secret}"}
    url = f"{offline.url}/v1/jobs/{job.id}/events"
    with httpx.stream("GET", url, headers=auth, timeout=20) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        assert stream.headers["cache-control"] == "no-cache"
        received = events(stream.iter_lines())
        kind, data = next(received)
        assert (kind, data["id"], data["state"], data["position"]) == (
            "queued",
            job.id,
            "queued",
            0,
        )
        cancelled = httpx.delete(f"{offline.url}/v1/jobs/{job.id}", headers=auth, timeout=20)
        assert cancelled.json()["state"] == "cancelled"
        kind, data = next(received)
        assert (kind, data["state"], data["error"]["type"]) == (
            "cancelled",
            "cancelled",
            "cancelled",
        )
        assert "position" not in data
        assert next(received, None) is None  # the stream ends with the job


@pytest.mark.parametrize("number", ["²", "³¹"])
def test_a_last_event_id_the_gateway_did_not_write_replays_the_stored_state(offline, number):
    """A header arrives as Latin-1 text: "²" passes str.isdigit() but int() refuses it. Not
    an id of ours: the stream starts from the job's state in the store, unbroken."""
    job = offline.store.create_job(key_id=offline.key_id, workflow="zimage-turbo", params={})[0]
    epoch = offline.app.state.runtime.bus.epoch
    last_event_id = f"{epoch}-{number}".encode("latin-1")  # bytes: httpx sends them as they are
    headers = {
        b"Authorization": f"Bearer {offline.secret}".encode(),
        b"Last-Event-ID": last_event_id,
    }
    url = f"{offline.url}/v1/jobs/{job.id}/events"
    with httpx.stream("GET", url, headers=headers, timeout=20) as stream:
        assert stream.status_code == 200
        kind, data = next(events(stream.iter_lines()))
    assert (kind, data["id"], data["state"], data["position"]) == ("queued", job.id, "queued", 0)


def test_a_database_outage_ends_the_stream_with_an_error_event_not_a_traceback(
    offline, monkeypatch, caplog
):
    """The store fails while a stream is open (its queue position is recounted when a job
    ahead leaves): the client gets an ``error`` event shaped like the API's 503, the stream
    ends, and the log has a warning, not an error with a traceback."""
    ahead, job = (
        offline.store.create_job(key_id=offline.key_id, workflow="zimage-turbo", params={})[0]
        for _ in range(2)
    )
    url = f"{offline.url}/v1/jobs/{job.id}/events"
    with httpx.stream("GET", url, headers=auth(offline.secret), timeout=20) as stream:
        received = events(stream.iter_lines())
        assert next(received)[1]["position"] == 1

        def down(job_id):
            raise OperationalError("SELECT", {}, Exception("connection refused"))

        monkeypatch.setattr(offline.store, "queue_position", down)
        with caplog.at_level(logging.WARNING):
            gone = httpx.delete(f"{offline.url}/v1/jobs/{ahead.id}", headers=auth(offline.secret))
            assert gone.json()["state"] == "cancelled"
            assert next(received) == (
                "error",
                {
                    "error": {
                        "message": "the job database is unavailable; try again shortly",
                        "type": "server_error",
                        "param": None,
                        "code": "database_unavailable",
                    }
                },
            )
            assert next(received, None) is None
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("database is unavailable" in r.getMessage() for r in caplog.records)


def test_a_client_that_has_seen_the_end_is_told_204_and_one_that_has_not_gets_it(offline):
    """204 is how a server stops an EventSource from reconnecting for ever."""
    job = offline.store.create_job(key_id=offline.key_id, workflow="zimage-turbo", params={})[0]
    auth = {"Authorization": f"Bearer {offline.secret}"}
    url = f"{offline.url}/v1/jobs/{job.id}/events"
    with httpx.stream("GET", url, headers=auth, timeout=20) as stream:
        lines = stream.iter_lines()
        queued_id = next(line for line in lines if line.startswith("id: "))[4:]
        httpx.delete(f"{offline.url}/v1/jobs/{job.id}", headers=auth, timeout=20)
        end_id = next(line for line in lines if line.startswith("id: "))[4:]
    seen_the_end = httpx.get(url, headers={**auth, "Last-Event-ID": end_id}, timeout=20)
    assert seen_the_end.status_code == 204 and seen_the_end.content == b""
    with httpx.stream("GET", url, headers={**auth, "Last-Event-ID": queued_id}) as stream:
        assert [kind for kind, _ in events(stream.iter_lines())] == ["cancelled"]


def test_a_worker_whose_loops_keep_failing_is_not_ready_and_says_so(offline):
    worker = offline.app.state.runtime.worker
    worker._loop_failures["claim"] = [time.monotonic()] * 2  # twice within the minute
    auth = {"Authorization": f"Bearer {offline.secret}"}
    body = {"workflow": "zimage-turbo", "params": {"prompt": "x"}}
    posted = httpx.post(f"{offline.url}/v1/jobs", json=body, headers=auth, timeout=20)
    assert posted.status_code == 503 and posted.headers["retry-after"] == "10"
    assert posted.json()["error"]["code"] == "worker_failing"
    assert httpx.get(f"{offline.url}/readyz", timeout=20).status_code == 503
