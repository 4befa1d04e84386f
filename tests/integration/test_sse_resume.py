"""The gateway's job events against a running gateway and an engine of this module's own
started with ``--preview-method latent2rgb``: every event has an id, ``preview`` events
carry the sampler's image in base64, and a client reconnecting with ``Last-Event-ID`` gets
what it missed (from the gateway's recent history, or the job's stored state when the id is
not this gateway's) and then the end of the job."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from PIL import Image as PIL

from comfyfn.engine import Engine, EngineState
from tests.support.gateway_proc import Gateway, make_key

# about the gateway's event streams, not the ComfyUI version: run once, in the 0.33.0 tier
pytestmark = [pytest.mark.engine, pytest.mark.any_version]

FINAL = ("succeeded", "failed", "cancelled")


@dataclass
class Sse:
    event: str
    id: str | None
    data: dict


@pytest.fixture(scope="module")
def engine() -> Iterator[EngineState]:
    """The module's own engine (previews on), its pid for the test that freezes it."""
    instance = Engine(f"{os.environ['COMFYFN_TEST_ENGINE']}-sse", preview_method="latent2rgb")
    try:
        yield instance.up()
    finally:
        instance.down()


@pytest.fixture(scope="module")
def gateway(engine: EngineState, tmp_path_factory) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("sse")
    db = f"sqlite:///{root / 'gateway.db'}"
    gw = Gateway([engine.url], db, root / "files", "-w", "zimage-turbo")
    gw.key = make_key(db, "sse")
    yield gw
    gw.stop()


def events(gw: Gateway, job_id: str, last_event_id: str | None = None) -> list[Sse]:
    """The job's events until the stream ends (the job is final); 120 s at most."""
    headers = {"Authorization": f"Bearer {gw.key}"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    with httpx.stream(
        "GET", f"{gw.url}/v1/jobs/{job_id}/events", headers=headers, timeout=120
    ) as stream:
        assert stream.status_code == 200
        return read_events(stream)


def read_events(stream: httpx.Response) -> list[Sse]:
    """Every event of an open stream until it ends."""
    return list(events_of(stream))


def events_of(stream: httpx.Response) -> Iterator[Sse]:
    """The events of an open stream as they come."""
    fields: dict[str, str] = {}
    for line in stream.iter_lines():
        if line == "":
            if "event" in fields:
                yield Sse(fields["event"], fields.get("id"), json.loads(fields["data"]))
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            fields[name] = value


def post_job(gw: Gateway, seed: int, steps: int) -> str:
    body = {
        "workflow": "zimage-turbo",
        "params": {"prompt": "预览", "seed": seed, "width": 64, "height": 64, "steps": steps},
    }
    answer = httpx.post(
        f"{gw.url}/v1/jobs", json=body, headers={"Authorization": f"Bearer {gw.key}"}
    )
    assert answer.status_code == 202, answer.text
    return str(answer.json()["id"])


def test_every_event_has_an_id_and_previews_come_as_base64(gateway, unique):
    job_id = post_job(gateway, unique(), steps=8)
    got = events(gateway, job_id)
    assert got[-1].event == "succeeded", [e.event for e in got]
    assert all(e.id for e in got), got
    previews = [e for e in got if e.event == "preview"]
    assert previews, [e.event for e in got]
    data = previews[-1].data
    assert data["job_id"] == job_id and data["content_type"].startswith("image/")
    with PIL.open(io.BytesIO(base64.b64decode(data["data"]))) as image:
        image.load()


def test_a_reconnecting_client_gets_what_it_missed(gateway, unique):
    job_id = post_job(gateway, unique(), steps=8)
    first = events(gateway, job_id)
    assert first[-1].event == "succeeded"
    updates = [e for e in first if e.event != "preview"]
    assert len(updates) >= 3, [e.event for e in first]

    # as if the connection had dropped after the first event: the rest comes from history
    missed = events(gateway, job_id, last_event_id=updates[0].id)
    assert missed[-1].event == "succeeded"
    assert unsigned(missed[-1].data["outputs"]) == unsigned(first[-1].data["outputs"])
    states = [(e.event, e.data["progress"]) for e in missed if e.event != "preview"]
    later = [(e.event, e.data["progress"]) for e in updates[1:]]
    # every state change after the one seen, in order (the history may hold more: a live
    # follower skips an update superseded before it was sent)
    remaining = iter(states)
    assert all(change in remaining for change in later), (states, later)
    assert updates[0].id and all(e.id for e in missed)
    seen = int(updates[0].id.rpartition("-")[2])
    assert all(int((e.id or "").rpartition("-")[2]) > seen for e in missed)  # nothing seen again

    # an id this gateway does not know (another replica, a restart): the stored state
    elsewhere = events(gateway, job_id, last_event_id="0badc0de-3")
    assert [e.event for e in elsewhere] == ["succeeded"]
    assert unsigned(elsewhere[0].data["outputs"]) == unsigned(first[-1].data["outputs"])


def unsigned(outputs: list[dict]) -> list[dict]:
    """Outputs without their URLs' signatures: each answer signs its URLs afresh, with an
    expiry counted from that moment (two answers a second apart differ there)."""
    return [{**o, "url": o["url"].split("?", 1)[0]} for o in outputs]


def test_a_reconnect_while_the_job_runs_continues_live(engine, gateway, unique):
    """The connection drops at the first progress event; the engine is frozen (SIGSTOP) while
    the client reconnects, so the job is certainly still running when the new stream opens;
    that stream carries it to its end, sending nothing the client had already seen."""
    job_id = post_job(gateway, unique(), steps=40)
    headers = {"Authorization": f"Bearer {gateway.key}"}
    url = f"{gateway.url}/v1/jobs/{job_id}/events"
    with httpx.stream("GET", url, headers=headers, timeout=120) as stream:
        seen = next(e for e in events_of(stream) if e.event == "progress")  # then drop it
    assert seen.id
    os.kill(engine.pid, signal.SIGSTOP)  # the job cannot end until SIGCONT
    resumed = False
    try:
        state = httpx.get(f"{gateway.url}/v1/jobs/{job_id}", headers=headers).json()
        assert state["state"] == "running", state
        with httpx.stream(
            "GET", url, headers={**headers, "Last-Event-ID": seen.id}, timeout=120
        ) as stream:
            assert stream.status_code == 200
            os.kill(engine.pid, signal.SIGCONT)
            resumed = True
            rest = read_events(stream)
    finally:
        if not resumed:
            os.kill(engine.pid, signal.SIGCONT)
    assert rest[-1].event == "succeeded", [e.event for e in rest]
    progress = [e.data["progress"] for e in rest if e.event == "progress"]
    assert progress == sorted(progress) and all(p >= seen.data["progress"] for p in progress)
    assert [e for e in rest if e.event == "queued"] == []
    done = int(seen.id.rpartition("-")[2])
    assert all(int((e.id or "").rpartition("-")[2]) > done for e in rest), (seen, rest)
