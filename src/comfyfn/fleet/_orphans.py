"""Orphans: jobs moved off a server that failed or hung, and their removal from it.

A moved job's prompt id is remembered as an orphan of its server, whose removal is asked for
at once (with a client without read timeout: a hung server reads it first when it resumes);
the server is :meth:`Orphans.recovered` only once a removal of every orphan is answered (the
one running interrupted), so a moved job does not run there too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from comfyfn.client import AsyncClient, queue_ids
from comfyfn.errors import ComfyError
from comfyfn.fleet.pool import Pool

__all__ = ["Orphans", "withdraw_waiting"]

log = logging.getLogger("comfyfn.fleet")


class Orphans:
    """The orphans of ``pool``'s servers (kept in each server's state) and their removals;
    ``patient_client`` makes, at the first orphan of a server, its client for removals."""

    def __init__(self, pool: Pool, patient_client: Callable[[str], AsyncClient]) -> None:
        self._pool = pool
        self._patient_client = patient_client
        #: for removing orphans, made at the first: no read timeout (a hung server reads
        #: the removal when it resumes)
        self.clients: dict[str, AsyncClient] = {}
        self.removals: set[asyncio.Task[None]] = set()

    async def recovered(self, url: str, client: AsyncClient) -> bool:
        """True once ``url`` answers ``client`` and none of the jobs moved off it can still
        run there."""
        state = self._pool.states[url]
        orphans = set(state.orphans)
        try:
            if not orphans:
                await client.system_stats()
            else:  # the dequeue is the probe: a server that resumes runs its queue at once
                await _take_back(client, orphans)
        except ComfyError:
            return False
        state.orphans -= orphans
        return not state.orphans  # those moved off meanwhile are taken back first

    def add(self, url: str, prompt_id: str) -> None:
        """Remember ``prompt_id`` as moved off ``url``, and ask ``url`` at once to drop it."""
        self._pool.states[url].orphans.add(prompt_id)
        removal = asyncio.create_task(self._remove(url, prompt_id), name="comfyfn-fleet-orphan")
        self.removals.add(removal)
        removal.add_done_callback(self.removals.discard)

    async def _remove(self, url: str, prompt_id: str) -> None:
        """Dequeue (or interrupt) ``prompt_id`` on ``url`` whenever it answers (or fails: the
        health loop removes every orphan again before it puts ``url`` back)."""
        if url not in self.clients:
            self.clients[url] = self._patient_client(url)
        client = self.clients[url]
        try:
            await _take_back(client, {prompt_id})
        except ComfyError as exc:
            log.info("removing %s from %s (the health loop tries again): %s", prompt_id, url, exc)


async def _take_back(client: AsyncClient, prompt_ids: set[str]) -> None:
    """Remove ``prompt_ids`` from the server's queue, and interrupt the one running."""
    await client.delete_from_queue(*prompt_ids)
    running = {item[1] for item in (await client.queue())["queue_running"]}
    for prompt_id in prompt_ids & running:
        await client.interrupt(prompt_id)


async def withdraw_waiting(clients: dict[str, AsyncClient], on: dict[str, set[str]]) -> set[str]:
    """Take the prompts ``on`` each server (url → prompt ids) that have not started out of
    its queue; the prompt ids that are gone from it (those left running stay). A server that
    fails to answer is logged and keeps its prompts."""

    async def withdraw(url: str, ours: set[str]) -> set[str]:
        client = clients[url]
        _, pending = queue_ids(await client.queue(), url)
        waiting = ours & set(pending)
        if not waiting:
            return set()
        await client.delete_from_queue(*waiting)
        running, pending = queue_ids(await client.queue(), url)
        return waiting - set(running) - set(pending)

    done = await asyncio.gather(*(withdraw(*item) for item in on.items()), return_exceptions=True)
    gone: set[str] = set()
    for url, result in zip(on, done, strict=True):
        if isinstance(result, BaseException):
            log.warning("could not take our waiting prompts off %s: %s", url, result)
        else:
            gone |= result
    return gone
