"""The lifecycle table, tested without a database."""
from __future__ import annotations

import itertools

import pytest

from changes.states import TERMINAL, TRANSITIONS, State, TransitionNotAllowed, check_transition, next_states

ALLOWED = {
    ("awaiting_approval", "scheduled"), ("awaiting_approval", "rejected"), ("awaiting_approval", "cancelled"),
    ("scheduled", "running"), ("scheduled", "awaiting_approval"), ("scheduled", "cancelled"),
    ("running", "paused"), ("running", "completed"), ("running", "aborted"),
    ("paused", "running"), ("paused", "aborted"),
    ("completed", "closed"), ("aborted", "closed"),
}


@pytest.mark.parametrize(("old", "new"), list(itertools.product(State.values, State.values)))
def test_transition_matrix(old: str, new: str) -> None:
    if (old, new) in ALLOWED:
        check_transition(old, new)
    else:
        with pytest.raises(TransitionNotAllowed) as err:
            check_transition(old, new)
        assert err.value.allowed == sorted(TRANSITIONS[State(old)])


def test_rejected_cancelled_and_closed_are_terminal() -> None:
    assert {State.REJECTED, State.CANCELLED, State.CLOSED} == TERMINAL


def test_next_states_lists_what_the_caller_may_do() -> None:
    assert next_states("running") == ["aborted", "completed", "paused"]
    assert next_states("closed") == []
