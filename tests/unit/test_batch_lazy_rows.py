"""Rows are read as the servers take jobs, never all at once: the first job is submitted
after a handful of rows, and the rows read never run ahead of the results by more than the
slots and the lookahead (so memory stays flat however long the input). On a simulated
ComfyUI (tests/support/simcomfy.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from comfyfn.batch import Batch, BatchSettings, Row
from tests.support.simcomfy import Settings, SimServer, simulated_servers

pytestmark = pytest.mark.anyio

LOOKAHEAD = 4
PRIME = 1


class CountedRows:
    """Rows read one at a time, noting how many were read before the server's first POST."""

    def __init__(self, server: SimServer, total: int) -> None:
        self.server, self.total = server, total
        self.read = 0
        self.before_first_submit = 0

    def __iter__(self) -> Iterator[Row]:
        for index in range(1, self.total + 1):
            if self.server.counters.requests["POST /prompt"] == 0:
                self.before_first_submit += 1
            self.read += 1
            yield Row(index, {"prompt": f"a cat number {index}", "width": 64, "height": 64})


async def test_rows_are_read_only_as_far_ahead_as_the_slots_and_the_lookahead():
    async with simulated_servers(1, Settings(job_ms=1, load_ms=0)) as cluster:
        rows = CountedRows(cluster.servers[0], 60)
        settings = BatchSettings(prime=PRIME, lookahead=LOOKAHEAD)
        batch = Batch(rows, None, servers=cluster.urls, settings=settings)
        ahead = []
        results = 0
        async for result in batch.results():
            assert result.state == "done", result.error
            results += 1
            ahead.append(rows.read - results)
    slots = PRIME + 1
    assert results == rows.total
    assert rows.before_first_submit <= slots + LOOKAHEAD + 1, rows.before_first_submit
    assert max(ahead) <= slots + LOOKAHEAD + 1, max(ahead)
