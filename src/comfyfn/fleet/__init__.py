"""Running jobs on a pool of ComfyUI servers — the layer under both batch and gateway.

- :mod:`~comfyfn.fleet.pool`: slots, health, and which waiting job goes where (by the pure
  policy of :mod:`~comfyfn.fleet.placement`: priority, loaded models, shortest queue);
- :mod:`~comfyfn.fleet.placement`: that policy (:func:`assign`) and the priming
  (:func:`prime_for`: how many jobs to keep queued on a server);
- :mod:`~comfyfn.fleet.queue`: what the shared job queue holds for a batch row
  (:class:`QueuedRow`: batch enqueues it, the job store (:mod:`comfyfn.jobs`) keeps it);
- :mod:`~comfyfn.fleet.states`: the job state machine (pure);
- :mod:`~comfyfn.fleet.outcomes`: how one run ended;
- :mod:`~comfyfn.fleet.settle`: what that comes to (one decision for batch and gateway);
- :mod:`~comfyfn.fleet.tickets`: a job as the fleet sees it (:class:`Ticket`), its
  :class:`Slot`, the callbacks and :class:`FleetSettings`;
- :mod:`~comfyfn.fleet.fleet`: clients, health, re-attach, moving jobs off failed servers.
"""

from comfyfn._public import present as _present
from comfyfn.fleet.fleet import Fleet
from comfyfn.fleet.like import FleetLike
from comfyfn.fleet.outcomes import Cancelled, Done, Lost, Moved, Outcome, Refused
from comfyfn.fleet.placement import ServerView, Waiting, assign, prime_for
from comfyfn.fleet.pool import Pool, ServerState, Want
from comfyfn.fleet.queue import QueuedRow
from comfyfn.fleet.settle import CancelledBy, settle
from comfyfn.fleet.states import IllegalTransition, State, Transition, advance, requeue_or_fail
from comfyfn.fleet.tickets import FleetSettings, OnEvent, OnSubmit, Slot, Ticket

__all__ = [
    "Cancelled",
    "CancelledBy",
    "Done",
    "Fleet",
    "FleetLike",
    "FleetSettings",
    "IllegalTransition",
    "Lost",
    "Moved",
    "OnEvent",
    "OnSubmit",
    "Outcome",
    "Pool",
    "QueuedRow",
    "Refused",
    "ServerState",
    "ServerView",
    "Slot",
    "State",
    "Ticket",
    "Transition",
    "Waiting",
    "Want",
    "advance",
    "assign",
    "prime_for",
    "requeue_or_fail",
    "settle",
]

_present(__name__, globals(), __all__)
