"""The worker between its store (real SQLite) and a stand-in fleet: a job submitted
with a slot free starts without a claim, one queued in this process is claimed at once (a
wake-up is never lost), every change is published on the bus, a success stored in one go."""

from __future__ import annotations

import asyncio
import threading

import pytest
import sqlalchemy as sa

from comfyfn.errors import ComfyError
from comfyfn.fleet import Cancelled, Done
from comfyfn.jobs import Worker
from comfyfn.jobs import worker as worker_module
from comfyfn.jobs.schema import jobs_t
from comfyfn.result import Generation, Image, Timings
from tests.support.fake_fleet import SERVER, FakeFleet, new_job, started
from tests.support.polling import await_until
from tests.support.tests_png import image_bytes

pytestmark = pytest.mark.anyio


def spy_on_publish(worker: Worker) -> list:
    """Every update the worker publishes, in order."""
    published = []
    real = worker.bus.publish

    def publish(update) -> None:
        published.append(update)
        real(update)

    worker.bus.publish = publish  # type: ignore[method-assign]  # a spy on the worker's bus
    return published


def succeeding_fleet() -> tuple[FakeFleet, Image]:
    """A fake fleet whose runs succeed (once let finish) with one small image."""
    fleet = FakeFleet()
    image = Image(data=image_bytes((8, 8), "red"), node_id="3")
    fleet.outcome = lambda ticket: Done(
        Generation(ticket.prompt_id, SERVER, (image,), {}, {}, Timings(0.1, 0.1, 0.2)),
        SERVER,
        0.2,
    )
    return fleet, image


@pytest.fixture(autouse=True)
def no_idle_poll(monkeypatch):
    """Without a wake-up the worker would look at the queue again only after a minute."""
    monkeypatch.setattr(worker_module, "IDLE_POLL", 60.0)


async def test_a_job_queued_in_this_process_is_claimed_at_once(tmp_path, monkeypatch):
    fleet = FakeFleet()
    async with started(tmp_path, fleet, monkeypatch) as (worker, spy):
        job = new_job(worker.store)
        worker.job_created()
        await await_until(lambda: fleet.runs, 10, "the job runs")
        assert spy.calls == [0, 1]
        assert worker.store.get_job(job.id).claimed_by == worker.settings.worker_id


async def test_a_wake_up_during_a_claim_is_not_lost(tmp_path, monkeypatch):
    fleet = FakeFleet()
    async with started(tmp_path, fleet, monkeypatch) as (worker, spy):
        spy.pause_at = 2
        worker.job_created()  # a claim that finds nothing, and is held after looking
        await asyncio.to_thread(spy.inside.wait, 10)
        new_job(worker.store)
        worker.job_created()  # while that claim is still out
        spy.resume.set()
        await await_until(lambda: fleet.runs, 10, "the job runs")
        assert spy.calls == [0, 0, 1]


async def test_a_job_submitted_with_a_slot_free_runs_without_a_claim(tmp_path, monkeypatch):
    fleet = FakeFleet(slots=1)
    async with started(tmp_path, fleet, monkeypatch) as (worker, spy):
        first = await worker.submit(key_id="key_1", workflow="sleep", params={})
        assert first.state == "running" and first.claimed_by == worker.settings.worker_id
        await await_until(lambda: fleet.runs, 10, "the job runs")
        assert spy.calls == [0]  # the first look only
        assert worker.store.get_job(first.id).prompt_id == fleet.runs[0]  # stored before it ran
        second = await worker.submit(key_id="key_1", workflow="sleep", params={})
        assert second.state == "queued"  # the one slot is taken
        fleet.finish.set()
        await await_until(lambda: len(fleet.runs) == 2, 10, "the second job runs")
        assert spy.calls[:2] == [0, 1]  # claimed as soon as the slot was free


async def test_a_job_submitted_behind_a_queued_one_waits_its_turn(tmp_path, monkeypatch):
    fleet = FakeFleet()
    async with started(tmp_path, fleet, monkeypatch) as (worker, _):
        ahead = new_job(worker.store)  # queued by another replica, say
        behind = await worker.submit(key_id="key_1", workflow="sleep", params={})
        assert behind.state == "queued"  # no jumping the queue
        await await_until(lambda: len(fleet.runs) == 2, 10, "both jobs run")
        assert worker.store.get_job(ahead.id).prompt_id == fleet.runs[0]  # in order


async def test_a_submit_whose_caller_is_cancelled_still_starts_its_job(tmp_path, monkeypatch):
    fleet = FakeFleet()
    async with started(tmp_path, fleet, monkeypatch) as (worker, _):
        inside, resume = threading.Event(), threading.Event()
        real = worker.store.create_job

        def slow_create(**kwargs):
            inside.set()
            if not resume.wait(30):
                raise TimeoutError("the test never resumed the insert")
            return real(**kwargs)

        monkeypatch.setattr(worker.store, "create_job", slow_create)
        caller = asyncio.create_task(worker.submit(key_id="key_1", workflow="sleep", params={}))
        await asyncio.to_thread(inside.wait, 10)
        caller.cancel()  # the caller goes away while the job is being stored
        resume.set()
        with pytest.raises(asyncio.CancelledError):
            await caller
        await await_until(lambda: fleet.runs, 10, "the stored job runs all the same")
        monkeypatch.setattr(worker.store, "create_job", real)
        again = await worker.submit(key_id="key_1", workflow="sleep", params={})
        assert again.state == "running"  # the slot held for the first one was handed on


async def test_progress_is_published_at_every_step_and_stored_now_and_then(tmp_path, monkeypatch):
    fleet = FakeFleet(steps=4)
    async with started(tmp_path, fleet, monkeypatch) as (worker, _):
        published = spy_on_publish(worker)
        job = new_job(worker.store)
        worker.job_created()
        await await_until(lambda: len(published) >= 6, 10, "the steps are published")
        assert [(u.job.state, u.job.progress) for u in published] == [
            ("running", 0.0),  # claimed
            ("running", 0.0),  # submitted
            ("running", 0.25),
            ("running", 0.5),
            ("running", 0.75),
            ("running", 1.0),
        ]
        assert worker.store.get_job(job.id).progress == 0.0  # under a second: not stored yet


async def test_a_success_is_published_in_hand_then_stored_in_one_go(tmp_path, monkeypatch):
    fleet, image = succeeding_fleet()
    async with started(tmp_path, fleet, monkeypatch) as (worker, _):
        published = spy_on_publish(worker)
        job = new_job(worker.store)
        worker.job_created()
        await await_until(lambda: fleet.runs, 10, "the job runs")
        fleet.finish.set()
        await await_until(
            lambda: published and published[-1].job.state == "succeeded", 10, "the job ends"
        )
        in_hand, final = published[-2:]
        assert in_hand.job.state == "running" and in_hand.files == ()  # not stored yet...
        assert in_hand.contents == (image.png_bytes(),)  # ...but the bytes are there
        assert final.job.state == "succeeded" and final.job.progress == 1.0
        # the run's times, as the fleet measured them (Timings.executed; Done.seconds)
        assert (final.job.executed, final.job.turnaround) == (0.1, 0.2)
        (record,) = final.files
        assert final.job.outputs == [record.id] and final.contents == in_hand.contents
        assert worker.store.get_job(job.id) == final.job
        assert worker.store.get_file(record.id) == record
        assert (tmp_path / "files" / job.id / "0.png").read_bytes() == final.contents[0]


async def test_a_stop_as_a_wake_up_arrives_leaves_nothing_claimed(tmp_path, monkeypatch):
    """The claim loop ends with stop() even when woken in the same breath (on Python 3.11
    asyncio.wait_for swallowed that cancellation: the loop ran on, claimed jobs just handed
    back and ran them with nobody to stop them)."""
    fleet = FakeFleet()
    async with started(tmp_path, fleet, monkeypatch) as (worker, spy):
        job = new_job(worker.store)
        looks = len(spy.calls)
        worker.job_created()  # the wake-up, then the stop before the loop has run again
        await worker.stop()
        assert all(task.done() for task in worker._tasks)  # nothing runs on past stop()
        assert len(spy.calls) == looks  # no look at the queue after the stop
        stored = worker.store.get_job(job.id)
        assert (stored.state, stored.claimed_by) == ("queued", None)
        assert not fleet.runs


async def test_a_stop_whose_caller_is_cancelled_still_hands_back_and_a_second_waits(
    tmp_path, monkeypatch
):
    """The stop's caller gives up (a second Ctrl-C, a shutdown timeout): the hand-back goes
    on; another stop() meanwhile returns only once it is done, not at once."""
    fleet = FakeFleet()  # its runs hold until told to finish: the job stays running here
    async with started(tmp_path, fleet, monkeypatch) as (worker, _):
        job = new_job(worker.store)
        worker.job_created()
        await await_until(lambda: fleet.runs, 10, "the job runs")
        inside, resume = threading.Event(), threading.Event()
        release = worker.store.release_job

        def held_release(*args, **kwargs):
            inside.set()
            resume.wait(10)
            return release(*args, **kwargs)

        monkeypatch.setattr(worker.store, "release_job", held_release)
        first = asyncio.create_task(worker.stop())
        assert await asyncio.to_thread(inside.wait, 10), "the hand-back did not begin"
        first.cancel()
        second = asyncio.create_task(worker.stop())
        done, _ = await asyncio.wait([first, second], timeout=0.2)
        assert not done  # both wait for the hand-back, the cancelled caller too
        resume.set()
        await second
        await asyncio.wait([first])
        assert first.cancelled()  # its cancellation is raised once the jobs are back
        stored = worker.store.get_job(job.id)
        assert (stored.state, stored.claimed_by) == ("queued", None)  # handed back


async def test_a_claim_loop_that_fails_is_logged_and_started_again(tmp_path, monkeypatch, caplog):
    """Once: logged and started again, the worker still healthy; twice within a minute: not
    healthy (/readyz 503) until the older failure is a minute old."""
    monkeypatch.setattr(worker_module, "_RESTART_PAUSE", 0.01)
    fleet = FakeFleet()
    async with started(tmp_path, fleet, monkeypatch) as (worker, _):
        claim_jobs, failures = worker.store.claim_jobs, 2

        def fails(*args, **kwargs):
            nonlocal failures
            if failures:
                failures -= 1
                raise RuntimeError("a bug in the claim")
            return claim_jobs(*args, **kwargs)

        monkeypatch.setattr(worker.store, "claim_jobs", fails)
        failures = 1
        worker.job_created()
        await await_until(lambda: failures == 0, 10, "the claim to fail")
        await await_until(lambda: len(worker._loop_failures.get("claim", [])) == 1, 10, "noted")
        assert worker.loops_failing() == [] and worker.healthy()  # once is not "failing"
        failures = 2
        new_job(worker.store)
        worker.job_created()
        await await_until(lambda: fleet.runs, 10, "the job runs once the loop is back")
        assert "the worker's claim loop failed; starting it again" in caplog.text
        assert "a bug in the claim" in caplog.text  # the traceback names the error
        assert worker.loops_failing() == ["claim"] and not worker.healthy()
        monkeypatch.setattr(worker_module, "LOOP_FAILURE_WINDOW", 0.0)
        assert worker.loops_failing() == [] and worker.healthy()


async def test_our_own_job_claimed_again_goes_on_in_its_task_under_the_new_claim(
    tmp_path, monkeypatch
):
    """After the worker's heartbeats failed past stale_after (a long store outage), its next
    claim can take its own running job: the job runs once, and ends under the new claim."""
    fleet, image = succeeding_fleet()
    async with started(tmp_path, fleet, monkeypatch) as (worker, _):
        job = new_job(worker.store)
        worker.job_created()
        await await_until(lambda: fleet.runs, 10, "the job runs")
        with worker.store._write() as conn:  # no heartbeat for ever: the job looks abandoned
            conn.execute(sa.update(jobs_t).where(jobs_t.c.id == job.id).values(heartbeat_at=0))
        worker.job_created()
        await await_until(lambda: worker.store.get_job(job.id).claims == 2, 10, "claimed again")
        fleet.finish.set()
        await await_until(
            lambda: worker.store.get_job(job.id).state == "succeeded", 10, "the job ends"
        )
        assert len(fleet.runs) == 1  # one task ran it
        assert (tmp_path / "files" / job.id / "0.png").read_bytes() == image.png_bytes()


async def test_a_cancel_the_server_answers_absent_is_left_to_the_job_s_follower(
    tmp_path, monkeypatch
):
    """The job's prompt id is known but its server answers "absent": its POST may be under
    way (the follower cancels the prompt once it lands) or it just ended there. The task is
    not cut off: the follower sees how the job ends, here cancelled by its owner."""
    fleet = FakeFleet()  # its cancel answers "absent"
    fleet.outcome = lambda ticket: Cancelled(ComfyError("dequeued"), SERVER)
    async with started(tmp_path, fleet, monkeypatch) as (worker, _):
        job = new_job(worker.store)
        worker.job_created()
        await await_until(lambda: fleet.runs, 10, "the job runs")
        worker.store.request_cancel(job.id)  # as the cancel route does first
        assert await worker.cancel(job.id)
        assert worker.running[job.id].cancelling() == 0  # the follower decides
        fleet.finish.set()
        await await_until(
            lambda: worker.store.get_job(job.id).state == "cancelled", 10, "the job ends"
        )


class UnansweredCancelFleet(FakeFleet):
    """Its server does not answer the first cancel; the second one ends the run cancelled."""

    def __init__(self) -> None:
        super().__init__()
        self.cancels = 0
        self.outcome = lambda ticket: Cancelled(ComfyError("interrupted"), SERVER)

    async def cancel(self, ticket) -> str:
        self.cancels += 1
        if self.cancels == 1:
            raise ComfyError("the server did not answer in time")
        self.finish.set()
        return "interrupted"


async def test_a_cancel_the_server_does_not_answer_is_asked_again_not_cut_off(
    tmp_path, monkeypatch
):
    """Cutting the job's task off would leave its prompt to run on the server for nobody:
    the job is followed on, and the next ask (the heartbeat's, for a job whose cancel the
    store holds) ends it cancelled, by its owner."""
    fleet = UnansweredCancelFleet()
    async with started(tmp_path, fleet, monkeypatch) as (worker, _):
        job = new_job(worker.store)
        worker.job_created()
        await await_until(lambda: fleet.runs, 10, "the job runs")
        worker.store.request_cancel(job.id)
        assert await worker.cancel(job.id)
        assert worker.running[job.id].cancelling() == 0  # still followed
        assert worker.store.get_job(job.id).state == "running"
        assert await worker.cancel(job.id)  # as the heartbeat asks again
        await await_until(
            lambda: worker.store.get_job(job.id).state == "cancelled", 10, "the job ends"
        )
        assert fleet.cancels == 2


async def test_a_worker_given_nothing_runs_batch_rows_and_leaves_api_jobs_queued(tmp_path):
    """``comfyfn batch --work``: a plain worker (no API jobs, metrics or webhooks) runs a
    batch row to its files in the batch's folder; an API job ahead of it stays queued for a
    worker that can bind it, and handing one to it is refused."""
    from comfyfn.batch import BatchSettings, Row
    from comfyfn.batch.queued import enqueue, load_workflow
    from comfyfn.jobs import Store

    fleet, image = succeeding_fleet()
    fleet.finish.set()
    out = tmp_path / "out"
    with Store(f"sqlite:///{tmp_path / 'q.db'}") as store:
        api = new_job(store, priority=9)
        row = Row(1, {"prompt": "a lantern", "width": 64, "height": 64})
        await enqueue(store, "b", [row], load_workflow("zimage-turbo"), str(out))
        worker = Worker(store, BatchSettings().worker([SERVER], "here"), fleet=fleet)
        await worker.start()
        try:
            worker.job_created()
            await await_until(
                lambda: store.batch_counts("b").get("succeeded") == 1, 10, "the row is done"
            )
            with pytest.raises(ComfyError, match="batch rows only"):
                await worker.submit(key_id="key_1", workflow="sleep", params={})
        finally:
            await worker.stop()
        waiting = store.get_job(api.id)
        assert waiting is not None and waiting.state == "queued"
    assert (out / "images" / "000001.png").read_bytes() == image.png_bytes()


async def test_the_gateway_s_worker_sends_webhooks_and_counts_in_its_metrics(tmp_path, monkeypatch):
    from comfyfn.gateway import webhooks

    sent = []

    async def deliver(url, body, secret, *, allow_private):
        sent.append((url, len(secret), allow_private))
        raise ComfyError("the receiver is down")

    monkeypatch.setattr(webhooks, "deliver_webhook", deliver)
    fleet, _ = succeeding_fleet()
    async with started(tmp_path, fleet, monkeypatch) as (worker, _):
        hooked = new_job(worker.store, webhook="http://127.0.0.1:9/hook")
        plain = new_job(worker.store)
        worker.job_created()
        fleet.finish.set()
        registry = worker.metrics.registry  # the gateway's prometheus metrics

        def counted() -> bool:
            failed = registry.get_sample_value("comfyfn_failures_total", {"kind": "WebhookFailed"})
            return failed == 1.0

        await await_until(counted, 10, "the failed webhook is counted")
        ended = {"workflow": "sleep", "state": "succeeded"}
        assert registry.get_sample_value("comfyfn_job_seconds_count", ended) == 2.0
        assert {worker.store.get_job(j.id).state for j in (hooked, plain)} == {"succeeded"}
    assert sent == [("http://127.0.0.1:9/hook", 32, False)]  # the job without one sends none
