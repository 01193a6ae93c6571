"""The change lifecycle as data: states, the transition table and check_transition(). Pure: no database."""
from __future__ import annotations

from django.db import models


class State(models.TextChoices):
    AWAITING_APPROVAL = "awaiting_approval", "Awaiting approval"
    SCHEDULED = "scheduled", "Scheduled"
    RUNNING = "running", "Running"
    PAUSED = "paused", "Paused"
    COMPLETED = "completed", "Completed"
    ABORTED = "aborted", "Aborted"
    REJECTED = "rejected", "Rejected"
    CANCELLED = "cancelled", "Cancelled"
    CLOSED = "closed", "Closed"


TRANSITIONS: dict[State, frozenset[State]] = {
    State.AWAITING_APPROVAL: frozenset({State.SCHEDULED, State.REJECTED, State.CANCELLED}),
    # An edit of servers, plan or window voids the approvals and sends a scheduled change back for approval.
    State.SCHEDULED: frozenset({State.RUNNING, State.AWAITING_APPROVAL, State.CANCELLED}),
    # A window ends completed (every step done) or aborted (the operator's abort: the exit path ran). There is no
    # "failed" end: a step that fails pauses the window for an operator, and a server must not be left in
    # maintenance by the engine giving up — an exit that keeps failing stays paused (and the watchdog alerts).
    State.RUNNING: frozenset({State.PAUSED, State.COMPLETED, State.ABORTED}),
    State.PAUSED: frozenset({State.RUNNING, State.ABORTED}),
    # Finished windows are closed by the post-implementation review, which sets the close code.
    State.COMPLETED: frozenset({State.CLOSED}),
    State.ABORTED: frozenset({State.CLOSED}),
    State.REJECTED: frozenset(),
    State.CANCELLED: frozenset(),
    State.CLOSED: frozenset(),
}

# A window holds its server(s) while in these states: no overlapping window may be scheduled.
HOLDS_SERVERS = frozenset({State.SCHEDULED, State.RUNNING, State.PAUSED})
# The runner is (or may be) acting on the server.
ACTIVE = frozenset({State.RUNNING, State.PAUSED})
# The window has ended; a report can be built.
WINDOW_ENDED = frozenset({State.COMPLETED, State.ABORTED})
TERMINAL = frozenset(s for s, nxt in TRANSITIONS.items() if not nxt)
# Fields whose change voids approvals: what an approver actually approved.
EDITABLE = frozenset({State.AWAITING_APPROVAL, State.SCHEDULED})


class TransitionNotAllowed(Exception):
    """Raised for a move the lifecycle does not allow; carries the states that are allowed."""

    def __init__(self, old: str, new: str) -> None:
        self.old = State(old)
        self.new = State(new)
        self.allowed = sorted(TRANSITIONS[self.old])
        super().__init__(f"a change in state '{self.old}' cannot move to '{self.new}'")


def next_states(state: str) -> list[str]:
    """The states a change may move to from ``state``, sorted for stable output."""
    return sorted(str(s) for s in TRANSITIONS[State(state)])


def check_transition(old: str, new: str) -> None:
    """Raise TransitionNotAllowed unless the lifecycle allows ``old`` → ``new``."""
    if State(new) not in TRANSITIONS[State(old)]:
        raise TransitionNotAllowed(old, new)
