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

Batch (``manifest.sqlite``) and the job store (:mod:`comfyfn.jobs`) record these states
under their own names; both drive them through :func:`advance`, so the rules are written once.
"""

from __future__ import annotations

import enum

__all__ = ["IllegalTransition", "State", "Transition", "advance", "requeue_or_fail"]


class State(enum.StrEnum):
    PENDING = "pending"
    SUBMITTED = "submitted"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in (State.DONE, State.FAILED, State.CANCELLED)


class Transition(enum.StrEnum):
    """What can happen to a job: each takes it from one :class:`State` to another
    (:func:`advance`)."""

    SUBMIT = "submit"
    SUCCEED = "succeed"
    FAIL = "fail"
    CANCEL = "cancel"
    MOVE = "move"
    LOSE = "lose"
    ABANDON = "abandon"
    RELEASE = "release"


class IllegalTransition(ValueError):
    """A transition that cannot happen in a state (a bug in the caller, never user input)."""


_TRANSITIONS: dict[tuple[State, Transition], State] = {
    (State.PENDING, Transition.SUBMIT): State.SUBMITTED,
    (State.PENDING, Transition.CANCEL): State.CANCELLED,
    (State.PENDING, Transition.FAIL): State.FAILED,
    (State.SUBMITTED, Transition.SUCCEED): State.DONE,
    (State.SUBMITTED, Transition.FAIL): State.FAILED,
    (State.SUBMITTED, Transition.CANCEL): State.CANCELLED,
    (State.SUBMITTED, Transition.MOVE): State.PENDING,
    (State.SUBMITTED, Transition.LOSE): State.PENDING,
    (State.SUBMITTED, Transition.ABANDON): State.PENDING,
    (State.SUBMITTED, Transition.RELEASE): State.SUBMITTED,
}


def advance(state: State, transition: Transition) -> State:
    """The state after ``transition``; :class:`IllegalTransition` if it cannot happen."""
    try:
        return _TRANSITIONS[(state, transition)]
    except KeyError:
        raise IllegalTransition(f"a {state} job cannot {transition}") from None


def requeue_or_fail(transition: Transition, attempts: int, retries: int) -> Transition:
    """``transition``, unless it would send the job back to pending (a move off a failed
    server, a job the server lost) after ``attempts`` submissions have spent its ``retries``:
    then :attr:`Transition.FAIL`. Every other transition stands (``abandon`` is ours, not a
    fault)."""
    if transition in (Transition.MOVE, Transition.LOSE) and attempts > retries:
        return Transition.FAIL
    return transition
