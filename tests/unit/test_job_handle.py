"""The job handle: submit → AsyncJob / Job with events(), result(), cancel(), attach().

Every test runs the real client against :class:`tests.support.fake_comfy.FakeComfy` (recorded
ComfyUI answers, a queue and a history) through ``transport=``; the websocket cannot
connect, so jobs are followed by polling (tests/support/sockets.py replays the socket).
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import httpx
import pytest

import comfyfn
from comfyfn import AsyncClient, AsyncJob, Client, Job
from comfyfn.events import Failed, NodeFinished, Queued, Started, Stopped, Succeeded
from tests.support.fake_comfy import GRAPH, SERVER, FakeComfy
from tests.support.polling import await_until
from tests.support.sockets import NoSocket

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def no_websocket(monkeypatch):
    monkeypatch.setattr(AsyncClient, "_socket_class", NoSocket)


def kinds(events) -> list[str]:
    return [type(e).__name__ for e in events]


async def collect(job: AsyncJob) -> list:
    return [event async for event in job.events()]


# -- submit, events, result -----------------------------------------------------------------


async def test_submit_returns_once_queued_then_the_job_is_followed():
    fake = FakeComfy()
    async with AsyncClient(SERVER, transport=fake.transport()) as c:
        job = await c.submit_graph(GRAPH, validate=False)
        assert (job.prompt_id in fake.pending, job.server) == (True, SERVER)
        assert fake.calls == [("POST", "/prompt")]  # nothing followed yet
        events = await collect(job)
    assert kinds(events) == ["Queued", "Started", "NodeFinished", "Succeeded"]
    assert events[0] == Queued(job.prompt_id, 0)
    assert events[2] == NodeFinished(job.prompt_id, "2", events[2].output, "SaveImage")
    generation = events[-1].generation
    assert (generation.prompt_id, generation.server, generation.workflow) == (
        job.prompt_id,
        SERVER,
        GRAPH,
    )
    assert generation.images[0].filename == "t_00001_.png"


async def test_queued_counts_the_jobs_ahead_from_the_queue():
    fake = FakeComfy(hold="pending")
    fake.queue_job("ahead-running", GRAPH, running=True)
    fake.queue_job("ahead-pending", GRAPH)
    async with AsyncClient(SERVER, transport=fake.transport()) as c:
        job = await c.submit_graph(GRAPH, validate=False)
        assert await c.queue_position(job.prompt_id) == 2
        async with contextlib.aclosing(job.events()) as events:
            assert await anext(events) == Queued(job.prompt_id, 2)
    assert fake.pending == ["ahead-pending"]  # leaving early dequeued ours, and only ours


async def test_result_after_events_and_events_again_ask_the_server_nothing():
    fake = FakeComfy()
    async with AsyncClient(SERVER, transport=fake.transport()) as c:
        job = await c.submit_graph(GRAPH, validate=False)
        *_, last = await collect(job)
        calls = len(fake.calls)
        assert await job.result() is last.generation
        assert await collect(job) == [last]
        assert len(fake.calls) == calls
        assert "Succeeded" in repr(job)


@pytest.mark.parametrize(
    ("recorded", "final", "error"),
    [
        ("history_execution_error.json", Failed, comfyfn.ExecutionFailed),
        ("history_interrupted.json", Stopped, comfyfn.Interrupted),
    ],
)
async def test_a_job_that_fails_ends_with_its_event_and_result_raises(recorded, final, error):
    fake = FakeComfy(finish_with=recorded)
    async with AsyncClient(SERVER, transport=fake.transport()) as c:
        job = await c.submit_graph(GRAPH, validate=False)
        events = await collect(job)
        assert isinstance(events[-1], final) and isinstance(events[-1].error, error)
        with pytest.raises(error) as info:
            await job.result()
    assert info.value is events[-1].error and info.value.prompt_id == job.prompt_id
    if final is Failed:
        assert (info.value.node_id, info.value.class_type) == ("1", "VAELoader")
    else:
        assert (info.value.class_type, info.value.lost) == ("ImageBlur", False)


async def test_a_job_removed_from_the_queue_elsewhere_ends_lost():
    fake = FakeComfy(hold="pending")
    async with AsyncClient(SERVER, transport=fake.transport()) as c:
        job = await c.submit_graph(GRAPH, validate=False)
        fake.pending.remove(job.prompt_id)  # someone else deleted it
        events = await collect(job)
    assert kinds(events) == ["Queued", "Stopped"]
    assert events[-1].error.lost and "removed from the queue" in str(events[-1].error)


# -- cancel ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hold", "outcome", "route"),
    [("pending", "dequeued", "/queue"), ("running", "interrupted", "/interrupt")],
)
async def test_cancel_dequeues_or_interrupts_and_the_events_end_stopped(hold, outcome, route):
    fake = FakeComfy(hold=hold)
    async with AsyncClient(SERVER, transport=fake.transport()) as c:
        job = await c.submit_graph(GRAPH, validate=False)
        events = job.events()
        assert isinstance(await anext(events), Queued)
        if hold == "running":
            assert isinstance(await anext(events), Started)
        assert await job.cancel() == outcome
        rest = [event async for event in events]
    assert isinstance(rest[-1], Stopped)
    assert rest[-1].error.lost is (hold == "pending")  # a dequeued job is gone from the server
    assert fake.posted(route)[0] in ({"delete": [job.prompt_id]}, {"prompt_id": job.prompt_id})
    assert job.prompt_id not in fake.pending + fake.running


async def test_cancel_of_a_finished_job_finds_nothing():
    fake = FakeComfy()
    async with AsyncClient(SERVER, transport=fake.transport()) as c:
        job = await c.submit_graph(GRAPH, validate=False)
        await job.result()
        assert await job.cancel() == "absent"
    assert fake.posted("/queue") == fake.posted("/interrupt") == []


@pytest.mark.parametrize(("cancel_on_exit", "interrupts"), [(True, 1), (False, 0)])
async def test_leaving_events_early_cancels_unless_told_otherwise(cancel_on_exit, interrupts):
    fake = FakeComfy(hold="running")
    async with AsyncClient(SERVER, transport=fake.transport()) as c:
        job = await c.submit_graph(GRAPH, validate=False, cancel_on_exit=cancel_on_exit)
        assert job.cancel_on_exit is cancel_on_exit
        async with contextlib.aclosing(job.events()) as events:
            async for event in events:
                if isinstance(event, Started):
                    break
    assert fake.count("POST", "/interrupt") == interrupts


async def test_cancelling_the_task_awaiting_result_cancels_the_job():
    fake = FakeComfy(hold="running")
    async with AsyncClient(SERVER, transport=fake.transport()) as c:
        job = await c.submit_graph(GRAPH, validate=False)
        task = asyncio.create_task(job.result())

        def seen_running() -> bool:
            return fake.count("GET", "/queue") >= 2

        await await_until(seen_running, 10, "the job to be seen running")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert fake.posted("/interrupt") == [{"prompt_id": job.prompt_id}]


async def test_a_submission_cancelled_midway_is_cancelled_on_the_server():
    fake = FakeComfy(hold="pending")

    class SlowAnswer(httpx.AsyncBaseTransport):
        """The server queues the job, but its answer takes ages."""

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            response = fake(request)
            if request.url.path == "/prompt":
                await asyncio.sleep(30)
            return response

    async with AsyncClient(SERVER, transport=SlowAnswer()) as c:
        task = asyncio.create_task(c.submit_graph(GRAPH, validate=False))
        await await_until(lambda: fake.pending, 10, "the job to be queued")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    ((body),) = fake.posted("/queue")
    assert fake.pending == [] and body == {"delete": [fake.posted("/prompt")[0]["prompt_id"]]}


# -- deadlines ------------------------------------------------------------------------------


@pytest.mark.parametrize(("hold", "route"), [("running", "/interrupt"), ("pending", "/queue")])
async def test_the_deadline_cancels_the_job_then_raises(hold, route):
    fake = FakeComfy(hold=hold)
    async with AsyncClient(SERVER, transport=fake.transport()) as c:
        job = await c.submit_graph(GRAPH, validate=False, timeout=0.3)
        start = time.monotonic()
        with pytest.raises(comfyfn.GenerationTimeout) as info:
            await job.result()
        elapsed = time.monotonic() - start
        with pytest.raises(comfyfn.GenerationTimeout):  # the job is over: the same error
            await collect(job)
    assert 0.2 <= elapsed < 2.0
    assert (info.value.prompt_id, info.value.timeout) == (job.prompt_id, 0.3)
    assert len(fake.posted(route)) == 1  # cancelled once, before the error


async def test_the_client_job_timeout_is_the_default_deadline():
    fake = FakeComfy(hold="running")
    async with AsyncClient(SERVER, transport=fake.transport(), job_timeout=0.2) as c:
        with pytest.raises(comfyfn.GenerationTimeout, match=r"within 0\.2s"):
            await c.run(GRAPH, validate=False)


# -- stream: a final event, or an error -----------------------------------------------------


async def test_stream_ends_with_the_final_event_when_the_server_reports_one():
    for recorded, final in [("history_ok.json", Succeeded), ("history_interrupted.json", Stopped)]:
        fake = FakeComfy(finish_with=recorded)
        async with AsyncClient(SERVER, transport=fake.transport()) as c:
            events = [e async for e in c.stream_graph(GRAPH, validate=False)]
        assert isinstance(events[0], Queued) and isinstance(events[-1], final)
        assert sum(isinstance(e, Succeeded | Failed | Stopped) for e in events) == 1


async def test_stream_raises_what_keeps_a_job_from_ending():
    fake = FakeComfy(hold="running")
    async with AsyncClient(SERVER, transport=fake.transport()) as c:
        seen = []
        with pytest.raises(comfyfn.GenerationTimeout):
            async for event in c.stream_graph(GRAPH, validate=False, timeout=0.2):
                seen.append(event)
    assert kinds(seen) == ["Queued", "Started"]  # no final event: the error instead

    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async with AsyncClient(SERVER, transport=httpx.MockTransport(refused)) as c:
        with pytest.raises(comfyfn.ServerUnreachable, match=SERVER):
            async for _event in c.stream_graph(GRAPH, validate=False):
                pytest.fail("no event from a server that cannot be reached")


async def test_one_caller_follows_a_job_at_a_time():
    fake = FakeComfy(hold="running")
    async with AsyncClient(SERVER, transport=fake.transport()) as c:
        job = await c.submit_graph(GRAPH, validate=False)
        async with contextlib.aclosing(job.events()) as first:
            await anext(first)
            with pytest.raises(comfyfn.ComfyError, match="already being followed"):
                await job.result()


# -- attach: jobs submitted elsewhere -------------------------------------------------------


async def test_attach_follows_a_queued_job_without_submitting_it():
    prompt_id = "elsewhere-1"
    fake = FakeComfy()
    fake.queue_job(prompt_id, GRAPH)
    async with AsyncClient(SERVER, transport=fake.transport()) as c:
        job = await AsyncJob.attach(c, prompt_id)
        generation = await job.result()
    assert fake.count("POST", "/prompt") == 0
    assert (generation.prompt_id, generation.workflow) == (prompt_id, GRAPH)  # read from /queue
    assert generation.images[0].provenance["prompt_id"] == prompt_id


async def test_attach_to_a_finished_job_reads_its_graph_and_outputs_from_history():
    fake = FakeComfy("done-1")
    async with AsyncClient(SERVER, transport=fake.transport()) as c:
        events = await collect(await c.attach("done-1"))
    assert kinds(events) == ["Queued", "Started", "NodeFinished", "Succeeded"]
    assert events[-1].generation.workflow == GRAPH and fake.count("GET", "/view") == 1


async def test_attach_to_a_job_the_server_does_not_know_ends_lost():
    fake = FakeComfy()
    async with AsyncClient(SERVER, transport=fake.transport()) as c:
        for workflow in (GRAPH, None):  # given, or looked for on the server (in vain)
            job = await c.attach("never-seen", workflow=workflow)
            with pytest.raises(comfyfn.Interrupted) as info:
                await job.result()
            assert info.value.lost
    assert fake.posts == []  # not submitted, and nothing to cancel


async def test_a_job_left_on_the_server_is_followed_again_after_a_transport_error():
    fake = FakeComfy()
    async with AsyncClient(SERVER, transport=fake.transport(), retries=0) as c:
        job = await c.submit_graph(GRAPH, validate=False, cancel_on_exit=False)
        fake.set("GET", f"/history/{job.prompt_id}", httpx.Response(503))
        with pytest.raises(comfyfn.HTTPStatusError):
            await job.result()
        del fake.overrides[("GET", f"/history/{job.prompt_id}")]
        generation = await job.result()  # the same job, followed again
    assert generation.prompt_id == job.prompt_id
    assert fake.count("POST", "/prompt") == 1 and fake.posted("/interrupt") == []


# -- the sync twins -------------------------------------------------------------------------


def test_the_sync_job_handle():
    fake = FakeComfy()
    fake.queue_job("elsewhere-2", GRAPH)
    with Client(SERVER, transport=fake.transport()) as c:
        job = c.submit_graph(GRAPH, validate=False)
        assert isinstance(job, Job) and job.server == SERVER and job.cancel_on_exit
        assert kinds(job.events()) == ["Queued", "Started", "NodeFinished", "Succeeded"]
        assert job.result().prompt_id == job.prompt_id
        assert job.cancel() == "absent"
        other = Job.attach(c, "elsewhere-2")
        assert other.result().workflow == GRAPH
        assert repr(other).startswith("<Job elsewhere-2")


def test_closing_a_sync_event_stream_cancels_its_job():
    fake = FakeComfy(hold="running")
    with Client(SERVER, transport=fake.transport()) as c:
        events = c.stream_graph(GRAPH, validate=False)
        assert isinstance(next(events), Queued)
        assert isinstance(next(events), Started)
        events.close()
        ((body),) = fake.posted("/interrupt")
    assert fake.running == [] and body == {"prompt_id": fake.posted("/prompt")[0]["prompt_id"]}


def test_generate_binds_z_image_turbo_and_records_provenance():
    from comfyfn.workflow import zimage_turbo

    fake = FakeComfy(object_info=dict(zimage_turbo().definitions))
    with Client(SERVER, transport=fake.transport()) as c:
        generation = c.generate("旗袍", seed=7, size=(64, 64), steps=2)
    (body,) = fake.posted("/prompt")
    sampler = next(n for n in body["prompt"].values() if n["class_type"] == "KSampler")
    assert (sampler["inputs"]["seed"], sampler["inputs"]["steps"]) == (7, 2)
    assert generation.seed == 7 and generation.params["prompt"] == "旗袍"
    provenance = generation.images[0].provenance
    assert (provenance["seed"], provenance["server"]) == (7, SERVER)
