"""The second round of faults: answers that never get better. Each ends the job in a clear
state, in batch and gateway alike, with at most one execution per job.

- a ComfyUI behind an auth proxy that answers ``POST /prompt`` with a login page (or
  ``not json{``, or ``{}``): the server never sees the job; it is posted once more, then
  moved, counted against its retries, and fails naming the route;
- ``/history`` always garbled or answering 500, ``/view`` always answering 500,
  ``/history`` always slower than the HTTP timeout: the server accepted the job and still
  knows it, so it is re-attached by its prompt id, never posted again, and fails naming
  what could not be read.

The server is the real engine; tests/support/faultproxy.py breaks only what a real one never does.
``proxy.forwarded_prompt_posts`` counts the prompts that reached it: its executions.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
import httpx
import pytest

from comfyfn.batch import Batch, BatchSettings, Row
from tests.support.faultproxy import FaultProxy
from tests.support.gateway_proc import InProcess, settings_for
from tests.support.graphs import sleep_graph
from tests.support.polling import await_for

# about our handling of answers that never get better, not the ComfyUI version: run once,
# on the managed engine
pytestmark = [pytest.mark.engine, pytest.mark.anyio, pytest.mark.one_version]

RETRIES = 1  #: moves allowed after the first attempt

BLOCKED_ANSWERS = {
    "login page": b"<html><form action='/login'>Sign in</form></html>",
    "not json": b"not json{",
    "empty object": b"{}",
}

#: (proxy switches, timeout, the route the error names)
UNREADABLE: dict[str, tuple[dict[str, Any], float, str]] = {
    "garbled history": ({"garble_history": 10_000}, 10.0, "GET /history/"),
    "history 500": ({"fail_history": 10_000}, 10.0, "GET /history/"),
    "view 500": ({"fail_views": 10_000}, 10.0, "GET /view"),
    # (a timeout every other request meets with room on a loaded machine; a delay well past it)
    "slow history": ({"history_delay": 8.0}, 2.5, "GET /history/"),
}


async def _batch(proxy: FaultProxy, tmp_path, color: int, http_timeout: float = 10.0) -> list:
    batch = Batch(
        [Row(1, {"1.color": color})],
        tmp_path / "out",
        servers=[proxy.url],
        workflow=sleep_graph(0, milliseconds=10, steps=1),
        settings=BatchSettings(retries=RETRIES, http_timeout=http_timeout, prime=0),
    )
    return [result async for result in batch.results()]


async def _gateway_job(proxy: FaultProxy, tmp_path, color: int, http_timeout: float = 10.0):
    workflow = tmp_path / "job.json"
    workflow.write_text(json.dumps(sleep_graph(color, milliseconds=10, steps=1)))
    settings = settings_for(
        tmp_path,
        [proxy.url],
        workflows=(("job", str(workflow)),),
        retries=RETRIES,
        http_timeout=http_timeout,
    )
    gateway = InProcess(settings)
    await anyio.to_thread.run_sync(gateway.__enter__)  # the proxy answers on this loop
    try:
        headers = {"Authorization": f"Bearer {gateway.key()}"}
        async with httpx.AsyncClient(base_url=gateway.url, headers=headers, timeout=30) as http:
            posted = await http.post("/v1/jobs", json={"workflow": "job", "params": {}})
            assert posted.status_code == 202, posted.text

            async def ended() -> dict | None:
                job = (await http.get(f"/v1/jobs/{posted.json()['id']}")).json()
                return job if job["state"] in ("succeeded", "failed", "cancelled") else None

            job = await await_for(ended, timeout=120, what="the job to end")
            record = gateway.store.get_job(job["id"])
            return job, record
    finally:
        await anyio.to_thread.run_sync(gateway.__exit__)


@pytest.mark.parametrize("answer", list(BLOCKED_ANSWERS))
async def test_a_login_page_for_post_prompt_fails_the_batch_row_after_its_retries(
    server, unique, tmp_path, answer
):
    async with FaultProxy(
        server, block_prompts=10_000, blocked_body=BLOCKED_ANSWERS[answer]
    ) as proxy:
        (result,) = await _batch(proxy, tmp_path, unique())
    assert result.state == "failed", result
    assert f"gave up after {RETRIES + 1} attempts" in result.error
    assert f"POST /prompt from {proxy.url} answered" in result.error
    assert proxy.forwarded_prompt_posts == 0
    assert proxy.seen_prompt_posts == 2 * (RETRIES + 1)  # each attempt posts once more


@pytest.mark.parametrize("answer", list(BLOCKED_ANSWERS))
async def test_a_login_page_for_post_prompt_fails_the_gateway_job_after_its_retries(
    server, unique, tmp_path, answer
):
    async with FaultProxy(
        server, block_prompts=10_000, blocked_body=BLOCKED_ANSWERS[answer]
    ) as proxy:
        job, record = await _gateway_job(proxy, tmp_path, unique())
    assert job["state"] == "failed", job
    assert job["error"]["type"] == "ProtocolError"
    assert proxy.url not in json.dumps(job) and server not in json.dumps(job)
    assert record.attempts == RETRIES + 1
    assert proxy.forwarded_prompt_posts == 0
    assert proxy.seen_prompt_posts == 2 * (RETRIES + 1)


@pytest.mark.parametrize("fault", list(UNREADABLE))
async def test_an_answer_that_stays_unreadable_fails_the_batch_row_after_one_execution(
    server, unique, tmp_path, fault
):
    switches, http_timeout, route = UNREADABLE[fault]
    async with FaultProxy(server, **switches) as proxy:
        (result,) = await _batch(proxy, tmp_path, unique(), http_timeout)
    assert result.state == "failed", result
    assert route in result.error and "gave up" not in result.error
    assert proxy.forwarded_prompt_posts == 1  # followed by its prompt id, never posted again


@pytest.mark.parametrize("fault", list(UNREADABLE))
async def test_an_answer_that_stays_unreadable_fails_the_gateway_job_after_one_execution(
    server, unique, tmp_path, fault
):
    switches, http_timeout, _ = UNREADABLE[fault]
    async with FaultProxy(server, **switches) as proxy:
        job, record = await _gateway_job(proxy, tmp_path, unique(), http_timeout)
    assert job["state"] == "failed", job
    assert proxy.url not in json.dumps(job) and server not in json.dumps(job)
    assert record.attempts == 1
    assert proxy.forwarded_prompt_posts == 1
