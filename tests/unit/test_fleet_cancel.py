"""A cancel asked while a job's submission is under way (its prompt id known, the POST not yet
answered) reaches the prompt once the server has it: the delete sent at the cancel found
nothing to remove, so without this the prompt would wait in the queue and run for nobody.
On a simulated ComfyUI (tests/support/simcomfy.py) busy with a long job of its own."""

from __future__ import annotations

import asyncio

import pytest

from comfyfn import Workflow
from comfyfn.fleet import Cancelled, Fleet, FleetSettings, Ticket
from tests.support.fleet_runs import run_started
from tests.support.graphs import sleep_graph
from tests.support.simcomfy import Settings, simulated_servers

pytestmark = pytest.mark.anyio


async def test_a_cancel_asked_while_the_submission_is_under_way_reaches_the_prompt():
    async with simulated_servers(1, Settings(load_ms=0)) as cluster:
        server = cluster.servers[0]
        settings = FleetSettings(prime=1, http_timeout=5.0, health_interval=0.05)
        async with Fleet(cluster.urls, settings) as fleet:
            ahead = Ticket(Workflow.load(sleep_graph(1, milliseconds=120_000, steps=120)))
            ours = Ticket(Workflow.load(sleep_graph(2, milliseconds=100)))
            run_ahead = await run_started(fleet, ahead)  # busy: ours would wait behind it

            async def cancel_now(_url: str, _prompt_id: str) -> None:
                await fleet.cancel_all([ours])  # before the POST: nothing there to remove

            second = await fleet.slot(ours)
            assert second is not None
            try:
                async with asyncio.timeout(30):  # not the 120 s the job ahead holds the server
                    outcome = await fleet.run(ours, second, on_submit=cancel_now)
            finally:
                await fleet.cancel(ahead)
                async with asyncio.timeout(30):
                    await run_ahead
            # taken out of the queue by the cancel: Cancelled (for the next run, or ended by
            # its owner), not Lost (which would count against its retries)
            assert isinstance(outcome, Cancelled), outcome
            assert server.counters.requests["POST /prompt"] == 2  # ours reached the server...
            assert ours.prompt_id not in server.counters.executions  # ...and never ran
