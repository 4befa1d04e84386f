"""What a caller hands the fleet and gets from it around one job: the job's :class:`Ticket`,
the :class:`Slot` it is given, the callbacks it is told through, and the fleet's
:class:`FleetSettings` (:mod:`comfyfn.fleet.fleet` runs them)."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from comfyfn.events import Event
from comfyfn.fleet.pool import Want
from comfyfn.models import model_set, prompt_key
from comfyfn.workflow import Workflow

__all__ = ["FleetSettings", "OnEvent", "OnSubmit", "Slot", "Ticket"]

#: told the server's URL and the prompt id *before* the prompt is submitted
OnSubmit = Callable[[str, str], Awaitable[None]]
#: told every event of the job as its server sends it
OnEvent = Callable[[Event], Awaitable[None]]


@dataclass(frozen=True)
class FleetSettings:
    #: our jobs queued on each server beyond the running one; None: follow the job and
    #: turnaround times measured there (:func:`~comfyfn.fleet.placement.prime_for`), up to ``most``
    prime: int | None = None
    most: int = 8
    by_model: bool = True  #: place jobs where their models are loaded (else shortest queue)
    http_timeout: float = 10.0  #: a server silent this long counts as failed
    connect_timeout: float = 3.0  #: (at most http_timeout) to open a connection
    job_timeout: float | None = None  #: a job running longer counts as a server failure
    health_interval: float = 0.5
    reattach: int = 3  #: re-attaches on the same server after a failed read, per run
    #: the Comfy.org API key for partner nodes (None: ``$COMFY_ORG_API_KEY``, read at use)
    comfy_org_key: str | None = field(default=None, repr=False)

    @property
    def connect(self) -> float:
        return min(self.connect_timeout, self.http_timeout)

    @property
    def unreached_after(self) -> float:
        """Seconds after which a pool that has never answered fails (twice the connect
        timeout: a server still starting gets a moment, a wrong URL fails in seconds)."""
        return 2 * self.connect


_arrivals = itertools.count()


@dataclass
class Ticket:
    """One job as the fleet sees it: what to run, and where it was submitted (if anywhere)."""

    workflow: Workflow
    prompt_id: str | None = None
    server: str | None = None
    #: submissions counted against the retries (a job moved off a failed server while
    #: other jobs ran ahead of it there is not charged for that move)
    attempts: int = 0
    priority: int = 0  #: higher runs first among our waiting jobs
    order: int = field(default_factory=lambda: next(_arrivals))  #: arrival, kept on retries
    #: a cancel was asked (:meth:`Fleet.cancel`, :meth:`Fleet.cancel_all`): a submission
    #: under way then reaches the server after the cancel did, and is cancelled once it has;
    #: a prompt the cancel took out of the queue ends Cancelled, not Lost. A cancelled
    #: ticket is not run again: a job that is to run later gets a new one
    cancel_asked: bool = False

    @functools.cached_property
    def want(self) -> Want:
        """What the pool places it by: its models, its prompt, priority and arrival."""
        wf = self.workflow
        return Want(model_set(wf), prompt_key(wf), self.priority, self.order)


@dataclass(frozen=True)
class Slot:
    url: str
    attach: bool  #: the ticket is already on this server: follow it, submit nothing
