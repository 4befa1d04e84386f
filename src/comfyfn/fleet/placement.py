"""Placement policy (pure: no I/O, no clock): which waiting job goes to which server of the
fleet, and how many of our jobs to keep on each server.

A job's *model set* is the set of model files its bound graph loads
(:func:`comfyfn.models.model_set`: ``(folder, name)`` of every loader input: ``unet_name``,
``clip_name``, ``vae_name``, ``ckpt_name``, ``lora_name``…). A server's *tail* is the model
set it will hold once our jobs on it have run: that of the last job we gave it. Loading
another model set costs a GPU server seconds (swapping weights), so :func:`assign` sends
each job where its models already are.

:func:`assign` is called whenever a slot frees or a job arrives. It fills free slots one at
a time, the emptiest server first; each server takes the waiting job that ranks first by

1. priority (higher first: priorities reorder our own waiting jobs, across the pool);
2. fit: same models *and* same prompt as the server's tail (ComfyUI's cache then skips
   the text encoder too, so variations of a prompt run in a row on one server) → same
   models → a job without model files → a model set no server has (a first load, on the
   emptiest server) → a model set other servers hold, on a server that holds none yet
   (its first load costs the same whichever set: it is not taken from anyone) → a model
   set other servers hold, on a server holding another set, but only when they are all
   full, this server would otherwise idle (it has none of our jobs) and more jobs wait for
   that set than those servers have slots (a backlog they will not clear in one round);
3. arrival order.

Otherwise a job whose models are on a full server waits for it: that server is about to
free a slot, and waiting a round is shorter than a load. A job is never taken from a server
that has its models and a free slot.

:func:`prime_for` sizes the queue: a server stays busy while the jobs queued behind the
running one last longer than our turnaround (the time from a job's end on the server to the
next job of ours reaching its queue), with half a job to spare (times vary; the turnaround
measured misses our own dispatch): ``prime = ceil(turnaround / job time + 1/2)``, never
fewer than two (also before anything is measured).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, replace
from statistics import median
from typing import Generic, TypeVar

from comfyfn.models import ModelSet

__all__ = ["ServerView", "Waiting", "assign", "prime_for"]

K = TypeVar("K", bound=Hashable)

_SLACK = 0.5  #: of a job time, kept in hand by the priming
#: the fewest jobs the priming keeps queued, also before anything is measured: with one, the
#: GPU idles whenever one turnaround outlasts a job (measured on the engine: 20 ms jobs lose
#: 5-20 % until the times are known, which a short batch never outlives; 200 ms jobs on a
#: loaded machine 0.76 of the limit against 0.79 with two); two cost nothing at long jobs
_LEAST = 2

# how well a job fits a server (lower is better); None: the server must not take it
_SAME_PROMPT, _SAME_MODELS, _NO_MODELS, _FIRST_LOAD, _SHARED, _STOLEN = range(6)


@dataclass(frozen=True)
class Waiting(Generic[K]):
    """A job of ours waiting for a server."""

    key: K  #: the caller's id for the job
    models: ModelSet
    prompt: str | None = None
    priority: int = 0  #: higher runs first
    order: int = 0  #: arrival order (lower first, among equal priorities)


@dataclass(frozen=True)
class ServerView:
    """A server as the policy sees it."""

    url: str
    free: int  #: slots free now (0 while it is down)
    jobs: int  #: our jobs on it now (running and queued)
    tail: ModelSet | None = None  #: models it holds once our jobs on it have run
    tail_prompt: str | None = None
    healthy: bool = True


def assign(
    servers: Sequence[ServerView], waiting: Sequence[Waiting[K]]
) -> list[tuple[Waiting[K], str]]:
    """Which waiting jobs go to which servers now, as ``(job, server url)`` in the order
    they should be submitted; jobs left out wait for the next call. Among servers equally
    empty, the first in ``servers`` is filled first (the pool lists the longest idle first)."""
    views = {s.url: s for s in servers if s.healthy}
    queue = sorted(waiting, key=lambda j: (-j.priority, j.order))
    placed: list[tuple[Waiting[K], str]] = []
    idle: set[str] = set()  # servers that took nothing this round
    while queue:
        open_ = [s for s in views.values() if s.free > 0 and s.url not in idle]
        if not open_:
            break
        server = min(open_, key=lambda s: s.jobs)  # the first of the emptiest
        job = _pick(server, queue, views)
        if job is None:
            idle.add(server.url)
            continue
        queue.remove(job)
        placed.append((job, server.url))
        views[server.url] = _after(server, job)
        idle.clear()  # the new tail may change what the others may take
    return placed


def _pick(
    server: ServerView, queue: list[Waiting[K]], views: dict[str, ServerView]
) -> Waiting[K] | None:
    best: tuple[int, int, int] | None = None
    chosen = None
    fits: dict[tuple[ModelSet, str | None], int | None] = {}  # jobs alike fit alike
    for job in queue:
        alike = (job.models, job.prompt)
        if alike not in fits:
            fits[alike] = _fit(server, job, views, queue)
        fit = fits[alike]
        if fit is None:
            continue
        rank = (-job.priority, fit, job.order)
        if best is None or rank < best:
            best, chosen = rank, job
    return chosen


def _fit(
    server: ServerView, job: Waiting[K], views: dict[str, ServerView], queue: list[Waiting[K]]
) -> int | None:
    if not job.models:
        return _NO_MODELS
    if server.tail == job.models:
        return (
            _SAME_PROMPT
            if job.prompt is not None and job.prompt == server.tail_prompt
            else _SAME_MODELS
        )
    holders = [s for s in views.values() if s.tail == job.models]
    if not holders:
        return _FIRST_LOAD
    if server.tail is None:
        return _SHARED  # a server that has loaded nothing yet takes its first set
    if any(s.free > 0 for s in holders) or server.jobs > 0:
        return None  # a holder takes it now, or frees a slot soon: wait for it
    backlog = sum(1 for other in queue if other.models == job.models)
    if backlog <= sum(s.free + s.jobs for s in holders):
        return None  # the holders clear it within a round: cheaper than a load here
    return _STOLEN


def _after(server: ServerView, job: Waiting[K]) -> ServerView:
    if not job.models:
        return replace(server, free=server.free - 1, jobs=server.jobs + 1)
    return replace(
        server,
        free=server.free - 1,
        jobs=server.jobs + 1,
        tail=job.models,
        tail_prompt=job.prompt,
    )


def prime_for(
    job_seconds: Sequence[float],
    turnaround_seconds: Sequence[float],
    *,
    least: int = _LEAST,
    most: int = 8,
) -> int:
    """Our jobs to keep queued behind the running one on a server, from recent measurements
    there: the median job time (server execution) and the slower turnarounds (the 90th
    percentile: one slow answer must not leave the GPU idle). Within ``least``..``most``
    (``most`` wins); ``least`` until both are known."""
    if not job_seconds or not turnaround_seconds:
        return min(most, least)
    job = median(job_seconds)
    turnaround = _quantile(turnaround_seconds, 0.9)
    if job <= 0:
        return most
    return min(most, max(least, math.ceil(turnaround / job + _SLACK)))


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]  # nearest rank
