"""Gateway output storage with real parts: two replicas on one PostgreSQL sharing a real
S3-compatible store (SeaweedFS), each serving the files of jobs the other ran (a redirect to
a presigned URL), URLs that expire, a revoked key that gets no new URL; every output kind
(an animated WebP and a text) served with its media type from S3 and from a local folder;
an unreachable store failing the job without showing its address; and ``/readyz`` held back
by the servers' warm-up."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from PIL import Image

import comfyfn
from comfyfn.jobs.store import Store
from comfyfn.storage import S3Storage
from tests.support import gateway_proc
from tests.support.gateway_proc import Gateway, auth, make_key
from tests.support.graphs import kinds_graph, sleep_graph
from tests.support.polling import wait_for
from tests.support.ports import free_port

# about the gateway's storage, not the ComfyUI version: run once, in the 0.33.0 tier
pytestmark = [pytest.mark.engine, pytest.mark.any_version]

URL_TTL = 4  #: seconds: short, so the expiry can be waited for
EXPIRY_DEADLINE = 60.0  #: seconds past a URL's expiry by which it must be refused


@pytest.fixture
def s3_env(s3, monkeypatch):
    """The gateway processes started in this test reach the store through AWS variables."""
    for name, value in s3.env().items():
        monkeypatch.setitem(gateway_proc.ENV, name, value)
    monkeypatch.delitem(gateway_proc.ENV, "AWS_PROFILE", raising=False)
    monkeypatch.delitem(gateway_proc.ENV, "AWS_ENDPOINT_URL_S3", raising=False)
    return s3.env()


def write_json(path: Path, graph: dict) -> Path:
    path.write_text(json.dumps(graph))
    return path


def run_job(gateway: Gateway, key: str, workflow: str) -> dict:
    answer = httpx.post(
        f"{gateway.url}/v1/jobs", headers=auth(key), json={"workflow": workflow, "params": {}}
    )
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["id"]

    def final() -> dict | None:
        job = httpx.get(f"{gateway.url}/v1/jobs/{job_id}", headers=auth(key)).json()
        return job if job["state"] in ("succeeded", "failed", "cancelled") else None

    job = wait_for(final, 120, f"job {job_id} to end")
    assert job["state"] == "succeeded", job
    return job


def revoke(db: str, name: str) -> None:
    """As ``comfyfn keys revoke`` does (tested with the CLI elsewhere), without a process's
    start-up, so the URL handed out before is still within its short life when asked."""
    with Store(db) as store:
        assert store.revoke_key(name)


def presigned_expiry(location: str) -> float:
    """When a presigned URL (AWS signature V4, query form) stops being valid (epoch)."""
    query = parse_qs(urlsplit(location).query)
    signed = datetime.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    return signed.timestamp() + int(query["X-Amz-Expires"][0])


def check_kinds(files: list[tuple[dict, httpx.Response]], text: str) -> None:
    """The kinds graph's outputs as served: an animated WebP, then the text."""
    (webp, webp_body), (txt, txt_body) = files
    assert webp["content_type"] == webp_body.headers["content-type"] == "image/webp"
    with Image.open(io.BytesIO(webp_body.content)) as im:
        assert (im.size, getattr(im, "n_frames", 1)) == ((32, 24), 2)
    assert txt["content_type"] == txt_body.headers["content-type"] == "text/plain; charset=utf-8"
    assert txt_body.text == text
    assert [f["size"] for f, _ in files] == [len(b.content) for _, b in files]


def test_replicas_share_s3_storage_and_its_urls_expire(
    server, tmp_path, unique, s3, s3_env, postgres
):
    text = f"hello {unique()}"
    workflows = [
        "-w",
        f"sleep={write_json(tmp_path / 'sleep.json', sleep_graph(unique(), milliseconds=100))}",
        "-w",
        f"kinds={write_json(tmp_path / 'kinds.json', kinds_graph(unique(), text))}",
    ]
    prefix = f"gw-{unique()}"
    storage = f"s3://{s3.bucket}/{prefix}"
    db = postgres.create_database()
    common = (*workflows, "--storage", storage, "--url-ttl", str(URL_TTL))
    a = Gateway([server], db, tmp_path / "a", *common)
    try:
        key = make_key(db, "s3-owner")
        ran = {name: run_job(a, key, name) for name in ("sleep", "kinds")}
    finally:
        a.stop()  # replica A is gone: B serves what A stored
    assert not (tmp_path / "a" / ran["sleep"]["id"]).exists()  # nothing on A's disk
    b = Gateway([server], db, tmp_path / "b", *common)
    try:
        bucket = S3Storage.from_url(storage, env=s3_env)
        served: dict = {}
        for name, job in ran.items():
            served[name] = []
            for i in range(len(job["outputs"])):
                # a fresh view per output: its URLs live URL_TTL seconds from now, time for
                # this output's requests however slow the machine (not for all outputs')
                seen = httpx.get(f"{b.url}/v1/jobs/{job['id']}", headers=auth(key)).json()
                output = seen["outputs"][i]
                assert output["url"].startswith(b.url + "/v1/files/")
                moved = httpx.get(output["url"])
                assert moved.status_code == 307, moved.text
                location = moved.headers["location"]
                assert location.startswith(s3.endpoint + f"/{s3.bucket}/{prefix}/{job['id']}/")
                assert "Credential=" in location and s3.secret_key not in location
                exp = int(parse_qs(urlsplit(output["url"]).query)["exp"][0])
                assert presigned_expiry(location) <= exp + 1  # never outlives the signed URL
                body = httpx.get(location)
                assert body.status_code == 200, body.text
                ext = {"image/png": "png", "image/webp": "webp"}.get(output["content_type"], "txt")
                stored = asyncio.run(bucket.get(f"{job['id']}/{i}.{ext}"))
                assert hashlib.sha256(body.content).hexdigest() == (
                    hashlib.sha256(stored).hexdigest()
                )
                served[name].append((output, body))
        ((png, png_body),) = served["sleep"]
        assert png["content_type"] == png_body.headers["content-type"] == "image/png"
        assert png_body.content.startswith(b"\x89PNG") and b"comfyfn" in png_body.content
        check_kinds(served["kinds"], text)

        # a key's own request also gets a fresh presigned URL, valid url_ttl seconds
        file_id = png["id"]
        by_key = httpx.get(f"{b.url}/v1/files/{file_id}", headers=auth(key))
        assert by_key.status_code == 307
        assert presigned_expiry(by_key.headers["location"]) <= time.time() + URL_TTL + 1

        # expired: the signed URL is refused by the gateway, the presigned one by the store
        signed_url, presigned = png["url"], png_body.url
        exp = int(parse_qs(urlsplit(signed_url).query)["exp"][0])

        def both_refused() -> bool:
            gw, store = httpx.get(signed_url).status_code, httpx.get(str(presigned)).status_code
            assert gw in (307, 401) and store in (200, 403), (gw, store)
            return (gw, store) == (401, 403)

        expiry = max(exp, presigned_expiry(str(presigned))) + EXPIRY_DEADLINE - time.time()
        wait_for(both_refused, expiry, "both URLs refused after their expiry", interval=0.5)
        assert time.time() >= exp  # refused after its expiry, not before

        # a revoked key mints no URL: neither through its job nor through the file route;
        # a signed URL handed out before still works until its own expiry, and no longer
        job_url = f"{b.url}/v1/jobs/{ran['sleep']['id']}"
        before = httpx.get(job_url, headers=auth(key)).json()["outputs"][0]["url"]
        revoke(db, "s3-owner")
        before_exp = int(parse_qs(urlsplit(before).query)["exp"][0])
        asked = time.time()
        late = httpx.get(before)
        if time.time() < before_exp - 1:  # answered within its own expiry: it still works
            assert late.status_code == 307
            assert presigned_expiry(late.headers["location"]) <= before_exp + 1
        elif asked > before_exp + 1:  # asked after it (a slow machine): no longer
            assert late.status_code == 401
        else:  # asked and answered around its expiry (whole seconds): either
            assert late.status_code in (307, 401)
        assert httpx.get(job_url, headers=auth(key)).status_code == 401
        refused = httpx.get(f"{b.url}/v1/files/{file_id}", headers=auth(key))
        assert refused.status_code == 401 and "location" not in refused.headers
        assert s3.endpoint not in refused.text and prefix not in refused.text
    finally:
        b.stop()


def test_local_storage_serves_every_kind_with_its_media_type(server, tmp_path, unique):
    text = f"local {unique()}"
    kinds = write_json(tmp_path / "kinds.json", kinds_graph(unique(), text))
    db = f"sqlite:///{tmp_path / 'g.db'}"
    gateway = Gateway([server], db, tmp_path / "files", "-w", f"kinds={kinds}")
    try:
        key = make_key(db, "local")
        job = run_job(gateway, key, "kinds")
        files = []
        for output in job["outputs"]:
            body = httpx.get(output["url"])
            assert body.status_code == 200, body.text
            files.append((output, body))
        check_kinds(files, text)
        on_disk = sorted(p.name for p in (tmp_path / "files" / job["id"]).iterdir())
        assert on_disk == ["0.webp", "1.txt"]
        assert (tmp_path / "files" / job["id"] / "0.webp").read_bytes() == files[0][1].content
    finally:
        gateway.stop()


def readyz(gateway: Gateway) -> tuple[int, dict]:
    answer = httpx.get(f"{gateway.url}/readyz", timeout=5)
    return answer.status_code, answer.json()


def test_readyz_waits_for_the_warm_up(server, tmp_path, unique):
    color = unique()
    warm = write_json(tmp_path / "warm.json", sleep_graph(color, milliseconds=4000, steps=2))
    db = f"sqlite:///{tmp_path / 'g.db'}"
    gateway = Gateway([server], db, tmp_path / "files", "--warm", str(warm), ready="/healthz")
    try:
        status, body = readyz(gateway)
        assert status == 503, body
        assert body["error"]["code"] == "warming_up"
        message = body["error"]["message"]
        assert "warm.json" in message and str(tmp_path) not in message and server not in message
        wait_for(lambda: readyz(gateway)[0] == 200, 60, "/readyz to say ready")
        assert readyz(gateway)[1] == {"status": "ready"}
    finally:
        gateway.stop()
    with comfyfn.Client(server) as c:
        warmed = [
            e["prompt"][2]
            for e in c.history().values()
            if e["prompt"][2].get("1", {}).get("inputs", {}).get("color") == color
        ]
    (graph,) = warmed  # the warm-up job ran once, as its smallest form
    assert graph["3"]["inputs"]["filename_prefix"] == "comfyfn_warmup"


def test_a_failed_warm_up_is_logged_and_named_by_readyz(server, tmp_path, unique):
    bad = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 16, "height": 16, "batch_size": 1, "color": unique()},
        },
        "2": {
            "class_type": "ImageScale",
            "inputs": {
                "image": ["1", 0],
                "upscale_method": "no-such-method",
                "width": 32,
                "height": 32,
                "crop": "disabled",
            },
        },
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "x"}},
    }
    warm = write_json(tmp_path / "bad.json", bad)
    db = f"sqlite:///{tmp_path / 'g.db'}"
    gateway = Gateway([server], db, tmp_path / "files", "--warm", str(warm), ready="/healthz")
    try:
        body = wait_for(
            lambda: (
                (r := readyz(gateway))[0] == 503
                and r[1]["error"]["code"] == "warm_up_failed"
                and r[1]
            ),
            60,
            "/readyz to name the failed warm-up",
        )
        message = body["error"]["message"]
        assert "bad.json (WorkflowInvalid)" in message
        assert str(tmp_path) not in message and server not in message
        time.sleep(0.5)  # still not ready: a failed warm-up is not forgotten
        assert readyz(gateway)[0] == 503
    finally:
        gateway.stop()
    log = gateway.log.read_text()
    assert f"warm-up of {warm}" in log and "failed" in log


def test_an_unreachable_store_fails_the_job_and_shows_nothing_internal(
    server, tmp_path, unique, s3, monkeypatch
):
    endpoint = f"http://127.0.0.1:{free_port()}"  # nobody listens there
    for name, value in {**s3.env(), "AWS_ENDPOINT_URL": endpoint}.items():
        monkeypatch.setitem(gateway_proc.ENV, name, value)
    sleep = write_json(tmp_path / "sleep.json", sleep_graph(unique(), milliseconds=50))
    db = f"sqlite:///{tmp_path / 'g.db'}"
    storage = f"s3://{s3.bucket}/down"
    gateway = Gateway([server], db, tmp_path / "files", "-w", f"s={sleep}", "--storage", storage)
    try:
        key = make_key(db, "down")
        answer = httpx.post(
            f"{gateway.url}/v1/jobs", headers=auth(key), json={"workflow": "s", "params": {}}
        )
        job_url = f"{gateway.url}/v1/jobs/{answer.json()['id']}"
        job = wait_for(
            lambda: (
                (j := httpx.get(job_url, headers=auth(key)).json())["state"] != "running"
                and j["state"] != "queued"
                and j
            ),
            120,
            "the job to end",
        )
        assert job["state"] == "failed" and job["outputs"] == []
        assert job["error"]["type"] == "StorageError"
        shown = json.dumps(job)
        assert endpoint not in shown and s3.bucket not in shown and s3.access_key not in shown
        assert httpx.get(f"{gateway.url}/readyz").status_code == 200  # the gateway goes on
    finally:
        gateway.stop()
    assert "cannot store its outputs" in gateway.log.read_text()
