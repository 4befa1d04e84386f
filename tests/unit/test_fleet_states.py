"""The job state machine shared by batch and gateway: every transition, and the illegal ones."""

from __future__ import annotations

import itertools

import pytest

from comfyfn.errors import ComfyError
from comfyfn.fleet import (
    Cancelled,
    Done,
    IllegalTransition,
    Lost,
    Moved,
    Refused,
    State,
    Transition,
    advance,
    requeue_or_fail,
)

LEGAL = {
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


@pytest.mark.parametrize(("start", "transition"), list(LEGAL))
def test_every_legal_transition(start, transition):
    assert advance(start, transition) is LEGAL[(start, transition)]


def test_every_other_pair_is_refused_with_both_names():
    illegal = [p for p in itertools.product(State, Transition) if p not in LEGAL]
    assert len(illegal) == len(State) * len(Transition) - len(LEGAL)
    for state, transition in illegal:
        with pytest.raises(IllegalTransition, match=f"a {state} job cannot {transition}"):
            advance(state, transition)


def test_final_states_accept_nothing():
    finals = [s for s in State if s.final]
    assert finals == [State.DONE, State.FAILED, State.CANCELLED]
    for state, transition in itertools.product(finals, Transition):
        with pytest.raises(IllegalTransition):
            advance(state, transition)


@pytest.mark.parametrize("fault", [Transition.MOVE, Transition.LOSE])
def test_a_job_sent_back_by_a_fault_runs_until_its_retries_are_spent(fault):
    state, attempts = State.PENDING, 0
    trail = []
    while not state.final:
        state = advance(state, Transition.SUBMIT)
        attempts += 1
        state = advance(state, requeue_or_fail(fault, attempts, retries=2))
        trail.append(state)
    assert trail == [State.PENDING, State.PENDING, State.FAILED]
    assert attempts == 3  # the first try and two retries


@pytest.mark.parametrize(
    "transition", [Transition.SUCCEED, Transition.FAIL, Transition.CANCEL, Transition.ABANDON]
)
def test_other_endings_stand_whatever_the_attempts(transition):
    assert requeue_or_fail(transition, attempts=99, retries=0) is transition


def test_outcomes_name_their_transition():
    error = ComfyError("x")
    assert Moved(error, "s").transition is Transition.MOVE
    assert Lost(error, "s").transition is Transition.LOSE
    assert Cancelled(error, "s").transition is Transition.CANCEL
    assert Refused(error, "s").transition is Transition.FAIL
    assert Done.transition is Transition.SUCCEED
