"""A server that hangs (SIGSTOP) and resumes right after its jobs were moved off it: it runs
its queue at once, so the fleet's removal of those jobs must already be waiting for it.
On a simulated ComfyUI in a process of its own (tests/support/simcomfy.py), frozen for real."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from collections.abc import Iterator

import httpx
import pytest

from comfyfn import Workflow
from comfyfn.fleet import Fleet, FleetSettings, Moved, Ticket
from tests.support.checkout import module_env
from tests.support.fleet_runs import run_in_task, run_started
from tests.support.graphs import sleep_graph
from tests.support.polling import await_for
from tests.support.simcomfy import Settings, simulated_servers
from tests.support.simulated import SIMCOMFY

pytestmark = pytest.mark.anyio


@pytest.fixture
def frozen_server() -> Iterator[tuple[str, int]]:
    """One simulated server's URL and the pid of its process (resumed and ended after)."""
    args = [*SIMCOMFY, "--ports", "1", "--load-ms", "0"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=module_env())
    try:
        assert proc.stdout is not None
        started = json.loads(proc.stdout.readline())  # written once it listens
        yield started["urls"][0], proc.pid
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        proc.terminate()
        proc.wait(timeout=30)


async def test_jobs_moved_off_a_hung_server_do_not_run_there_when_it_resumes(frozen_server):
    url, pid = frozen_server
    # the health loop does not come round in this test: only the removal asked for when
    # the jobs moved can take them off the server before its queue reaches them
    settings = FleetSettings(prime=2, http_timeout=1.0, health_interval=600.0)
    running = Ticket(Workflow.load(sleep_graph(1, milliseconds=4000, steps=40)))
    queued = [Ticket(Workflow.load(sleep_graph(c, milliseconds=100, steps=1))) for c in (2, 3)]
    async with Fleet([url], settings) as fleet, httpx.AsyncClient(base_url=url) as http:
        runs = [await run_started(fleet, running)]
        for ticket in queued:
            runs.append(await run_in_task(fleet, ticket))

        async def held(jobs: int) -> bool:
            return (await http.get("/prompt")).json()["exec_info"]["queue_remaining"] == jobs

        await await_for(lambda: held(3), 30, "the running job and two queued on the server")
        os.kill(pid, signal.SIGSTOP)  # hangs: connections open, nothing answers
        outcomes = await asyncio.wait_for(asyncio.gather(*runs), 60)
        os.kill(pid, signal.SIGCONT)  # resumes the moment its jobs have moved
        assert all(isinstance(outcome, Moved) for outcome in outcomes), outcomes
        await await_for(lambda: held(0), 30, "the resumed server's queue run down")
        executions = (await http.get("/simcomfy/counters")).json()["executions"]
    assert [executions.get(t.prompt_id, 0) for t in queued] == [0, 0], executions


async def test_a_server_is_put_back_only_after_jobs_moved_off_it_meanwhile_are_removed():
    """A job moved off while the health loop's removal is on its way is not in that removal:
    the server is put back only after a removal that has it."""
    async with (
        simulated_servers(1, Settings(load_ms=0)) as cluster,
        Fleet(cluster.urls, FleetSettings(health_interval=0.05)) as fleet,
    ):
        url = fleet.servers[0]
        client, state = fleet.clients[url], fleet.pool.states[url]
        removed: list[set[str]] = []
        dequeue = client.delete_from_queue

        async def delete_from_queue(*prompt_ids: str) -> None:
            removed.append(set(prompt_ids))
            state.orphans.add("moved-meanwhile")  # another job moves off meanwhile
            await dequeue(*prompt_ids)

        back = asyncio.Event()
        fleet.on_health = lambda _url, up: back.set() if up else None
        client.delete_from_queue = delete_from_queue  # type: ignore[method-assign]
        fleet.pool.mark_down(url)
        state.orphans.add("moved-first")
        await asyncio.wait_for(back.wait(), 30)
    assert "moved-meanwhile" in set().union(*removed), removed
