"""POST /prompt is never retried blindly: a lost answer is resolved by looking the id up."""

from __future__ import annotations

import pytest

import comfyfn
from tests.support.faultproxy import FaultProxy

pytestmark = [pytest.mark.engine, pytest.mark.anyio]


async def _history_size(server: str) -> int:
    async with comfyfn.AsyncClient(server) as c:
        return len(await c.history())


async def test_lost_answer_is_not_resubmitted(server, unique):
    before = await _history_size(server)
    async with FaultProxy(server, drop_answers=1) as proxy, comfyfn.AsyncClient(proxy.url) as c:
        gen = await c.generate("p", seed=unique(), size=(64, 64))
    assert proxy.seen_prompt_posts == 1  # the client found its job instead of posting again
    assert proxy.forwarded_prompt_posts == 1
    assert gen.images[0].width == 64
    assert await _history_size(server) == before + 1


async def test_lost_request_is_resubmitted_once(server, unique):
    before = await _history_size(server)
    async with FaultProxy(server, drop_requests=1) as proxy, comfyfn.AsyncClient(proxy.url) as c:
        gen = await c.generate("p", seed=unique(), size=(64, 64))
    assert proxy.seen_prompt_posts == 2  # the server never had it: posting again is safe
    assert proxy.forwarded_prompt_posts == 1
    assert gen.images
    assert await _history_size(server) == before + 1


async def test_persistent_loss_gives_a_clear_error(server, unique):
    async with (
        FaultProxy(server, drop_requests=100) as proxy,
        comfyfn.AsyncClient(proxy.url, retries=2) as c,
    ):
        with pytest.raises(comfyfn.TransportError, match=r"POST /prompt .* kept failing"):
            await c.generate("p", seed=unique(), size=(64, 64))
    assert proxy.seen_prompt_posts == 3
    assert proxy.forwarded_prompt_posts == 0
