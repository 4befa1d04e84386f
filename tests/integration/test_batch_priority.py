"""Rows with a higher ``priority`` run before the rows that were waiting ahead of them."""

from __future__ import annotations

import asyncio

import pytest

from comfyfn.batch import Batch, BatchSettings, Row
from tests.support.graphs import sleep_graph

pytestmark = pytest.mark.engine


def test_high_priority_rows_overtake_the_rows_waiting_ahead_of_them(server, unique):
    # One server, nothing queued behind the running job: the rows wait in the pool, and
    # the two urgent ones (last in the file) go first once the first job is running
    # (500 ms: all eight rows are read long before it ends, even on a loaded machine).
    rows = [Row(i, {"1.color": unique()}) for i in range(1, 7)]
    rows += [Row(i, {"1.color": unique()}, priority=5) for i in (7, 8)]
    settings = BatchSettings(prime=0, lookahead=32)

    async def go() -> list[int]:
        batch = Batch(
            rows,
            None,
            servers=[server],
            workflow=sleep_graph(0, milliseconds=500),
            settings=settings,
        )
        order = []
        async for result in batch.results():
            assert result.state == "done", result.error
            order.append(result.row)
        return order

    order = asyncio.run(asyncio.wait_for(go(), 120))
    assert sorted(order) == list(range(1, 9))
    assert set(order[1:3]) == {7, 8}, order  # right after the job that was already running
