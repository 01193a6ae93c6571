"""The lifecycle of one step run as data: statuses, events, the table (status × event → next status). Pure: no
database. Like ``states.py`` for the change; the engine and the operator's decision set ``StepRun.status`` only
through ``step_next``.

The lifecycle (docs/architecture.md, "The runner"):

    pending ──start──▶ running ──pass──▶ passed
       ▲                │  │ └──skip───▶ skipped      (the step found nothing to do)
       │                │  └───fail────▶ failed ──operator_skip──▶ skipped
       │                └─rewind─┐        │
       └──────────────────────────┴─retry──┘            (operator retry; abort re-runs a failed exit step)

- ``start`` also applies to ``running``: a step found running after an interrupted attempt (the worker died or lost
  its lease, or the database was unreachable) is run again when idempotent, and a held step runs again when it wakes;
- ``fail`` also applies to ``pending``: the plan no longer has the step, so it fails before it starts;
- ``rewind``: a held step goes back to pending when the work-done report arrived while it parked;
- ``abort_skip``: an operator's abort skips what is left of pre-check/enter/work (pending or running steps);
- an operator's ``abort`` leaves a failed step failed: the exit path runs instead.
"""
from __future__ import annotations

from django.db import models


class StepStatus(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    PASSED = "passed"
    SKIPPED = "skipped"
    FAILED = "failed"


class StepEvent(models.TextChoices):
    START = "start"
    PASS = "pass"  # noqa: S105 - an event name, not a password
    SKIP = "skip"
    FAIL = "fail"
    REWIND = "rewind"
    RETRY = "retry"
    OPERATOR_SKIP = "operator_skip"
    ABORT_SKIP = "abort_skip"


_S, _E = StepStatus, StepEvent

STEP_TRANSITIONS: dict[tuple[StepStatus, StepEvent], StepStatus] = {
    (_S.PENDING, _E.START): _S.RUNNING,
    (_S.RUNNING, _E.START): _S.RUNNING,
    (_S.RUNNING, _E.PASS): _S.PASSED,
    (_S.RUNNING, _E.SKIP): _S.SKIPPED,
    (_S.RUNNING, _E.FAIL): _S.FAILED,
    (_S.PENDING, _E.FAIL): _S.FAILED,
    (_S.RUNNING, _E.REWIND): _S.PENDING,
    (_S.FAILED, _E.RETRY): _S.PENDING,
    (_S.FAILED, _E.OPERATOR_SKIP): _S.SKIPPED,
    (_S.PENDING, _E.ABORT_SKIP): _S.SKIPPED,
    (_S.RUNNING, _E.ABORT_SKIP): _S.SKIPPED,
}

# A step in one of these is done with: the engine moves past it.
STEP_DONE = frozenset({_S.PASSED, _S.SKIPPED})


class StepTransitionNotAllowed(Exception):
    """A step event the lifecycle does not allow from the step's status (a bug, or someone else moved the step)."""

    def __init__(self, status: str, event: str) -> None:
        self.status, self.event = StepStatus(status), StepEvent(event)
        super().__init__(f"a step in status '{self.status}' cannot take the event '{self.event}'")


def step_next(status: str, event: str) -> StepStatus:
    """The status a step moves to when ``event`` happens in ``status``; raises StepTransitionNotAllowed."""
    try:
        return STEP_TRANSITIONS[(StepStatus(status), StepEvent(event))]
    except KeyError:
        raise StepTransitionNotAllowed(status, event) from None
