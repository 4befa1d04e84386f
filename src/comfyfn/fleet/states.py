"""The life of one job on the fleet, as a pure state machine (no I/O, no clock).

::

    pending ──submit──▶ submitted ──succeed──▶ done
       │  ▲                │ │ │ └──fail────▶ failed
       │  └──move / lose / abandon──┘ │ └──cancel──▶ cancelled
       └──cancel / fail──▶ …           └──release──▶ submitted (unowned: re-attach later)

- ``move``: its server failed or hung; the job runs again elsewhere (the copy left on that
  server is removed from its queue before the server is used again).
- ``lose``: the server no longer knows the job (deleted from its queue, or restarted).

A move and a loss both count against the job's retries (:func:`requeue_or_fail`): every way
back to pending that the job did not ask for is bounded, so no fault makes a job go round
for ever.
- ``abandon``: we cancelled it on its server ourselves (Ctrl-C, shutdown with cancel): it is
  not a failure, and the next run does it.
- ``release``: we stop following it but leave it running on its server (graceful shutdown):
  its server and prompt id are kept, so whoever picks it up next re-attaches instead of
  submitting it twice.

Batch (``manifest.sqlite``) and gateway (its job store) record these states under their own
names; both drive them through :func:`advance`, so the rules are written once.
"""

from __future__ import annotations

import enum

__all__ = ["Event", "IllegalTransition", "State", "advance", "requeue_or_fail"]


class State(enum.StrEnum):
    PENDING = "pending"
    SUBMITTED = "submitted"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in (State.DONE, State.FAILED, State.CANCELLED)


class Event(enum.StrEnum):
    SUBMIT = "submit"
    SUCCEED = "succeed"
    FAIL = "fail"
    CANCEL = "cancel"
    MOVE = "move"
    LOSE = "lose"
    ABANDON = "abandon"
    RELEASE = "release"


class IllegalTransition(ValueError):
    """An event that cannot happen in a state (a bug in the caller, never user input)."""


_TRANSITIONS: dict[tuple[State, Event], State] = {
    (State.PENDING, Event.SUBMIT): State.SUBMITTED,
    (State.PENDING, Event.CANCEL): State.CANCELLED,
    (State.PENDING, Event.FAIL): State.FAILED,
    (State.SUBMITTED, Event.SUCCEED): State.DONE,
    (State.SUBMITTED, Event.FAIL): State.FAILED,
    (State.SUBMITTED, Event.CANCEL): State.CANCELLED,
    (State.SUBMITTED, Event.MOVE): State.PENDING,
    (State.SUBMITTED, Event.LOSE): State.PENDING,
    (State.SUBMITTED, Event.ABANDON): State.PENDING,
    (State.SUBMITTED, Event.RELEASE): State.SUBMITTED,
}


def advance(state: State, event: Event) -> State:
    """The state after ``event``; :class:`IllegalTransition` if it cannot happen."""
    try:
        return _TRANSITIONS[(state, event)]
    except KeyError:
        raise IllegalTransition(f"a {state} job cannot {event}") from None


def requeue_or_fail(event: Event, attempts: int, retries: int) -> Event:
    """``event``, unless it would send the job back to pending (a move off a failed server,
    a job the server lost) after ``attempts`` submissions have spent its ``retries``: then
    :attr:`Event.FAIL`. Every other event stands (``abandon`` is ours, not a fault)."""
    if event in (Event.MOVE, Event.LOSE) and attempts > retries:
        return Event.FAIL
    return event
