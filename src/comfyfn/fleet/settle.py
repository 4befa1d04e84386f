"""What a job's run comes to: the one decision batch and gateway both take when a run ends.

::

    settle(outcome, attempts=1, retries=3, cancelled_by=CancelledBy.SOMEONE_ELSE) -> State

- done → :attr:`State.DONE`: its outputs are to be written;
- moved off a failed server, or lost by it → :attr:`State.PENDING` while retries last
  (:func:`~comfyfn.fleet.states.requeue_or_fail`), then :attr:`State.FAILED`;
- interrupted on its server: by its owner's cancel → :attr:`State.CANCELLED`; by us, leaving
  it for the next run (Ctrl-C, a shutdown that cancels) → :attr:`State.PENDING`, not a
  failure and no attempt spent; by anyone else → :attr:`State.FAILED`;
- refused (the job itself failed) → :attr:`State.FAILED`.
"""

from __future__ import annotations

import enum

from comfyfn.fleet.outcomes import Cancelled, Outcome
from comfyfn.fleet.states import State, Transition, advance, requeue_or_fail

__all__ = ["CancelledBy", "settle"]


class CancelledBy(enum.StrEnum):
    """Who interrupted a job on its server, as far as its runner knows."""

    OWNER = "owner"  #: the job's owner asked (a gateway caller's cancel)
    US = "us"  #: its runner stopped following it, for the next run to do it
    SOMEONE_ELSE = "someone else"  #: nobody here asked: a failure


_CANCEL_TRANSITION = {
    CancelledBy.OWNER: Transition.CANCEL,
    CancelledBy.US: Transition.ABANDON,
    CancelledBy.SOMEONE_ELSE: Transition.FAIL,
}


def settle(outcome: Outcome, *, attempts: int, retries: int, cancelled_by: CancelledBy) -> State:
    """The job's state after ``outcome``, its run number ``attempts`` with ``retries``
    allowed (``cancelled_by`` matters only if it was interrupted)."""
    if isinstance(outcome, Cancelled):
        transition = _CANCEL_TRANSITION[cancelled_by]
    else:
        transition = requeue_or_fail(outcome.transition, attempts, retries)
    return advance(State.SUBMITTED, transition)
