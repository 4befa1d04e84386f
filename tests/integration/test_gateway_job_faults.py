"""One job's faults in the gateway: broken, garbled or slow ComfyUI answers, a full disk.

Each ends the job in a clear state — succeeded after a re-fetch or a re-attach, or failed
with an error saying what happened — never ``running`` for ever, never run twice. ComfyUI
is the real engine; tests/support/faultproxy.py breaks only what a real server never breaks.
"""

from __future__ import annotations

import json

import anyio
import httpx
import pytest
from PIL import Image

from tests.support.faultproxy import FaultProxy
from tests.support.gateway_proc import InProcess, settings_for
from tests.support.graphs import sleep_graph
from tests.support.polling import await_for

# about the gateway's handling of broken answers, not the ComfyUI version: run once, on
# the managed engine
pytestmark = [pytest.mark.engine, pytest.mark.anyio, pytest.mark.one_version]


async def _gateway(tmp_path, proxy: FaultProxy, color: int, **settings) -> InProcess:
    workflow = tmp_path / "job.json"
    workflow.write_text(json.dumps(sleep_graph(color, milliseconds=50, steps=2)))
    gateway = InProcess(
        settings_for(tmp_path, [proxy.url], workflows=(("job", str(workflow)),), **settings)
    )
    await anyio.to_thread.run_sync(gateway.__enter__)  # the proxy answers on this loop
    return gateway


async def _final(http: httpx.AsyncClient, job_id: str) -> dict:
    async def ended() -> dict | None:
        job: dict = (await http.get(f"/v1/jobs/{job_id}")).json()
        return job if job["state"] in ("succeeded", "failed", "cancelled") else None

    return await await_for(ended, 60, f"job {job_id} to end", interval=0.1)


async def _run_one(tmp_path, proxy: FaultProxy, color: int, **settings) -> tuple[dict, bytes]:
    """Post one job to a gateway in front of ``proxy``; its final state and first file."""
    gateway = await _gateway(tmp_path, proxy, color, **settings)
    try:
        headers = {"Authorization": f"Bearer {gateway.key()}"}
        async with httpx.AsyncClient(base_url=gateway.url, headers=headers, timeout=30) as http:
            posted = await http.post("/v1/jobs", json={"workflow": "job", "params": {}})
            assert posted.status_code == 202, posted.text
            job = await _final(http, posted.json()["id"])
            data = b""
            if job["outputs"]:
                data = (await http.get(f"/v1/files/{job['outputs'][0]['id']}")).content
            return job, data
    finally:
        await anyio.to_thread.run_sync(gateway.__exit__)


def _decodes(data: bytes) -> tuple[int, int]:
    import io

    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return im.size


async def test_a_truncated_image_is_fetched_again(server, unique, tmp_path):
    async with FaultProxy(server, truncate_views=1) as proxy:
        job, data = await _run_one(tmp_path, proxy, unique())
    assert job["state"] == "succeeded", job
    assert _decodes(data) == (64, 48)
    assert ("truncate_views", "/view") in [(s, p.split("?")[0]) for s, p in proxy.faults]
    assert proxy.forwarded_prompt_posts == 1


async def test_an_image_that_stays_broken_fails_the_job_clearly(server, unique, tmp_path):
    async with FaultProxy(server, truncate_views=1000) as proxy:
        job, _ = await _run_one(tmp_path, proxy, unique())
    assert job["state"] == "failed", job
    assert job["error"]["type"] == "CorruptOutput"
    assert "cut short" in job["error"]["message"]
    assert proxy.url not in json.dumps(job) and server not in json.dumps(job)
    assert proxy.forwarded_prompt_posts == 1


async def test_garbled_history_is_retried_and_the_job_runs_once(server, unique, tmp_path):
    async with FaultProxy(server, garble_history=1) as proxy:
        job, data = await _run_one(tmp_path, proxy, unique())
    assert job["state"] == "succeeded", job
    assert _decodes(data) == (64, 48)
    assert proxy.forwarded_prompt_posts == 1


async def test_history_slower_than_the_http_timeout_does_not_run_the_job_twice(
    server, unique, tmp_path
):
    # (a timeout the other requests meet with room on a loaded machine; a delay well past it)
    async with FaultProxy(server, history_delay=6.0, delay_history=3) as proxy:
        job, data = await _run_one(tmp_path, proxy, unique(), http_timeout=2.5)
    assert job["state"] == "succeeded", job
    assert _decodes(data) == (64, 48)
    assert proxy.forwarded_prompt_posts == 1  # re-attached by prompt id, never re-posted


async def test_a_full_storage_disk_fails_the_job_and_the_gateway_goes_on(
    server, unique, tmp_path, tmpfs
):
    disk = tmpfs("files", "size=64k")
    with (disk / "filler").open("wb", buffering=0) as filler, pytest.raises(OSError):
        while True:  # fill every block
            filler.write(b"\0" * 4096)
    async with FaultProxy(server) as proxy:
        job, _ = await _run_one(tmp_path, proxy, unique(), storage=disk)
        assert job["state"] == "failed", job
        assert job["error"] == {
            "type": "StorageError",
            "message": "the outputs could not be stored",
        }
        (disk / "filler").unlink()  # space again: the same gateway set-up works
        job, data = await _run_one(tmp_path, proxy, unique(), storage=disk)
    assert job["state"] == "succeeded", job
    assert _decodes(data) == (64, 48)
