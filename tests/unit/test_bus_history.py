"""The bus's event ids, its per-job history for reconnecting clients (``Last-Event-ID``) and
its throttled previews (at most ~4 a second per job, the latest wins)."""

from __future__ import annotations

import asyncio
import functools

import pytest

from comfyfn.jobs import bus as bus_module
from comfyfn.jobs.bus import (
    PREVIEW_INTERVAL,
    BusEvent,
    JobBus,
    JobPreview,
    JobUpdate,
    Subscription,
)
from comfyfn.jobs.schema import JobRecord
from tests.support.fake_clock import FakeClock
from tests.support.job_records import job_record

pytestmark = pytest.mark.anyio


record = functools.partial(job_record, state="running")  #: a running job's record


def job(event: BusEvent) -> JobRecord:
    """The job of an update the bus numbered (failing the test if it is a preview)."""
    assert isinstance(event.item, JobUpdate), event
    return event.item.job


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
    assert missed is not None and [job(e).state for e in missed] == ["succeeded"]
    assert missed[0].id == bus.last_id("job_1") != seen
    everything = bus.since("job_1", f"{bus.epoch}-0") or []
    assert [job(e).progress for e in everything] == [0.25, 0.5, 0.75, 1.0]
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
    bus.publish(JobUpdate(record(progress=0.0)))
    first = bus.last_id("job_1")
    for i in range(1, 10):
        bus.publish(JobUpdate(record(progress=i / 10)))
    assert bus.since("job_1", first) is None  # events after it were dropped
    recent = bus.since("job_1", f"{bus.epoch}-6")
    assert recent is not None and [job(e).progress for e in recent] == [0.6, 0.7, 0.8, 0.9]


async def test_only_the_most_recently_active_jobs_keep_a_history(monkeypatch):
    monkeypatch.setattr(bus_module, "HISTORY_JOBS", 2)
    bus = JobBus()
    for job_id in ("job_1", "job_2", "job_3"):
        bus.publish(JobUpdate(record(job_id)))
    assert bus.since("job_1", f"{bus.epoch}-0") == []  # forgotten: nothing kept
    assert bus.last_id("job_1") == f"{bus.epoch}-0"
    assert len(bus.since("job_3", f"{bus.epoch}-0") or []) == 1


def preview_step(event: BusEvent | None) -> int | None:
    """The step of a preview the bus delivered (failing the test if it is something else)."""
    assert event is not None and isinstance(event.item, JobPreview), event
    return event.item.step


async def next_preview(news: Subscription) -> BusEvent:
    """The next preview delivered to ``news`` (the test fails if none comes within 5 s)."""
    while (preview := news.take_preview()) is None:
        assert await news.wait(5) is True, "no preview delivered"
    return preview


async def test_previews_are_throttled_and_the_latest_wins():
    """40 previews, one every 1/32 s of the bus's (fake) clock: one goes at once, then one
    per interval (one arriving when the interval is over goes at once, even with one held
    back), and the latest, held back, goes when its interval is over."""
    clock = FakeClock()
    bus = JobBus(clock)
    got: list[tuple[float, int | None]] = []
    with bus.subscribe("job_1") as news:
        for step in range(40):
            clock.now = 1000.0 + step / 32
            bus.preview("job_1", step, b"img%d" % step, "image/jpeg")
            if (preview := news.take_preview()) is not None:
                got.append((clock(), preview_step(preview)))
        assert [step for _, step in got] == [0, 8, 16, 24, 32]  # 33…39 held back
        clock.advance(1 / 32)  # the interval after 32 is over: the held-back one is due
        got.append((clock(), preview_step(await next_preview(news))))  # sent by its timer
    sent = [0, 8, 16, 24, 32, 39]
    assert got == [(1000.0 + i * PREVIEW_INTERVAL, step) for i, step in enumerate(sent)]


async def test_the_history_keeps_only_the_latest_preview_and_previews_end_with_the_job():
    clock = FakeClock()
    bus = JobBus(clock)
    bus.publish(JobUpdate(record(progress=0.1)))

    def kept_previews() -> list[tuple[int | None, bytes]]:
        kept = bus.since("job_1", f"{bus.epoch}-0")
        assert kept is not None
        return [(e.item.step, e.item.data) for e in kept if isinstance(e.item, JobPreview)]

    with bus.subscribe("job_1") as news:
        bus.preview("job_1", 1, b"first", "image/png")
        clock.advance(PREVIEW_INTERVAL)
        bus.preview("job_1", 2, b"second", "image/png")  # at once: replaces "first"
        assert kept_previews() == [(2, b"second")]
        bus.preview("job_1", 3, b"third", "image/png")  # held back
        assert preview_step(news.take_preview()) == 2
        clock.advance(PREVIEW_INTERVAL)
        assert preview_step(await next_preview(news)) == 3  # sent by its timer
        assert kept_previews() == [(3, b"third")]
        clock.advance(PREVIEW_INTERVAL / 2)
        bus.preview("job_1", 4, b"late", "image/png")  # held back for PREVIEW_INTERVAL / 2...
        bus.publish(JobUpdate(record(state="succeeded", progress=1.0)))  # ...and dropped
        clock.advance(PREVIEW_INTERVAL)
        # not a margin: asyncio runs timers in deadline order, and this one falls due after
        # the held-back preview's would have (PREVIEW_INTERVAL / 2 after it was scheduled)
        await asyncio.sleep(PREVIEW_INTERVAL)
        assert news.take_preview() is None
    after = bus.since("job_1", f"{bus.epoch}-0")
    assert after is not None and isinstance(after[-1].item, JobUpdate)
    assert kept_previews() == []  # none once final


async def test_the_history_keeps_updates_without_their_output_bytes():
    bus = JobBus()
    with bus.subscribe("job_1") as news:
        update = JobUpdate(record(state="succeeded", progress=1.0), contents=(b"x" * 1000,))
        bus.publish(update)
        assert news.latest is update  # a live follower gets the bytes
    (kept,) = bus.since("job_1", f"{bus.epoch}-0") or []
    assert isinstance(kept.item, JobUpdate) and kept.item.contents == ()
    assert kept.item.job == update.job


async def test_the_state_a_client_has_shown_is_the_latest_update_up_to_its_id():
    bus = JobBus()
    bus.publish(JobUpdate(record(progress=0.25)))
    bus.publish(JobUpdate(record(progress=0.5)))
    at_half = bus.last_id("job_1")
    bus.preview("job_1", 3, b"png", "image/png")  # a preview after it changes nothing shown
    bus.publish(JobUpdate(record(progress=0.75)))
    assert bus.shown("job_1", at_half) == ("running", 0.5)
    assert bus.shown("job_1", bus.last_id("job_1")) == ("running", 0.75)
    assert bus.shown("job_1", f"{bus.epoch}-0") is None  # nothing seen yet
    assert bus.shown("job_1", "0badc0de-2") is None  # an id of another process
    assert bus.shown("job_9", at_half) is None  # a job this bus knows nothing of
