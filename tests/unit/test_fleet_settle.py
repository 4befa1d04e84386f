"""The one decision batch and gateway take when a run ends (comfyfn.fleet.settle)."""

from __future__ import annotations

import pytest

from comfyfn.errors import ComfyError
from comfyfn.fleet import Cancelled, CancelledBy, Done, Lost, Moved, Refused, State, settle
from comfyfn.result import Generation

ERR = ComfyError("boom")
S = "http://127.0.0.1:1"


def done() -> Done:
    return Done(Generation.__new__(Generation), S, 1.0)


@pytest.mark.parametrize("by", list(CancelledBy))
def test_a_finished_run_is_done_and_a_refused_one_failed_whoever_cancels(by):
    assert settle(done(), attempts=9, retries=0, cancelled_by=by) is State.DONE
    assert settle(Refused(ERR, S), attempts=1, retries=3, cancelled_by=by) is State.FAILED


@pytest.mark.parametrize("kind", [Moved, Lost])
def test_a_moved_or_lost_run_goes_back_while_retries_last_then_fails(kind):
    by = CancelledBy.SOMEONE_ELSE
    assert settle(kind(ERR, S), attempts=3, retries=2, cancelled_by=by) is State.FAILED
    assert settle(kind(ERR, S), attempts=2, retries=2, cancelled_by=by) is State.PENDING


@pytest.mark.parametrize(
    ("by", "state"),
    [
        (CancelledBy.OWNER, State.CANCELLED),  # a gateway caller's cancel
        (CancelledBy.US, State.PENDING),  # Ctrl-C: the next run does it
        (CancelledBy.SOMEONE_ELSE, State.FAILED),  # interrupted by nobody here
    ],
)
def test_an_interrupted_run_comes_to_what_its_canceller_means(by, state):
    # however many attempts it spent: a cancel is never a retry
    assert settle(Cancelled(ERR, S), attempts=99, retries=0, cancelled_by=by) is state
