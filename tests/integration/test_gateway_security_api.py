"""The gateway's API surface under hostile or unlucky requests: cost limits, unencodable text,
bounded metrics, chunked bodies, database outages, what errors and /readyz reveal, the SSE
queue position, and a sync caller who hangs up.

Tests marked ``engine`` run against a real gateway process on the local engine; the others
serve ``create_app`` in this process (tests/support/gateway_proc.py) with an unreachable ComfyUI
server, which is enough for everything that is decided before a job runs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import socket
import sqlite3
import time

import httpx
import pytest
import sqlalchemy as sa

import comfyfn
from comfyfn.gateway.metrics import METHODS
from comfyfn.jobs.store import Store
from tests.support.gateway_proc import InProcess, auth, make_key, settings_for, sqlite_gateway
from tests.support.graphs import sleep_graph
from tests.support.polling import wait_for

# about the gateway's API surface, not the ComfyUI version: run once, in the 0.33.0 tier
pytestmark = pytest.mark.any_version
NOWHERE = "http://127.0.0.1:9"  # nothing listens: the gateway is up but not ready
TYPED = "/v1/workflows/zimage-turbo/jobs"


def job_count(db: str) -> int:
    engine = sa.create_engine(db)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT count(*) FROM cfn_jobs")).scalar_one()
    finally:
        engine.dispose()


def error_of(answer: httpx.Response) -> dict:
    body = answer.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


@pytest.fixture(scope="module")
def offline(tmp_path_factory):
    """An in-process gateway whose only ComfyUI server is unreachable (never ready)."""
    root = tmp_path_factory.mktemp("offline")
    settings = settings_for(root, [NOWHERE], max_body_bytes=4000, max_total_pixels=1024 * 1024 * 2)
    with InProcess(settings) as gateway:
        gateway.secret = gateway.key()
        yield gateway


# -- cost limits: one check, every route, before anything is queued ----------------------------

HUGE = {"width": 16384, "height": 16384, "batch_size": 4096, "steps": 10000}


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        (HUGE, "width"),
        ({"width": 2064, "height": 2048}, "width"),
        ({"width": 64, "height": 64, "batch_size": 5}, "batch_size"),
        ({"width": 64, "height": 64, "steps": 101}, "steps"),
        ({"width": 1024, "height": 1024, "batch_size": 3}, "batch_size"),  # total pixels
    ],
)
def test_cost_limits_on_the_job_routes(offline, extra, param):
    params = {"prompt": "p", **extra}
    answer = httpx.post(
        f"{offline.url}/v1/jobs", headers=auth(offline.secret), json={"params": params}
    )
    assert answer.status_code == 422 and error_of(answer)["param"] == f"params.{param}"
    assert error_of(answer)["code"] == "limit_exceeded"
    answer = httpx.post(f"{offline.url}{TYPED}", headers=auth(offline.secret), json=params)
    assert answer.status_code == 422 and error_of(answer)["param"] == param


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"size": "16384x16384", "n": 4, "steps": 150}, "size"),
        ({"size": "2064x2048"}, "size"),
        ({"size": "64x64", "steps": 101}, "steps"),
        ({"size": "64x64", "n": 5}, "n"),
        ({"size": "1024x1024", "n": 3}, "n"),  # total pixels
    ],
)
def test_cost_limits_on_the_openai_route(offline, body, param):
    answer = httpx.post(
        f"{offline.url}/v1/images/generations",
        headers=auth(offline.secret),
        json={"prompt": "p", **body},
    )
    assert answer.status_code == 400 and error_of(answer)["param"] == param


def test_requests_within_the_limits_pass_them(offline):
    """Within every limit a request gets as far as readiness (here: no server, 503)."""
    within = {"prompt": "p", "width": 1024, "height": 1024, "batch_size": 2, "steps": 100}
    for path, body in (
        ("/v1/jobs", {"params": within}),
        (TYPED, within),
        ("/v1/images/generations", {"prompt": "p", "size": "1024x1024", "n": 2, "steps": 100}),
    ):
        answer = httpx.post(f"{offline.url}{path}", headers=auth(offline.secret), json=body)
        assert answer.status_code == 503 and error_of(answer)["code"] == "no_server", path


# -- text that cannot be stored or sent on ------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "raw", "status", "param"),
    [
        ("/v1/jobs", '{"params": {"prompt": "a\\ud800b"}}', 422, "params.prompt"),
        ("/v1/jobs", '{"params": {"prompt": "nul \\u0000"}}', 422, "params.prompt"),
        ("/v1/jobs", '{"params": {"\\udc00": 1}}', 422, "params.\\udc00"),
        ("/v1/jobs", '{"params": {"prompt": "p"}, "webhook": "http://h.test/\\ud800"}', 422,
         "webhook"),
        (TYPED, '{"prompt": "\\udfff"}', 422, "prompt"),
        ("/v1/images/generations", '{"prompt": "\\ud83d"}', 422, "prompt"),
        ("/v1/images/generations", '{"prompt": "p", "user": "\\ud83d"}', 422, "user"),
    ],
)  # fmt: skip
def test_unencodable_text_is_refused_in_the_api_shape(offline, path, raw, status, param):
    answer = httpx.post(
        f"{offline.url}{path}",
        headers={**auth(offline.secret), "Content-Type": "application/json"},
        content=raw.encode(),
    )
    assert answer.status_code == status, answer.text
    # refused by our text check, or already by the request's schema (pydantic refuses lone
    # surrogates in typed text fields; the webhook's URL pattern does not match them)
    assert error_of(answer)["param"] == param


# -- /metrics: bounded labels -----------------------------------------------------------------


def request_series(gateway) -> set[str]:
    text = httpx.get(f"{gateway.url}/metrics", headers=auth(gateway.secret)).text
    series = "comfyfn_requests_total{"
    return {line.split(" ")[0] for line in text.splitlines() if line.startswith(series)}


def test_random_paths_and_methods_cannot_grow_the_metrics(offline):
    rng = random.Random(8)
    request_series(offline)  # counts itself: now /metrics has its series
    before = request_series(offline)
    tokens = []
    for i in range(50):
        token = f"r{rng.getrandbits(40):x}"
        tokens.append(token)
        method = rng.choice(["GET", "POST", "DELETE", f"X{token.upper()}", "BREW", "PROPFIND"])
        path = rng.choice([f"/{token}", f"/v1/{token}/x?y={i}", f"/v1/jobs/{token}"])
        httpx.request(method, f"{offline.url}{path}", headers=auth(offline.secret))
    grown = request_series(offline) - before
    assert 0 < len(grown) <= 12, grown  # a fixed handful, not one per request
    labels = [dict(p.split("=") for p in s[s.index("{") + 1 : -1].split(",")) for s in grown]
    assert {json.loads(x["route"]) for x in labels} <= {"unmatched", "/v1/jobs/{job_id}"}
    assert {json.loads(x["method"]) for x in labels} <= METHODS | {"other"}
    assert not any(token in series for token in tokens for series in grown)


# -- chunked bodies over the limit --------------------------------------------------------------


def raw_exchange(gateway, request: bytes, chunks: list[bytes]) -> tuple[int, bytes]:
    """Send a request with a chunked body on a raw socket; the status and body answered."""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=30) as sock:
        try:
            sock.sendall(request)
            for chunk in chunks:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # answered before the whole body was sent: read what came back
        answer = b""
        with contextlib.suppress(ConnectionResetError):  # closed with our body unread: a reset
            while data := sock.recv(65536):  # after the answer, which is read by then
                answer += data
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


def test_chunked_body_over_the_limit_gets_413(offline):
    head = (
        f"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {offline.secret}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    ).encode()
    prompt = b"x" * 6000  # over the limit of 4000, in chunks, with no Content-Length
    body = b'{"params": {"prompt": "' + prompt + b'"}}'
    status, answer = raw_exchange(offline, head, [body[i : i + 500] for i in range(0, 6100, 500)])
    assert status == 413
    assert json.loads(answer)["error"]["message"] == "request body over 4000 bytes"
    small = b'{"params": {"prompt": "p"}}'  # the same way under the limit: read as usual
    status, answer = raw_exchange(offline, head, [small[:10], small[10:]])
    assert status == 503 and json.loads(answer)["error"]["code"] == "no_server"
    sized = httpx.post(f"{offline.url}/v1/jobs", headers=auth(offline.secret), content=b" " * 5000)
    assert sized.status_code == 413


# -- what a caller without a key, or with one, gets to see -----------------------------------------


def test_readyz_says_only_not_ready(offline):
    answer = httpx.get(f"{offline.url}/readyz")
    assert answer.status_code == 503
    assert error_of(answer) == {
        "message": "not ready",
        "type": "server_error",
        "param": None,
        "code": "not_ready",
    }


# -- SSE: this job's own queue position ---------------------------------------------------------


def next_event(lines) -> tuple[str, dict]:
    """The next event from an iterator over an event stream's lines: (kind, data)."""
    kind = None
    for line in lines:
        if line.startswith("event: "):
            kind = line.removeprefix("event: ")
        elif line.startswith("data: "):
            assert kind is not None, f"data before an event line: {line}"
            return kind, json.loads(line.removeprefix("data: "))
    pytest.fail("the event stream ended without an event")


def test_sse_queued_event_reports_each_jobs_own_position(offline):
    """Jobs stored directly (nothing claims them here: no server is up) report their own
    places; when a job ahead leaves the queue, the stream says the new position."""
    key_id = offline.store.find_key(offline.secret).id
    jobs = [
        offline.store.create_job(key_id=key_id, workflow="zimage-turbo", params={"prompt": "p"})[0]
        for _ in range(3)
    ]
    positions = []
    for job in jobs:
        url = f"{offline.url}/v1/jobs/{job.id}/events"
        with httpx.stream("GET", url, headers=auth(offline.secret), timeout=30) as stream:
            kind, data = next_event(stream.iter_lines())
        assert kind == "queued"
        positions.append(data["position"])
    assert positions[1] == positions[0] + 1 and positions[2] == positions[1] + 1
    url = f"{offline.url}/v1/jobs/{jobs[2].id}/events"
    with httpx.stream("GET", url, headers=auth(offline.secret), timeout=30) as stream:
        lines = stream.iter_lines()
        assert next_event(lines)[1]["position"] == positions[2]
        gone = httpx.delete(f"{offline.url}/v1/jobs/{jobs[0].id}", headers=auth(offline.secret))
        assert gone.json()["state"] == "cancelled"
        kind, data = next_event(lines)
        assert (kind, data["position"]) == ("queued", positions[2] - 1)


# -- database outages: 503 in the API's shape ---------------------------------------------------


def test_postgresql_down_answers_503_json_then_recovers(postgres, tmp_path):
    db = postgres.create_database()
    with InProcess(settings_for(tmp_path, [NOWHERE], db_url=db)) as gateway:
        key = gateway.key()
        assert httpx.get(f"{gateway.url}/v1/models", headers=auth(key)).status_code == 200
        postgres.halt()
        try:
            for method, path, body in (
                ("POST", "/v1/jobs", {"params": {"prompt": "p"}}),
                ("GET", "/v1/models", None),
            ):
                answer = httpx.request(
                    method, f"{gateway.url}{path}", headers=auth(key), json=body, timeout=30
                )
                assert answer.status_code == 503, answer.text
                assert error_of(answer)["code"] == "database_unavailable"
                assert answer.headers["retry-after"]
        finally:
            postgres.resume()
        wait_for(
            lambda: httpx.get(f"{gateway.url}/v1/models", headers=auth(key)).status_code == 200,
            30,
            "the API answers again after PostgreSQL restarts",
        )


def test_postgresql_down_ends_an_open_event_stream_with_an_error_event(postgres, tmp_path, caplog):
    """A stream open when the database stops ends with an ``error`` event shaped like the
    API's 503 (its re-read of the job fails); no traceback is logged at ERROR for it."""
    db = postgres.create_database()
    with InProcess(settings_for(tmp_path, [NOWHERE], db_url=db)) as gateway:
        key = gateway.key()
        key_id = gateway.store.find_key(key).id
        job = gateway.store.create_job(key_id=key_id, workflow="zimage-turbo", params={})[0]
        url = f"{gateway.url}/v1/jobs/{job.id}/events"
        with httpx.stream("GET", url, headers=auth(key), timeout=60) as stream:
            lines = stream.iter_lines()
            assert next_event(lines)[0] == "queued"
            postgres.halt()
            try:
                kind, data = next_event(lines)
                assert kind == "error" and data["error"]["code"] == "database_unavailable"
                assert set(data["error"]) == {"message", "type", "param", "code"}
                assert not [line for line in lines if line.startswith("data: ")]  # it ended
            finally:
                postgres.resume()
    errors = [(r.name, r.getMessage()) for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors


@pytest.mark.engine
def test_sqlite_lock_longer_than_the_busy_timeout_answers_503_json(server, tmp_path, unique):
    path = tmp_path / "g.db"
    settings = settings_for(tmp_path, [server], db_url=f"sqlite:///{path}")
    with (
        Store(f"sqlite:///{path}", busy_timeout=0.3) as store,
        InProcess(settings, store=store) as gateway,
    ):
        key = gateway.key()
        ready = lambda: httpx.get(f"{gateway.url}/readyz").status_code == 200  # noqa: E731
        wait_for(ready, 30, "the gateway is ready")
        params = {"prompt": "p", "seed": unique(), "width": 64, "height": 64, "steps": 1}
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # the write lock, held well past 0.3 s
        try:
            before = holder.execute("SELECT count(*) FROM cfn_jobs").fetchone()[0]
            answer = httpx.post(
                f"{gateway.url}/v1/jobs", headers=auth(key), json={"params": params}, timeout=30
            )
            assert answer.status_code == 503, answer.text
            assert error_of(answer)["code"] == "database_unavailable"
            assert holder.execute("SELECT count(*) FROM cfn_jobs").fetchone()[0] == before
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        wait_for(ready, 30, "ready again once the lock is gone")
        answer = httpx.post(f"{gateway.url}/v1/jobs", headers=auth(key), json={"params": params})
        assert answer.status_code == 202, answer.text


# -- against a real gateway process on the engine -----------------------------------------------


@pytest.fixture(scope="module")
def live(server, tmp_path_factory):
    root = tmp_path_factory.mktemp("live")
    slow = root / "slow.json"
    slow.write_text(json.dumps(sleep_graph(0, milliseconds=20000, steps=20)))
    args = ("-w", "zimage-turbo", "-w", f"slow={slow}", "--max-steps", "40")
    with sqlite_gateway([server], root, *args) as gateway:
        gateway.server = server
        gateway.secret = make_key(gateway.db, "live")
        yield gateway


@pytest.mark.engine
def test_serve_sets_the_limits_from_its_options(live):
    answer = httpx.post(
        f"{live.url}/v1/jobs",
        headers=auth(live.secret),
        json={"params": {"prompt": "p", "width": 64, "height": 64, "steps": 41}},
    )
    assert answer.status_code == 422
    assert error_of(answer)["message"] == "steps 41 is over this gateway's limit of 40"


@pytest.mark.engine
def test_limits_and_bad_text_create_no_job(live):
    """The issue's request, and unencodable text, on every route: refused, no job row."""
    before = job_count(live.db)
    refused = [
        httpx.post(
            f"{live.url}/v1/jobs",
            headers=auth(live.secret),
            json={"params": {"prompt": "p", **HUGE}},
        ),
        httpx.post(f"{live.url}{TYPED}", headers=auth(live.secret), json={"prompt": "p", **HUGE}),
        httpx.post(
            f"{live.url}/v1/images/generations",
            headers=auth(live.secret),
            json={"prompt": "p", "size": "16384x16384", "n": 4, "steps": 150},
        ),
    ]
    for path, raw in (
        ("/v1/jobs", b'{"params": {"prompt": "\\ud800", "width": 64, "height": 64}}'),
        (TYPED, b'{"prompt": "\\ud800", "width": 64, "height": 64}'),
        ("/v1/images/generations", b'{"prompt": "\\ud800", "size": "64x64"}'),
    ):
        refused.append(
            httpx.post(
                f"{live.url}{path}",
                headers={**auth(live.secret), "Content-Type": "application/json"},
                content=raw,
            )
        )
    assert [r.status_code for r in refused] == [422, 422, 400, 422, 422, 422]
    assert [error_of(r)["param"] for r in refused] == [
        "params.width", "width", "size", "params.prompt", "prompt", "prompt"
    ]  # fmt: skip
    assert job_count(live.db) == before
    fine = httpx.post(
        f"{live.url}/v1/jobs",
        headers=auth(live.secret),
        json={"params": {"prompt": "p", "width": 64, "height": 64, "steps": 1}},
    )
    assert fine.status_code == 202 and job_count(live.db) == before + 1


@pytest.mark.engine
def test_job_errors_and_readyz_show_nothing_internal(live):
    assert httpx.get(f"{live.url}/readyz").json() == {"status": "ready"}
    job = httpx.post(
        f"{live.url}/v1/jobs",
        headers=auth(live.secret),
        json={"params": {"prompt": "p", "model": "missing.safetensors", "width": 64, "height": 64}},
    ).json()
    final = final_job(live, live.secret, job["id"], 120)
    assert final["state"] == "failed"
    shown = json.dumps(final["error"])
    assert "missing.safetensors" in shown  # says what is wrong...
    port = live.server.rsplit(":", 1)[-1]
    for internal in (live.server, f":{port}", "z_image_turbo_bf16", "Traceback"):
        assert internal not in shown  # ...but not where, nor what the server has
    assert set(final["error"]) <= {"type", "message", "node_id", "class_type", "exception_type"}


def final_job(gateway, key: str, job_id: str, timeout: float) -> dict:
    def check():
        job = httpx.get(f"{gateway.url}/v1/jobs/{job_id}", headers=auth(key)).json()
        return job if job["state"] in ("succeeded", "failed", "cancelled") else None

    return wait_for(check, timeout, f"job {job_id} ends")


@pytest.mark.engine
def test_sync_caller_who_hangs_up_cancels_the_job_on_comfyui(live):
    key = make_key(live.db, f"hangup-{time.monotonic_ns()}")
    with Store(live.db) as store:
        record = store.find_key(key)
        assert record is not None
        key_id = record.id
    body = json.dumps({"model": "slow", "prompt": "p"}).encode()
    request = (
        f"POST /v1/images/generations HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    engine = sa.create_engine(live.db)

    def the_job():
        with engine.connect() as conn:
            return conn.execute(
                sa.text("SELECT id, state, prompt_id FROM cfn_jobs WHERE key_id = :k"),
                {"k": key_id},
            ).first()

    def running_job():
        row = the_job()
        return row if row is not None and row.state == "running" and row.prompt_id else None

    try:
        with comfyfn.Client(live.server) as comfy:
            with socket.create_connection(("127.0.0.1", live.port), timeout=30) as caller:
                caller.sendall(request)
                _, _, prompt_id = wait_for(running_job, 60, "the sync job runs")
                wait_for(lambda: comfy.queue_position(prompt_id) == 0, 60, "ComfyUI runs the job")
            # the caller has hung up, 20 s before the job would end
            wait_for(lambda: the_job().state == "cancelled", 15, "the job ends cancelled")
            wait_for(
                lambda: comfy.queue_position(prompt_id) is None,
                10,
                "ComfyUI no longer runs it",
            )
    finally:
        engine.dispose()
