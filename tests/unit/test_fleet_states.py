"""The job state machine shared by batch and gateway: every transition, and the illegal ones."""

from __future__ import annotations

import itertools

import pytest

from comfyfn.errors import ComfyError
from comfyfn.fleet import (
    Cancelled,
    Done,
    Event,
    IllegalTransition,
    Lost,
    Moved,
    Refused,
    State,
    advance,
    requeue_or_fail,
)

LEGAL = {
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


@pytest.mark.parametrize(("start", "event"), list(LEGAL))
def test_every_legal_transition(start, event):
    assert advance(start, event) is LEGAL[(start, event)]


def test_every_other_pair_is_refused_with_both_names():
    illegal = [p for p in itertools.product(State, Event) if p not in LEGAL]
    assert len(illegal) == len(State) * len(Event) - len(LEGAL)
    for state, event in illegal:
        with pytest.raises(IllegalTransition, match=f"a {state} job cannot {event}"):
            advance(state, event)


def test_final_states_accept_nothing():
    finals = [s for s in State if s.final]
    assert finals == [State.DONE, State.FAILED, State.CANCELLED]
    for state, event in itertools.product(finals, Event):
        with pytest.raises(IllegalTransition):
            advance(state, event)


@pytest.mark.parametrize("fault", [Event.MOVE, Event.LOSE])
def test_a_job_sent_back_by_a_fault_runs_until_its_retries_are_spent(fault):
    state, attempts = State.PENDING, 0
    trail = []
    while not state.final:
        state = advance(state, Event.SUBMIT)
        attempts += 1
        state = advance(state, requeue_or_fail(fault, attempts, retries=2))
        trail.append(state)
    assert trail == [State.PENDING, State.PENDING, State.FAILED]
    assert attempts == 3  # the first try and two retries


@pytest.mark.parametrize("event", [Event.SUCCEED, Event.FAIL, Event.CANCEL, Event.ABANDON])
def test_other_endings_stand_whatever_the_attempts(event):
    assert requeue_or_fail(event, attempts=99, retries=0) is event


def test_outcomes_name_their_event():
    error = ComfyError("x")
    assert Moved(error, "s").event is Event.MOVE
    assert Lost(error, "s").event is Event.LOSE
    assert Cancelled(error, "s").event is Event.CANCEL
    assert Refused(error, "s").event is Event.FAIL
    assert Done.event is Event.SUCCEED
