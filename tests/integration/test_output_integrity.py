"""Damaged, garbled and slow answers between the client and a real ComfyUI.

The real engine makes the images; tests/support/faultproxy.py breaks what a real server never
breaks: it truncates /view bodies, swaps them for HTML, answers /history with non-JSON
text, or holds /history past the client's HTTP timeout. A broken image is never returned as
a success: it is fetched again, or the job fails with an error naming what was wrong.
"""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

import comfyfn
from comfyfn.client._job import JobSettings, JobSpec, follow, post_prompt
from comfyfn.errors import CorruptOutput, ProtocolError
from comfyfn.events import Succeeded
from comfyfn.result import image_problem
from tests.support.faultproxy import FaultProxy
from tests.support.graphs import trivial_graph

pytestmark = [pytest.mark.engine, pytest.mark.anyio]

SIZE = (64, 48)  # trivial_graph's EmptyImage


async def _run(url: str, color: int, **client) -> comfyfn.Generation:
    """One model-free job; validation off, so only the job's own requests are made."""
    async with comfyfn.AsyncClient(url, **client) as c:
        job = await c.submit_graph(trivial_graph(color), validate=False)
        return await job.result()


def _whole(gen: comfyfn.Generation) -> None:
    (image,) = gen.images
    assert image_problem(image.data) is None
    assert image.size == SIZE


async def _jobs_in_history(server: str) -> int:
    async with comfyfn.AsyncClient(server) as c:
        return len(await c.history())


async def test_truncated_view_is_fetched_again(server, unique):
    async with FaultProxy(server, truncate_views=1) as proxy:
        gen = await _run(proxy.url, unique())
    _whole(gen)
    assert proxy.faults == [("truncate_views", "/view")]
    assert proxy.seen_view_gets == 2


async def test_always_truncated_view_fails_naming_the_output(server, unique):
    async with FaultProxy(server, truncate_views=100) as proxy:
        with pytest.raises(CorruptOutput) as info:
            await _run(proxy.url, unique(), retries=2)
    err = info.value
    assert err.node_id == "2" and (err.filename or "").startswith("trivial_") and err.prompt_id
    assert "is cut short" in err.reason and "fetched 3 times" in err.reason
    assert f"of job {err.prompt_id} is unusable" in str(err)
    assert proxy.seen_view_gets == 3


async def test_html_instead_of_an_image(server, unique):
    async with FaultProxy(server, garble_views=1) as proxy:
        _whole(await _run(proxy.url, unique()))
        assert proxy.seen_view_gets == 2
        proxy.garble_views = 100
        with pytest.raises(CorruptOutput, match="the body is not an image"):
            await _run(proxy.url, unique(), retries=1)


async def test_non_json_history_is_retried_then_named(server, unique):
    before = await _jobs_in_history(server)
    async with FaultProxy(server, garble_history=1) as proxy:
        _whole(await _run(proxy.url, unique()))
        assert proxy.faults[0][0] == "garble_history"
        proxy.garble_history = 1000
        with pytest.raises(ProtocolError) as info:
            await _run(proxy.url, unique(), retries=1)
    err = info.value
    assert err.method == "GET" and err.path.startswith("/history/")
    assert f"GET {err.path} from {proxy.url} answered something that is not JSON" in str(err)
    assert proxy.seen_prompt_posts == 2  # one per job: garbage never makes a job run twice
    assert await _jobs_in_history(server) == before + 2


async def test_slow_history_is_waited_out_without_running_twice(server, unique):
    before = await _jobs_in_history(server)
    # (a timeout the other requests meet with room on a loaded machine; a delay well past it)
    timeout = httpx.Timeout(2.5, connect=5.0)
    async with FaultProxy(server, history_delay=6.0, delay_history=2) as proxy:
        start = time.monotonic()
        _whole(await _run(proxy.url, unique(), timeout=timeout))
        assert time.monotonic() - start >= 5.0  # two attempts timed out first
        assert [f for f, _ in proxy.faults] == ["delay_history", "delay_history"]
        assert proxy.seen_prompt_posts == 1

        proxy.delay_history = None  # now every /history is slower than the timeout
        with pytest.raises(comfyfn.TransportError, match=r"GET /history/\S+ to .* ReadTimeout"):
            await _run(proxy.url, unique(), timeout=timeout, retries=1)
        assert proxy.seen_prompt_posts == 2
    assert await _jobs_in_history(server) == before + 2


async def _run_with_size(server: str, color: int, size: tuple[int, int]):
    """A job whose images must be ``size`` (the client's own check, given a wrong size)."""
    async with comfyfn.AsyncClient(server) as c:
        session, socket = await c._connection()
        settings = JobSettings(client_id=c.client_id, expect_size=size)
        job = JobSpec(str(uuid.uuid4()), trivial_graph(color), {}, settings)
        await post_prompt(session, job.graph, job.prompt_id, settings)
        return [event async for event in follow(session, socket, job, None)]


async def test_expected_size_is_checked_on_real_images(server, unique):
    events = await _run_with_size(server, unique(), SIZE)
    assert isinstance(events[-1], Succeeded)
    with pytest.raises(CorruptOutput) as info:
        await _run_with_size(server, unique(), (64, 64))
    assert (info.value.expected_size, info.value.actual_size) == ((64, 64), SIZE)
    assert "it is 64x48 but 64x64 was expected" in str(info.value)
