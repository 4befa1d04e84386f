"""The bus's event ids, its per-job history for reconnecting clients (``Last-Event-ID``) and
its throttled previews (at most ~4 a second per job, the latest wins)."""

from __future__ import annotations

import asyncio
import functools
import itertools

import pytest
from job_records import job_record

from comfyfn.gateway import bus as bus_module
from comfyfn.gateway.bus import PREVIEW_INTERVAL, JobBus, JobPreview, JobUpdate

pytestmark = pytest.mark.anyio


record = functools.partial(job_record, state="running")  #: a running job's record


async def test_events_are_numbered_and_a_reconnect_gets_what_it_missed():
    bus = JobBus()
    assert bus.last_id("job_1") == f"{bus.epoch}-0"
    assert bus.since("job_1", f"{bus.epoch}-0") == []  # nothing happened here yet
    for step in (0.25, 0.5, 0.75):
        bus.publish(JobUpdate(record(progress=step)))
        bus.publish(JobUpdate(record("job_2", progress=step)))  # numbered apart from job_1
    seen = bus.last_id("job_1")
    assert seen.startswith(f"{bus.epoch}-")
    bus.publish(JobUpdate(record(state="succeeded", progress=1.0)))
    missed = bus.since("job_1", seen)
    assert missed is not None and [e.item.job.state for e in missed] == ["succeeded"]
    assert missed[0].id == bus.last_id("job_1") != seen
    everything = bus.since("job_1", f"{bus.epoch}-0")
    assert [e.item.job.progress for e in everything] == [0.25, 0.5, 0.75, 1.0]
    ids = [e.seq for e in everything]
    assert ids == sorted(ids) and len(set(ids)) == 4


async def test_ids_the_history_cannot_answer_fall_back_to_the_store():
    bus = JobBus()
    bus.publish(JobUpdate(record()))
    assert bus.since("job_1", "0badc0de-1") is None  # another process (replica, restart)
    assert bus.since("job_1", "not an id") is None
    assert bus.since("job_9", f"{bus.epoch}-5") is None  # a job whose history is gone


async def test_a_long_history_keeps_the_latest_events_and_knows_what_it_dropped(monkeypatch):
    monkeypatch.setattr(bus_module, "HISTORY", 4)
    bus = JobBus()
    first = None
    for i in range(10):
        bus.publish(JobUpdate(record(progress=i / 10)))
        first = first or bus.last_id("job_1")
    assert bus.since("job_1", first) is None  # events after it were dropped
    recent = bus.since("job_1", f"{bus.epoch}-6")
    assert recent is not None and [e.item.job.progress for e in recent] == [0.6, 0.7, 0.8, 0.9]


async def test_only_the_most_recently_active_jobs_keep_a_history(monkeypatch):
    monkeypatch.setattr(bus_module, "HISTORY_JOBS", 2)
    bus = JobBus()
    for job_id in ("job_1", "job_2", "job_3"):
        bus.publish(JobUpdate(record(job_id)))
    assert bus.since("job_1", f"{bus.epoch}-0") == []  # forgotten: nothing kept
    assert bus.last_id("job_1") == f"{bus.epoch}-0"
    assert len(bus.since("job_3", f"{bus.epoch}-0") or []) == 1


async def test_previews_are_throttled_and_the_latest_wins():
    """Slow by design (~1 s): it measures the throttle in real time, as the SSE stream sees
    it (the bus schedules on the event loop's clock, which a test cannot fake)."""
    bus = JobBus()
    loop = asyncio.get_running_loop()
    got: list[tuple[float, int | None]] = []
    with bus.subscribe("job_1") as news:

        async def follower() -> None:  # woken by each delivery, as the SSE stream is
            while not got or got[-1][1] != 39:
                await news.wait(5)
                if (preview := news.take_preview()) is not None:
                    got.append((loop.time(), preview.item.step))

        following = asyncio.create_task(follower())
        for step in range(40):  # 40 previews over ~1 s: every 25 ms
            bus.preview("job_1", step, b"img%d" % step, "image/jpeg")
            await asyncio.sleep(0.025)
        try:
            await asyncio.wait_for(following, 5 * PREVIEW_INTERVAL)
        except TimeoutError:
            pytest.fail(f"the last preview never came: {got}")
    assert got[0][1] == 0  # the first one at once
    assert got[-1][1] == 39  # the latest one, held back, comes in the end
    gaps = [b - a for (a, _), (b, _) in itertools.pairwise(got)]
    assert min(gaps) >= PREVIEW_INTERVAL - 0.01, gaps  # at most one per interval
    assert 3 <= len(got) <= 6, got  # ~1 s of previews: 4 or 5 sent (load may delay some)


async def test_the_history_keeps_only_the_latest_preview_and_previews_end_with_the_job():
    """Slow by design (~1 s): three waits past the real-time preview interval, so that a
    preview goes at once, one is held back, and a late one is dropped by the job's end."""
    bus = JobBus()
    bus.publish(JobUpdate(record(progress=0.1)))
    bus.preview("job_1", 1, b"first", "image/png")
    await asyncio.sleep(PREVIEW_INTERVAL + 0.1)
    bus.preview("job_1", 2, b"second", "image/png")
    bus.preview("job_1", 3, b"third", "image/png")  # held back, replaced "second"
    await asyncio.sleep(PREVIEW_INTERVAL + 0.1)
    kept = bus.since("job_1", f"{bus.epoch}-0")
    assert kept is not None
    previews = [e.item for e in kept if isinstance(e.item, JobPreview)]
    assert [(p.step, p.data) for p in previews] == [(3, b"third")]
    bus.preview("job_1", 4, b"late", "image/png")  # held back...
    bus.publish(JobUpdate(record(state="succeeded", progress=1.0)))  # ...and dropped
    await asyncio.sleep(PREVIEW_INTERVAL + 0.1)
    after = bus.since("job_1", f"{bus.epoch}-0")
    assert after is not None and isinstance(after[-1].item, JobUpdate)
    assert not [e for e in after if isinstance(e.item, JobPreview)]  # none once final


async def test_the_history_keeps_updates_without_their_output_bytes():
    bus = JobBus()
    with bus.subscribe("job_1") as news:
        update = JobUpdate(record(state="succeeded", progress=1.0), contents=(b"x" * 1000,))
        bus.publish(update)
        assert news.latest is update  # a live follower gets the bytes
    (kept,) = bus.since("job_1", f"{bus.epoch}-0") or []
    assert isinstance(kept.item, JobUpdate) and kept.item.contents == ()
    assert kept.item.job == update.job
