"""The life of one job on the fleet, as a pure state machine (no I/O, no clock).

::

    pending ──submit──▶ submitted ──succeed──▶ done
       │  ▲                │ │ │ └──fail────▶ failed
       │  └──move / lose / abandon──┘ │ └──cancel──▶ cancelled
       └──cancel / fail──▶ …           └──release──▶ submitted (unowned: re-attach later)

- ``move``: its server failed or hung; the job runs again elsewhere (the copy left on that
  server is removed from its queue before the server is used again).
- ``lose``: the server no longer knows the job (deleted from its queue, or restarted).
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

__all__ = ["Event", "IllegalTransition", "State", "advance", "after_server_failure"]


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


def after_server_failure(attempts: int, retries: int) -> Event:
    """A job whose server failed under it moves to another one, until its retries are spent."""
    return Event.MOVE if attempts <= retries else Event.FAIL
