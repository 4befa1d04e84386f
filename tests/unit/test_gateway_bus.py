"""The gateway's in-process event bus: a follower of a job is woken at once, sees the latest
state (never a backlog), hears that the queue changed, and is forgotten when it leaves."""

from __future__ import annotations

import asyncio

import pytest

from comfyfn.jobs.bus import JobBus, JobUpdate
from tests.support.job_records import job_record

pytestmark = pytest.mark.anyio


async def test_a_follower_is_woken_at_once_by_its_job_only():
    bus = JobBus()
    with bus.subscribe("job_1") as news:
        waiting = asyncio.create_task(news.wait(30))
        await asyncio.sleep(0)
        bus.publish(JobUpdate(job_record("job_2", state="running")))  # someone else's job
        await asyncio.sleep(0.01)
        assert not waiting.done()
        update = JobUpdate(job_record(state="running"))
        bus.publish(update)
        assert await asyncio.wait_for(waiting, 5) is True
        assert news.latest is update


async def test_a_slow_follower_sees_the_latest_update_not_a_backlog():
    bus = JobBus()
    with bus.subscribe("job_1") as news:
        for step in (0.25, 0.5, 0.75):
            bus.publish(JobUpdate(job_record(state="running", progress=step)))
        assert await news.wait(0) is True
        assert news.latest is not None and news.latest.job.progress == 0.75
        assert await news.wait(0.01) is False  # nothing new since


async def test_queue_changes_reach_the_followers_who_asked_once():
    bus = JobBus()
    with (
        bus.subscribe("job_1", queue=True) as first,
        bus.subscribe("job_2", queue=True) as second,
        bus.subscribe("job_3") as uninterested,
    ):
        bus.queue_changed()
        for news in (first, second):
            assert await news.wait(0) is True
            assert news.latest is None
            assert news.take_queue_changed() is True
            assert news.take_queue_changed() is False
        assert await uninterested.wait(0) is False


async def test_leaving_forgets_the_follower():
    bus = JobBus()
    with bus.subscribe("job_1"), bus.subscribe("job_1") as second:
        assert bus.followed() == 2
    assert bus.followed() == 0
    bus.publish(JobUpdate(job_record(state="running")))  # nobody listens: nothing kept
    assert second.latest is None


@pytest.mark.parametrize("number", ["²", "١", "٣", "+1", " 1", "01", "1_0", "-1", ""])
async def test_an_id_this_bus_did_not_write_is_unknown_not_an_error(number):
    """str.isdigit() says yes to "²" (int() refuses it) and int() reads "٣" as 3: only the
    ids the bus writes, ``<epoch>-<decimal>``, are looked up; any other is unknown (None:
    the caller replays the stored state)."""
    bus = JobBus()
    bus.publish(JobUpdate(job_record(state="running")))
    assert bus.since("job_1", f"{bus.epoch}-{number}") is None
    assert bus.since("job_1", f"{bus.epoch}-0") is not None  # what it writes still resolves
