"""The simulated ComfyUI (tests/support/simcomfy.py) at scale: 64 servers in this process serve a
batch through comfyfn's own client, each prompt running once; model loads and the process
form are checked too."""

from __future__ import annotations

import json
import subprocess
from collections import Counter

import httpx
import pytest

import comfyfn
from comfyfn.batch import Batch, BatchSettings, Row
from tests.support.checkout import module_env
from tests.support.graphs import sleep_graph
from tests.support.simcomfy import Settings, simulated_servers
from tests.support.simulated import SIMCOMFY

pytestmark = pytest.mark.anyio


async def test_a_batch_over_64_servers_runs_every_row_once():
    rows = [
        Row(i, {"prompt": f"a cat number {i}", "width": 64, "height": 64, "steps": 2})
        for i in range(1, 193)
    ]
    async with simulated_servers(64, Settings(job_ms=10, load_ms=5)) as cluster:
        batch = Batch(rows, None, servers=cluster.urls, settings=BatchSettings(prime=0))
        results = [result async for result in batch.results()]
        counters = [server.counters for server in cluster.servers]

    assert Counter(r.state for r in results) == {"done": len(rows)}, [r.error for r in results]
    runs: Counter[str] = Counter()
    for c in counters:
        runs.update(c.executions)
        assert c.finished["success"] == sum(c.executions.values())
        assert c.requests["POST /prompt"] == sum(c.executions.values())
        assert c.loads == (1 if c.executions else 0)  # one model set: loaded once per server
    assert set(runs.values()) == {1}, "a prompt ran twice"
    assert len(runs) == len(rows)
    assert {r.generation.prompt_id for r in results if r.generation} == set(runs)
    assert sum(1 for c in counters if c.executions) > 32  # the work was spread out


async def test_a_load_is_paid_only_when_the_model_set_changes():
    def graph(color: int, ckpt: str) -> dict:
        g = sleep_graph(color, milliseconds=5, steps=1)
        g["4"] = {
            "class_type": "ComfyfnLoadModel",
            "inputs": {"images": ["1", 0], "ckpt_name": ckpt, "load_milliseconds": 5},
        }
        g["2"]["inputs"]["images"] = ["4", 0]
        return g

    async with simulated_servers(1, Settings(job_ms=5)) as cluster:
        async with comfyfn.AsyncClient(cluster.urls[0]) as client:
            for color, ckpt in enumerate(["model-a", "model-a", "model-b", "model-a"]):
                await (await client.submit_graph(graph(color, f"{ckpt}.safetensors"))).result()
        assert cluster.servers[0].counters.loads == 3


async def test_an_identical_prompt_is_served_from_the_cache_as_comfyui_does():
    async with (
        simulated_servers(1, Settings(job_ms=5)) as cluster,
        comfyfn.AsyncClient(cluster.urls[0]) as client,
    ):
        first = await (await client.submit_graph(sleep_graph(7, milliseconds=5))).result()
        again = await (await client.submit_graph(sleep_graph(7, milliseconds=5))).result()
    assert first.cached_nodes == ()
    assert set(again.cached_nodes) == {"1", "2", "3"}
    assert again.images[0].filename == first.images[0].filename


async def test_a_held_server_starts_no_more_jobs_until_released():
    async with (
        simulated_servers(1, Settings(job_ms=5)) as cluster,
        comfyfn.AsyncClient(cluster.urls[0]) as client,
        httpx.AsyncClient(base_url=cluster.urls[0]) as http,
    ):
        (await http.post("/simcomfy/hold", json={"after": 1})).raise_for_status()
        jobs = [await client.submit_graph(sleep_graph(c, milliseconds=5)) for c in (1, 2, 3)]
        await jobs[0].result()  # the one it may start
        queue = await client.queue()
        assert len(queue["queue_pending"]) == 2 and not queue["queue_running"]
        assert sum(cluster.servers[0].counters.executions.values()) == 1
        (await http.post("/simcomfy/release")).raise_for_status()
        for job in jobs[1:]:
            await job.result()
        assert sum(cluster.servers[0].counters.executions.values()) == 3


def test_the_process_serves_n_ports_and_says_where():
    proc = subprocess.Popen(
        [*SIMCOMFY, "--ports", "3", "--job-ms", "5"],
        stdout=subprocess.PIPE,
        text=True,
        env=module_env(),
    )
    try:
        assert proc.stdout is not None
        started = json.loads(proc.stdout.readline())  # written once all ports listen
        assert started["pid"] == proc.pid and len(set(started["urls"])) == 3
        for url in started["urls"]:
            stats = httpx.get(f"{url}/system_stats", timeout=10).json()
            assert stats["system"]["comfyui_version"] == "0.3.75"
            counters = httpx.get(f"{url}/simcomfy/counters", timeout=10).json()
            assert counters["requests"] == {"GET /system_stats": 1, "GET /simcomfy/counters": 1}
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0
