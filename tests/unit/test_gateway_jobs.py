"""Following a job from a route (comfyfn.gateway.service) on a real SQLite store: woken by this
process's bus at once, by the store for other replicas' jobs, cancelled for a caller who left,
504 for one who waited too long, and the SSE view of a job moving up the queue."""

from __future__ import annotations

import asyncio
import dataclasses
import threading

import pytest

from comfyfn.gateway import service
from comfyfn.gateway.errors import ApiError
from comfyfn.gateway.registry import Registry
from comfyfn.gateway.runtime import Runtime
from comfyfn.gateway.settings import GatewaySettings
from comfyfn.jobs.bus import JobUpdate
from comfyfn.jobs.schema import NewFile
from comfyfn.jobs.store import Store
from comfyfn.storage import LocalStorage
from tests.support.polling import await_for

pytestmark = pytest.mark.anyio


@pytest.fixture
def runtime(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'g.db'}")
    settings = GatewaySettings(
        servers=("http://fake",), db_url=store.url, storage=tmp_path, sync_timeout=30
    )
    yield Runtime(settings, store, Registry(), LocalStorage(tmp_path))
    store.close()


def new_job(runtime: Runtime):
    return runtime.store.create_job(key_id="key_1", workflow="w", params={})[0]


async def still_here() -> bool:
    return False


async def following(runtime: Runtime, count: int = 1) -> None:
    """Wait until ``count`` callers follow their jobs on the bus."""

    async def subscribed() -> bool:
        return runtime.bus.followed() == count

    await await_for(subscribed, 10, f"{count} follower(s) of jobs on the bus")


async def seen_count(seen: list, count: int) -> None:
    async def enough() -> bool:
        return len(seen) >= count

    await await_for(enough, 10, f"{count} states of the followed job")


async def test_a_waiting_caller_is_woken_by_the_bus_at_once(runtime, monkeypatch):
    monkeypatch.setattr(service, "FALLBACK_POLL", 60.0)  # the store would be read far too late
    job = new_job(runtime)
    waiting = asyncio.create_task(service.wait_final(runtime, job, still_here))
    await following(runtime)
    done, files = runtime.store.complete_job(
        job.id, [NewFile("x.png", "image/png", 3, "e")], state="succeeded"
    )
    update = JobUpdate(done, files, (b"png",))
    runtime.bus.publish(update)
    assert await asyncio.wait_for(waiting, 10) is update
    assert await service.output_records(runtime, update) == list(files)
    assert await service.output_bytes(runtime, update) == [b"png"]  # not read back from storage


async def test_a_caller_who_wants_only_the_bytes_need_not_wait_for_storing(runtime, monkeypatch):
    monkeypatch.setattr(service, "FALLBACK_POLL", 60.0)
    job = runtime.store.update_job(new_job(runtime).id, state="running")
    waiting = asyncio.create_task(service.wait_final(runtime, job, still_here, images_suffice=True))
    wants_urls = asyncio.create_task(service.wait_final(runtime, job, still_here))
    await following(runtime, 2)
    in_hand = JobUpdate(job, (), (b"png",))  # the worker has the images, storing goes on
    runtime.bus.publish(in_hand)
    assert await asyncio.wait_for(waiting, 10) is in_hand
    assert await service.output_bytes(runtime, in_hand) == [b"png"]
    await asyncio.sleep(0.05)
    assert not wants_urls.done()  # a caller who wants URLs waits for the files' records
    done = runtime.store.update_job(job.id, state="succeeded")
    runtime.bus.publish(JobUpdate(done))
    assert (await asyncio.wait_for(wants_urls, 10)).job.state == "succeeded"


async def test_a_job_another_replica_ends_is_found_in_the_store(runtime, monkeypatch):
    monkeypatch.setattr(service, "FALLBACK_POLL", 0.05)
    job = new_job(runtime)
    waiting = asyncio.create_task(service.wait_final(runtime, job, still_here))
    await following(runtime)
    done, files = runtime.store.complete_job(
        job.id, [NewFile("x.png", "image/png", 3, "e")], state="succeeded"
    )  # and nothing published: another process did it
    update = await asyncio.wait_for(waiting, 10)
    assert update.job == done and update.files == () and update.contents == ()
    assert await service.output_records(runtime, update) == list(files)  # read from the store


async def test_a_caller_who_goes_away_cancels_the_job(runtime):
    job = new_job(runtime)

    async def gone() -> bool:
        return True

    with runtime.bus.subscribe(job.id) as news, pytest.raises(ApiError) as refused:
        await service.wait_final(runtime, job, gone)
    assert refused.value.status == 499
    assert runtime.store.get_job(job.id).state == "cancelled"
    assert news.latest.job.state == "cancelled"  # published for other followers


async def test_a_caller_waits_no_longer_than_the_sync_timeout(runtime):
    runtime.settings = dataclasses.replace(runtime.settings, sync_timeout=0.2)
    job = new_job(runtime)
    with pytest.raises(ApiError) as late:
        await asyncio.wait_for(service.wait_final(runtime, job, still_here), 10)
    assert late.value.status == 504 and f"/v1/jobs/{job.id}" in late.value.message


async def test_following_a_job_up_the_queue_to_its_end(runtime, monkeypatch):
    monkeypatch.setattr(service, "FALLBACK_POLL", 60.0)
    ahead, job = new_job(runtime), new_job(runtime)
    seen: list[tuple[str, float, int | None]] = []

    async def follow() -> None:
        async for current, position, _ in service.follow(runtime, job):
            seen.append((current.state, current.progress, position))

    following = asyncio.create_task(follow())
    await seen_count(seen, 1)
    await service.cancel_job(runtime, ahead.id)  # dequeued here: the queue changed
    await seen_count(seen, 2)
    running = runtime.store.update_job(job.id, state="running", progress=0.5)
    runtime.bus.publish(JobUpdate(running))
    await seen_count(seen, 3)
    runtime.bus.publish(JobUpdate(runtime.store.update_job(job.id, state="failed")))
    await asyncio.wait_for(following, 10)
    assert seen == [
        ("queued", 0.0, 1),
        ("queued", 0.0, 0),
        ("running", 0.5, None),
        ("failed", 0.5, None),
    ]


async def test_a_followed_job_s_progress_never_goes_back_to_the_store_s_older_value(
    runtime, monkeypatch
):
    """The store keeps progress only now and then: after 0.5 was shown (replayed, or
    published by this process), the stored 0.2 is not sent; the end is."""
    monkeypatch.setattr(service, "FALLBACK_POLL", 0.05)  # the store is read back at once
    job = runtime.store.update_job(new_job(runtime).id, state="running", progress=0.2)
    seen: list[tuple[str, float]] = []

    async def follow() -> None:
        async for current, _, _ in service.follow(runtime, job, known=("running", 0.5)):
            seen.append((current.state, current.progress))

    following = asyncio.create_task(follow())
    await asyncio.sleep(0.3)  # several reads of the store's 0.2, none sent
    assert seen == []
    runtime.bus.publish(JobUpdate(runtime.store.update_job(job.id, progress=0.7)))
    await seen_count(seen, 1)
    runtime.bus.publish(JobUpdate(runtime.store.update_job(job.id, state="succeeded")))
    await asyncio.wait_for(following, 10)
    assert seen == [("running", 0.7), ("succeeded", 0.7)]


async def test_each_state_followed_goes_with_the_id_of_the_event_it_is_as_new_as(
    runtime, monkeypatch
):
    """An update published while the follower reads the queue position is not claimed for
    the state read before it: a stream that sent the older state under the newer id would
    leave a client reconnecting with that id without the newer state."""
    monkeypatch.setattr(service, "FALLBACK_POLL", 60.0)
    job = new_job(runtime)
    inside, resume = threading.Event(), threading.Event()
    position = runtime.store.queue_position

    def held_position(job_id: str) -> int:
        inside.set()
        resume.wait(10)
        return position(job_id)

    monkeypatch.setattr(runtime.store, "queue_position", held_position)
    before = runtime.bus.last_id(job.id)
    seen: list[tuple[str, str]] = []

    async def follow() -> None:
        async for current, _, event_id in service.follow(runtime, job):
            seen.append((current.state, event_id))

    following = asyncio.create_task(follow())
    assert await asyncio.to_thread(inside.wait, 10)
    runtime.bus.publish(JobUpdate(runtime.store.update_job(job.id, state="running")))
    running_id = runtime.bus.last_id(job.id)
    resume.set()
    await seen_count(seen, 2)
    runtime.bus.publish(JobUpdate(runtime.store.update_job(job.id, state="failed")))
    await asyncio.wait_for(following, 10)
    assert seen == [("queued", before), ("running", running_id), ("failed", seen[2][1])]
    assert seen[2][1] == runtime.bus.last_id(job.id) != running_id
