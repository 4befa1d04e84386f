"""A job's server-sent events from a gateway served in this process (uvicorn on loopback,
its only ComfyUI server unreachable, so nothing runs the stored jobs): sse-starlette's
stream with the gateway's event names, woken by the process's bus when a job changes."""

from __future__ import annotations

import json

import httpx
import pytest
from gateway_proc import InProcess, settings_for

from comfyfn.gateway import jobs


@pytest.fixture
def offline(tmp_path, monkeypatch):
    # Only the event bus can wake a stream in time: the store is re-read once a minute.
    monkeypatch.setattr(jobs, "FALLBACK_POLL", 60.0)
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
