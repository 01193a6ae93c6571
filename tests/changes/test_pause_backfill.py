"""Windows paused before the engine recorded its pauses get their records from the audit trail (migration 0012)."""
from __future__ import annotations

import importlib

import pytest
from django.apps import apps

from changes import audit, run_services, services
from changes.models import Pause, StepRun
from changes.states import State

from .test_run_services import open_change

pytestmark = pytest.mark.django_db
backfill = importlib.import_module("changes.migrations.0012_backfill_pauses").backfill


def test_old_pauses_and_decisions_are_read_once_from_the_audit_trail(requester, servers, operator) -> None:
    change = open_change(requester)
    run_services.change_start(change, actor=operator)
    step = StepRun.objects.create(change=change, order=4, phase="enter", key="enter.drain_queues", name="Drain",
                                  status="skipped", server=servers["EX01"])
    # As the engine and the decision service wrote them before pause records existed.
    services.change_transition(change.pk, State.PAUSED, actor="system:runner",
                               reason="step 4 (Drain) failed: 3 messages left")
    decision = audit.append(actor=operator, action="window.skip", obj=change, reason="external queue",
                            changes={"step": [None, "enter.drain_queues"]})
    services.change_transition(change.pk, State.RUNNING, actor=operator, reason="operator decision: skip")
    backfill(apps, None)
    pause = Pause.objects.get(change=change)
    assert (pause.code, pause.step, pause.server, pause.message) == (
        "unrecorded", step, servers["EX01"], "step 4 (Drain) failed: 3 messages left")
    assert (pause.decision, pause.decided_by, pause.decided_by_label, pause.decided_seq, pause.decision_reason) == (
        "skip", operator, "user:olga", decision.seq, "external queue")
    backfill(apps, None)  # a change that has pause records is left alone
    assert Pause.objects.filter(change=change).count() == 1
