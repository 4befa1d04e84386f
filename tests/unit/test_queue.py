from __future__ import annotations

from comfyfn.client._lookup import queue_position


def test_queue_position_counts_jobs_ahead(sample):
    queue = sample("get_queue_busy.json")
    running = queue["queue_running"][0][1]
    assert queue_position(queue, running) == 0
    pending = sorted(queue["queue_pending"], key=lambda item: item[0])
    for i, item in enumerate(pending):
        assert queue_position(queue, item[1]) == 1 + i
    assert queue_position(queue, "nope") is None
