"""The gateway as its users meet it: the official OpenAI SDK, jobs, SSE, webhooks, restarts."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, HTTPServer

import httpx
import openai
import pytest
from PIL import Image

import comfyfn
from comfyfn.jobs.store import Store
from tests.support.blocking import blocked
from tests.support.gateway_proc import Gateway, make_key, sqlite_gateway
from tests.support.graphs import sleep_graph
from tests.support.polling import wait_for
from tests.support.queues import take_off

# about the gateway's API, not the ComfyUI version: run once, in the 0.33.0 tier
pytestmark = [pytest.mark.engine, pytest.mark.any_version]

SLOW_MS = 600_000  #: the "sleep" workflow's job: it runs until cancelled

FINAL = ("succeeded", "failed", "cancelled")


@pytest.fixture(scope="module")
def gw(server, tmp_path_factory):
    root = tmp_path_factory.mktemp("gw")
    sleep_wf = root / "sleep.json"
    # (a job that runs until it is cancelled: a shorter one could end before the cancel)
    sleep_wf.write_text(json.dumps(sleep_graph(0, milliseconds=SLOW_MS, steps=6000)))
    args = ("-w", "zimage-turbo", "-w", f"sleep={sleep_wf}", "--allow-private-webhooks")
    with sqlite_gateway([server], root, *args) as gateway:
        gateway.key = make_key(gateway.db, "tests")
        yield gateway


def take_off_sleeps(server: str, milliseconds: int) -> None:
    """Take every ComfyfnSleep job of ``milliseconds`` off the server."""
    with comfyfn.Client(server) as c:
        queue = c.queue()
    items = queue["queue_running"] + queue["queue_pending"]
    slow = [
        i[1]
        for i in items
        if i[2].get("2", {}).get("inputs", {}).get("milliseconds") == milliseconds
    ]
    take_off(server, slow)


def sdk(gw, key=None) -> openai.OpenAI:
    """The official SDK's client for the gateway (use it in ``with``: it is closed after)."""
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=key or gw.key, max_retries=0)


def auth(gw, key=None):
    return {"Authorization": f"Bearer {key or gw.key}"}


def job_state(gateway, key, job_id) -> dict:
    answer = httpx.get(f"{gateway.url}/v1/jobs/{job_id}", headers=auth(gateway, key))
    assert answer.status_code == 200, answer.text
    return answer.json()


def final_state(gateway, key, job_id, timeout=60.0) -> dict:
    """The job once it is final; the test fails if it is not within ``timeout``."""
    return wait_for(
        lambda: (s := job_state(gateway, key, job_id))["state"] in FINAL and s,
        timeout,
        f"job {job_id} ends",
    )


def stored_job(db: str, job_id: str):
    with Store(db) as store:
        return store.get_job(job_id)


def test_openai_sdk_b64_and_url(gw, unique):
    with sdk(gw) as client:
        assert "zimage-turbo" in [m.id for m in client.models.list()]
        result = client.images.generate(
            model="zimage-turbo",
            prompt="一只戴着红围巾的猫",
            size="64x80",
            response_format="b64_json",
            extra_body={"seed": unique(), "steps": 2},
        )
        assert result.data is not None and result.data[0].b64_json is not None
        image = Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json)))
        assert image.size == (64, 80)
        result = client.images.generate(
            model="zimage-turbo",
            prompt="a red kite",
            size="96x64",
            n=2,
            extra_body={"seed": unique(), "steps": 2},
        )
    assert result.data is not None and len(result.data) == 2
    url = result.data[0].url
    assert url is not None
    fetched = httpx.get(url)
    assert fetched.status_code == 200 and fetched.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(fetched.content)).size == (96, 64)
    etag = fetched.headers["etag"]
    assert httpx.get(url, headers={"If-None-Match": etag}).status_code == 304
    unsigned = url.split("?")[0]
    assert httpx.get(unsigned).status_code == 401
    assert httpx.get(unsigned, headers=auth(gw)).status_code == 200
    tampered = url.replace("sig=", "sig=0")
    assert httpx.get(tampered).status_code == 401


def test_errors_in_openai_shape(gw):
    with sdk(gw) as client:
        with pytest.raises(openai.BadRequestError) as bad:
            client.images.generate(model="zimage-turbo", prompt="x", size="100x64")
        assert bad.value.status_code == 400 and "multiple of 16" in bad.value.message
        with pytest.raises(openai.NotFoundError):
            client.images.generate(model="dall-e-3", prompt="x")
    with sdk(gw, key="cfn_wrong") as wrong, pytest.raises(openai.AuthenticationError):
        wrong.models.list()
    answer = httpx.get(f"{gw.url}/v1/models")
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "invalid_api_key"
    too_long = httpx.post(
        f"{gw.url}/v1/images/generations",
        headers=auth(gw),
        json={"prompt": "x" * 5000, "size": "64x64"},
    )
    assert too_long.status_code == 400 and too_long.json()["error"]["param"] == "prompt"
    huge = httpx.post(f"{gw.url}/v1/jobs", headers=auth(gw), content=b"{" + b" " * 2_000_000)
    assert huge.status_code == 413


def test_rate_limit_answers_429_with_retry_after(gw):
    key = make_key(gw.db, f"slow-{time.monotonic_ns()}", rate="2/min")
    codes = [httpx.get(f"{gw.url}/v1/models", headers=auth(gw, key)) for _ in range(3)]
    assert [c.status_code for c in codes] == [200, 200, 429]
    assert int(codes[2].headers["retry-after"]) >= 1
    with sdk(gw, key) as client, pytest.raises(openai.RateLimitError):
        client.models.list()


def test_revoked_key_is_refused(gw):
    import subprocess
    import sys

    from tests.support.gateway_proc import ENV

    key = make_key(gw.db, "to-revoke")
    assert httpx.get(f"{gw.url}/v1/models", headers=auth(gw, key)).status_code == 200
    subprocess.run(
        [sys.executable, "-m", "comfyfn.cli", "keys", "revoke", "to-revoke", "--db", gw.db],
        check=True,
        env=ENV,
        capture_output=True,
    )
    assert httpx.get(f"{gw.url}/v1/models", headers=auth(gw, key)).status_code == 401
    listed = subprocess.run(
        [sys.executable, "-m", "comfyfn.cli", "keys", "list", "--db", gw.db],
        check=True,
        env=ENV,
        capture_output=True,
        text=True,
    ).stdout
    assert "to-revoke" in listed and "revoked" in listed and key not in listed


def test_jobs_idempotency_sse_and_cancel(gw, server, unique):
    body = {
        "workflow": "zimage-turbo",
        "params": {"prompt": "灯笼", "seed": unique(), "width": 64, "height": 64, "steps": 2},
    }
    headers = {**auth(gw), "Idempotency-Key": f"k-{unique()}"}
    first = httpx.post(f"{gw.url}/v1/jobs", json=body, headers=headers)
    again = httpx.post(f"{gw.url}/v1/jobs", json=body, headers=headers)
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    job_id = first.json()["id"]
    events = []
    with httpx.stream(
        "GET", f"{gw.url}/v1/jobs/{job_id}/events", headers=auth(gw), timeout=60
    ) as stream:
        for line in stream.iter_lines():
            if line.startswith("event: "):
                events.append(line.removeprefix("event: "))
    assert events[-1] == "succeeded"
    job = httpx.get(f"{gw.url}/v1/jobs/{job_id}", headers=auth(gw)).json()
    assert job["state"] == "succeeded" and job["progress"] == 1.0 and len(job["outputs"]) == 1
    # someone else's key does not see it
    other = make_key(gw.db, f"other-{unique()}")
    assert httpx.get(f"{gw.url}/v1/jobs/{job_id}", headers=auth(gw, other)).status_code == 404

    slow = httpx.post(
        f"{gw.url}/v1/jobs", headers=auth(gw), json={"workflow": "sleep", "params": {}}
    ).json()
    try:
        assert slow["state"] in ("queued", "running")
        wait_for(
            lambda: job_state(gw, None, slow["id"])["state"] == "running", 30, "the slow job runs"
        )
        cancelled = httpx.delete(f"{gw.url}/v1/jobs/{slow['id']}", headers=auth(gw)).json()
        assert cancelled["state"] == "cancelled"
    finally:  # (a failed cancel must not keep the shared engine busy for ten minutes)
        if job_state(gw, None, slow["id"])["state"] not in ("cancelled", "failed", "succeeded"):
            take_off_sleeps(server, SLOW_MS)


def test_params_are_validated_with_the_field_named(gw):
    bad = httpx.post(
        f"{gw.url}/v1/jobs",
        headers=auth(gw),
        json={"workflow": "zimage-turbo", "params": {"prompt": "p", "width": 1000}},
    )
    assert bad.status_code == 422
    assert bad.json()["error"]["param"] == "params.width"
    unknown = httpx.post(
        f"{gw.url}/v1/jobs",
        headers=auth(gw),
        json={"workflow": "zimage-turbo", "params": {"colour": "red"}},
    )
    assert unknown.status_code == 422 and unknown.json()["error"]["param"] == "params.colour"
    typed = httpx.post(
        f"{gw.url}/v1/workflows/zimage-turbo/jobs",
        headers=auth(gw),
        json={"prompt": "p", "steps": 0},
    )
    assert typed.status_code == 422 and typed.json()["error"]["param"] == "steps"


def test_openapi_documents_each_workflow(gw):
    doc = httpx.get(f"{gw.url}/openapi.json").json()
    assert "/v1/workflows/zimage-turbo/jobs" in doc["paths"]
    assert "/v1/workflows/sleep/jobs" in doc["paths"]
    width = doc["components"]["schemas"]["ZimageTurboParams"]["properties"]["width"]
    assert {"minimum": 16, "maximum": 16384, "multipleOf": 16, "type": "integer"} in width["anyOf"]
    assert width["default"] == 1024


def test_webhook_is_signed_and_delivered(gw, unique):
    received: list[tuple[dict, bytes]] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((dict(self.headers), body))
            self.send_response(200 if len(received) > 1 else 503)  # first try fails: retried
            self.end_headers()

        def log_message(self, *args):
            pass

    receiver = HTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    try:
        hook = f"http://127.0.0.1:{receiver.server_port}/hook"
        job = httpx.post(
            f"{gw.url}/v1/jobs",
            headers=auth(gw),
            json={
                "workflow": "zimage-turbo",
                "webhook": hook,
                "params": {"prompt": "p", "seed": unique(), "width": 64, "height": 64, "steps": 2},
            },
        ).json()
        wait_for(lambda: len(received) >= 2, 60, "the webhook is retried and delivered")
    finally:
        receiver.shutdown()
        receiver.server_close()
    headers, body = received[-1]
    with Store(gw.db) as store:
        secret = store.secret()
    expected = hmac.new(
        secret, headers["X-Comfyfn-Timestamp"].encode() + b"." + body, hashlib.sha256
    ).hexdigest()
    assert headers["X-Comfyfn-Signature"] == f"sha256={expected}"
    payload = json.loads(body)
    assert payload["id"] == job["id"] and payload["state"] == "succeeded"


def test_private_webhooks_are_refused_by_default(server, tmp_path):
    with sqlite_gateway([server], tmp_path) as gateway:
        key = make_key(gateway.db, "k")
        answer = httpx.post(
            f"{gateway.url}/v1/jobs",
            headers=auth(gateway, key),
            json={"params": {"prompt": "p"}, "webhook": "http://127.0.0.1:9/hook"},
        )
        assert answer.status_code == 400 and answer.json()["error"]["param"] == "webhook"


def test_concurrent_clients(gw, unique):
    def one(i):
        with sdk(gw) as client:
            return client.images.generate(
                model="zimage-turbo",
                prompt=f"并发 {i}",
                size="64x64",
                response_format="b64_json",
                extra_body={"seed": unique(), "steps": 2},
            )

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(8)))
    assert all(len(r.data) == 1 for r in results)


def test_health_ready_metrics(gw, server):
    assert httpx.get(f"{gw.url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{gw.url}/readyz").json() == {"status": "ready"}  # no server URLs
    assert httpx.get(f"{gw.url}/metrics").status_code == 401
    assert httpx.get(f"{gw.url}/v1/models", headers=auth(gw)).status_code == 200

    def gauged() -> str | None:  # the worker's heartbeat sets the per-server gauge
        text = httpx.get(f"{gw.url}/metrics", headers=auth(gw)).text
        return text if "comfyfn_server_jobs{" in text else None

    text = wait_for(gauged, 60, "the per-server gauge")
    assert 'comfyfn_requests_total{method="GET",route="/v1/models",status="200"}' in text
    assert "# TYPE comfyfn_job_seconds histogram" in text
    assert 'comfyfn_server_jobs{server="0"}' in text and server not in text  # no URL


def restartable(tmp_path, graph) -> tuple[str, tuple[str, ...]]:
    """A database and ``serve`` arguments for a gateway serving ``graph`` as "sleep", whose
    running jobs another start takes over after one second without heartbeat."""
    wf = tmp_path / "sleep.json"
    wf.write_text(json.dumps(graph))
    return f"sqlite:///{tmp_path / 'g.db'}", ("-w", f"sleep={wf}", "--stale-after", "1")


def post_sleep_job(gateway, key) -> dict:
    answer = httpx.post(
        f"{gateway.url}/v1/jobs",
        headers=auth(gateway, key),
        json={"workflow": "sleep", "params": {}},
    )
    assert answer.status_code == 202, answer.text
    return answer.json()


def test_restart_mid_job_finishes_the_job(server, tmp_path, unique):
    color = unique()
    db, args = restartable(tmp_path, sleep_graph(color, milliseconds=3000, steps=10))
    gateway = Gateway([server], db, tmp_path / "files", *args)
    key = make_key(db, "k")
    try:
        with blocked(server, unique()):  # the job waits on ComfyUI until the gateway is gone
            job = post_sleep_job(gateway, key)
            prompt_id = wait_for(
                lambda: stored_job(db, job["id"]).prompt_id, 30, "the job is submitted"
            )
            with comfyfn.Client(server) as c:
                wait_for(lambda: c.queue_position(prompt_id) == 1, 30, "the job queued on ComfyUI")
            gateway.kill()  # mid-job: the ComfyUI job goes on without the gateway
        gateway = Gateway([server], db, tmp_path / "files", *args, port=gateway.port)
        state = final_state(gateway, key, job["id"])
        assert state["state"] == "succeeded", state
        assert stored_job(db, job["id"]).prompt_id == prompt_id  # re-attached, not re-run
        with comfyfn.Client(server) as c:
            runs = [
                e
                for e in c.history().values()
                if e["prompt"][2].get("1", {}).get("inputs", {}).get("color") == color
            ]
        assert len(runs) == 1
    finally:
        gateway.stop()


def test_restart_reruns_a_job_the_server_lost(server, tmp_path, unique):
    """Accepted before a restart, lost by ComfyUI meanwhile: it is run again, not dropped."""
    db, args = restartable(tmp_path, sleep_graph(unique(), milliseconds=300, steps=3))
    gateway = Gateway([server], db, tmp_path / "files", *args)  # started (and ready) first
    key = make_key(db, "k")
    with comfyfn.Client(server) as c:
        # a job runs first and holds the server until ours is lost (cancelled then, not left
        # to end on its own), so ours waits in the queue however slow the machine is
        blocker = c.stream_graph(sleep_graph(unique(), milliseconds=600_000, steps=6000))
        next(blocker)
        try:
            job = post_sleep_job(gateway, key)

            def waiting_in_comfyui():
                prompt_id = stored_job(db, job["id"]).prompt_id
                return prompt_id if prompt_id and c.queue_position(prompt_id) else None

            lost = wait_for(waiting_in_comfyui, 30, "the job waits in ComfyUI's queue")
            gateway.kill()
            c.delete_from_queue(lost)  # ComfyUI forgets it while no gateway is watching
            assert c.queue_position(lost) is None
            blocker.close()  # the server is free: the re-run waits for nothing
            gateway = Gateway([server], db, tmp_path / "files", *args, port=gateway.port)
            state = final_state(gateway, key, job["id"])
            assert state["state"] == "succeeded", state
            assert stored_job(db, job["id"]).prompt_id != lost  # a new run
        finally:
            gateway.stop()
            blocker.close()


def test_no_reachable_server_means_not_ready_and_503(tmp_path):
    with sqlite_gateway(["http://127.0.0.1:9"], tmp_path, ready="/healthz") as gateway:
        key = make_key(gateway.db, "k")
        assert httpx.get(f"{gateway.url}/readyz").status_code == 503
        answer = httpx.post(
            f"{gateway.url}/v1/images/generations",
            headers=auth(gateway, key),
            json={"prompt": "p", "size": "64x64"},
        )
        assert answer.status_code == 503
        assert answer.json()["error"]["code"] == "no_server"
