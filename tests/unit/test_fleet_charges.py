"""Which jobs a failed server's moves are charged to: the job that ran there (or was next),
never the jobs queued behind it — so a job that crashes its server again and again fails
on its own retries without taking the others with it. On simulated servers
(tests/support/simcomfy.py)."""

from __future__ import annotations

import asyncio

import pytest

from comfyfn import Workflow
from comfyfn.fleet import Fleet, FleetSettings, Moved, Ticket
from tests.support.fleet_runs import run_in_task, run_started
from tests.support.graphs import sleep_graph
from tests.support.polling import await_until
from tests.support.simcomfy import Settings, simulated_servers

pytestmark = pytest.mark.anyio


async def test_a_failed_server_charges_the_move_to_its_running_job_only():
    async with simulated_servers(1, Settings(load_ms=0)) as cluster:
        settings = FleetSettings(prime=1, http_timeout=2.0, health_interval=0.05)
        async with Fleet(cluster.urls, settings) as fleet:
            running = Ticket(Workflow.load(sleep_graph(1, milliseconds=60_000, steps=60)))
            behind = Ticket(Workflow.load(sleep_graph(2, milliseconds=60_000, steps=60)))
            run_first = await run_started(fleet, running)
            run_second = await run_in_task(fleet, behind)
            await _queued(cluster.servers[0], 2)
            await cluster.stop_server(0)  # the server dies under the running job
            outcomes = await asyncio.wait_for(asyncio.gather(run_first, run_second), 60)
    assert all(isinstance(outcome, Moved) for outcome in outcomes), outcomes
    assert (running.attempts, behind.attempts) == (1, 0)


async def _queued(server, jobs: int) -> None:
    """Until ``server`` holds ``jobs`` (running and pending)."""

    def held() -> bool:
        return server.queue_info()["exec_info"]["queue_remaining"] >= jobs

    await await_until(held, 30, f"{jobs} jobs on the server")
