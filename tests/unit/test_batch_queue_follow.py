"""Following a queued batch: each look counts the finished jobs and reads only the new ones
(from a little before the latest finish seen; all again when machines' clocks are further
apart), and an outage of the store is ridden through, said once."""

from __future__ import annotations

import asyncio

import pytest

from comfyfn.batch import Row
from comfyfn.batch.queued import CLOCK_SKEW, QueuedBatch, enqueue, load_workflow
from comfyfn.jobs.store import NewFile, Store
from tests.support.fake_clock import FakeClock


@pytest.fixture
def clock():
    return FakeClock(1_000_000.0)


@pytest.fixture
def store(tmp_path, clock):
    with Store(f"sqlite:///{tmp_path / 'q.db'}", clock=clock) as s:
        yield s


class Spy:
    """The store, counting how many rows each look reads; ``down`` looks fail as an
    outage would (``jobs_down`` reads of the finished jobs, after their ids were read); a
    follower that looks more than ``looks`` times is going round in circles."""

    def __init__(self, store: Store, looks: int = 1000) -> None:
        self.store, self.down, self.jobs_down, self.looks = store, 0, 0, looks
        self.withheld = 0  #: reads of the finished jobs that leave one record out
        self.between = lambda: None  #: done between counting the finished jobs and reading them
        self.read: list[int] = []

    def add_batch_jobs(self, batch, rows):
        return self.store.add_batch_jobs(batch, rows)

    def batch_progress(self, batch):
        self.looks -= 1
        assert self.looks > 0, "the follower looks again and again and never ends"
        if self.down:
            self.down -= 1
            raise ConnectionError("the store is down")
        return self.store.batch_progress(batch)

    def batch_finished(self, batch, since=None):
        got = self.store.batch_finished(batch, since)
        self.read.append(len(got))
        return got

    def batch_jobs(self, ids):
        self.between()
        if self.jobs_down:
            self.jobs_down -= 1
            raise ConnectionError("the store went down between two reads")
        got = self.store.batch_jobs(ids)
        if self.withheld and got:
            self.withheld -= 1
            return got[1:]
        return got


def enqueue_rows(store: Store, n: int) -> set[str]:
    items = [Row(i, {"prompt": f"cat {i}", "width": 64, "height": 64}) for i in range(1, n + 1)]
    keys, _ = asyncio.run(enqueue(store, "b", items, load_workflow("zimage-turbo"), "/out"))
    return keys


def finish(store: Store, n: int) -> None:
    for job in store.claim_jobs("w", limit=n):
        name = f"images/{job.params['stem']}.png"
        store.complete_job(
            job.id, [NewFile(name, "image/png", 1, "e")], state="succeeded", fence=job.claim
        )


async def follow(batch: QueuedBatch, steps) -> list[str]:
    """The results, doing ``steps`` (callables) one after each result."""
    states, todo = [], list(steps)
    async for result in batch.results():
        states.append(result.state)
        if todo:
            todo.pop(0)()
    return states


def test_each_look_reads_only_what_finished_since_the_last(store, clock):
    enqueue_rows(store, 100)
    finish(store, 10)
    spy = Spy(store)
    batch = QueuedBatch(spy, "b", poll=0)

    def later(n: int):
        def step() -> None:
            clock.now += CLOCK_SKEW * 2  # what finished before is out of the window
            finish(store, n)

        return step

    # after the 10 finished before, five rounds of 18: each look reads its round and the last
    steps = ([later(0)] * 9 + [later(18)]) + ([later(0)] * 17 + [later(18)]) * 5
    states = asyncio.run(follow(batch, steps))
    assert states == ["skipped"] * 10 + ["done"] * 90
    # never the whole batch again, but for its finish times once at the end
    assert spy.read == [10, 10 + 18, 36, 36, 36, 36, 100]


def test_a_finish_stamped_by_a_clock_far_behind_is_still_seen(store, clock):
    enqueue_rows(store, 3)
    finish(store, 1)
    batch = QueuedBatch(Spy(store), "b", poll=0)

    def behind() -> None:
        clock.now -= CLOCK_SKEW * 10  # another machine, its clock far behind
        finish(store, 2)

    assert asyncio.run(follow(batch, [behind])) == ["skipped", "done", "done"]


def test_a_follower_of_a_file_yields_its_own_rows_only(store):
    keys = enqueue_rows(store, 2)
    other = [Row(9, {"prompt": "another file's row", "width": 64, "height": 64})]
    asyncio.run(enqueue(store, "b", other, load_workflow("zimage-turbo"), "/out"))
    finish(store, 3)
    batch = QueuedBatch(Spy(store), "b", keys, poll=0)
    assert asyncio.run(follow(batch, [])) == ["skipped", "skipped"]
    assert batch.total == 2


def test_an_outage_of_the_store_is_ridden_through_and_said_once(store):
    enqueue_rows(store, 2)
    finish(store, 1)
    spy = Spy(store)
    events: list[tuple[str, object]] = []
    batch = QueuedBatch(
        spy,
        "b",
        poll=0,
        on_event=lambda kind, data: events.append((kind, data)),
        transient=lambda exc: isinstance(exc, ConnectionError),
    )

    def outage() -> None:
        spy.down = 5
        finish(store, 1)

    assert asyncio.run(follow(batch, [outage])) == ["skipped", "done"]
    kinds = [kind for kind, _ in events if kind != "result"]
    assert kinds == ["store_down", "store_up"]
    assert "ConnectionError: the store is down" in str(events[1][1])


def test_an_outage_between_reading_the_finished_ids_and_their_jobs_loses_no_row(store):
    enqueue_rows(store, 3)
    spy = Spy(store)
    batch = QueuedBatch(spy, "b", poll=0, transient=lambda exc: isinstance(exc, ConnectionError))

    def outage_mid_look() -> None:
        spy.jobs_down = 2
        finish(store, 2)

    finish(store, 1)
    assert asyncio.run(follow(batch, [outage_mid_look])) == ["skipped", "done", "done"]


def test_a_record_not_returned_is_read_again_at_the_next_look(store):
    enqueue_rows(store, 3)
    finish(store, 3)
    spy = Spy(store)
    spy.withheld = 1
    # the withheld one comes with the next look (not the first: so not "skipped")
    assert asyncio.run(follow(QueuedBatch(spy, "b", poll=0), [])) == ["skipped", "skipped", "done"]


def test_an_error_that_is_not_an_outage_is_raised(store):
    enqueue_rows(store, 1)
    spy = Spy(store)
    spy.down = 1
    with pytest.raises(ConnectionError):
        asyncio.run(follow(QueuedBatch(spy, "b", poll=0), []))


def one_done_one_failed(store: Store, rows: int):
    """A batch of ``rows``, all claimed: the first done, the second failed, the others
    running; its follower, and the events it says."""
    enqueue_rows(store, rows)
    first, failing, *running = store.claim_jobs("w", limit=rows)
    store.complete_job(first.id, [], state="succeeded", fence=first.claim)
    store.update_job(failing.id, state="failed", error={"message": "x"}, fence=failing.claim)
    events: list = []
    batch = QueuedBatch(Spy(store), "b", poll=0, on_event=lambda *e: events.append(e))
    return failing, running, batch, events


def test_a_row_queued_again_while_followed_is_reported_as_it_ends_again(store, clock):
    """``batch retry`` (or a submission remaking lost files) from another shell puts a
    failed row back in the queue after this follower read it: the follower must not end on
    its old failure while it runs again, but report how it ends the second time."""
    failing, others, batch, events = one_done_one_failed(store, 4)

    def retried_while_the_others_end() -> None:
        clock.now += 1
        assert store.retry_batch("b") == 1
        for job in others:
            store.complete_job(job.id, [], state="succeeded", fence=job.claim)

    def the_retried_row_ends() -> None:
        clock.now += 1
        (again,) = store.claim_jobs("w2", limit=1)
        assert again.id == failing.id
        store.complete_job(again.id, [], state="succeeded", fence=again.claim)

    steps = [lambda: None, retried_while_the_others_end, lambda: None, the_retried_row_ends]
    states = asyncio.run(follow(batch, steps))
    assert states == ["skipped", "failed", "done", "done", "done"]
    assert batch.finished[failing.id].state == "done"
    assert {r.state for r in batch.finished.values()} == {"done"}
    [(_, withdrawn)] = [e for e in events if e[0] == "queued_again"]
    assert withdrawn.state == "failed" and withdrawn.key == batch.finished[failing.id].key


def test_a_row_queued_again_and_ended_between_two_looks_takes_back_its_old_result(store, clock):
    failing, (last,), batch, events = one_done_one_failed(store, 3)

    def retried_and_ended_again() -> None:
        clock.now += 1
        assert store.retry_batch("b") == 1
        (again,) = store.claim_jobs("w2", limit=1)
        assert again.id == failing.id
        store.complete_job(again.id, [], state="succeeded", fence=again.claim)
        store.complete_job(last.id, [], state="succeeded", fence=last.claim)

    states = asyncio.run(follow(batch, [lambda: None, retried_and_ended_again]))
    assert sorted(states) == sorted(["skipped", "failed", "done", "done"])
    said = [(kind, result.state) for kind, result in events if kind != "store_down"]
    assert said.count(("queued_again", "failed")) == 1
    assert said.index(("queued_again", "failed")) < len(said) - 1  # before its new result


def test_the_progress_of_a_followed_batch_takes_back_a_row_queued_again(capsys):
    """The summary's counts come from the progress: a failure later retried must not be
    counted as well as the row's new end (the command would exit 1 on a batch all done)."""
    from comfyfn.batch import JobResult
    from comfyfn.cli._progress import BatchProgress

    class Followed:
        servers = ()

    failed = JobResult("k1", 1, "row 1", "failed", (), error="x")
    with BatchProgress(Followed(), 2) as progress:  # type: ignore[arg-type]
        progress.on_event("result", JobResult("k0", 0, "row 0", "done", ()))
        progress.on_event("result", failed)
        progress.on_event("queued_again", failed)
        progress.on_event("result", JobResult("k1", 1, "row 1", "done", ()))
    assert progress.counted == {"done": 2, "failed": 0}
    assert "row 1 was queued again" in capsys.readouterr().err


def test_a_job_queued_again_between_the_count_and_the_read_is_not_said_until_it_ends(store, clock):
    """Counted finished, then queued again (``batch retry``) before its record is read: the
    record read is not an end, so nothing is said of it until it ends again."""
    failing, (last,), _, _ = one_done_one_failed(store, 3)
    spy = Spy(store)
    batch = QueuedBatch(spy, "b", poll=0)

    def retried_once() -> None:
        spy.between = lambda: None
        clock.now += 1
        assert store.retry_batch("b") == 1

    spy.between = retried_once

    def the_others_end() -> None:
        clock.now += 1
        (again,) = store.claim_jobs("w2", limit=1)
        store.complete_job(again.id, [], state="succeeded", fence=again.claim)
        store.complete_job(last.id, [], state="succeeded", fence=last.claim)

    states = asyncio.run(follow(batch, [the_others_end]))
    assert sorted(states) == ["done", "done", "skipped"]  # never 'running'
    assert batch.finished[failing.id].state == "done"
