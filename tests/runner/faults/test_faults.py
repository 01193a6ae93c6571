"""Issue 24's fault suite, the short cases (the regular suite, CI's PostgreSQL + Redis pass): a window of the real
maintenance plan, run by a real Celery worker over pypsrp against the simulator, meets a 15 s database outage in the
middle of a step, and a worker SIGKILLed while a transport restart it sent is unanswered. Each window completes,
resumes within 60 s, sends no mutating command twice, and its step log lists every command the server received.
The 60-90 s outages are in test_long_outages.py (`make test-faults`)."""
from __future__ import annotations

import re

import pytest
from rest_framework.test import APIClient

from changes.models import AuditHead, StepRun
from changes.run_services import change_work_done
from runner.engine import RESUMED
from tests.conftest import make_user
from tests.runner.engine.support import HeldAnswer
from tests.support.tokens import api_key

from .support import (
    OnCommand,
    Outage,
    S,
    World,
    alerts,
    check_the_window,
    finished,
    parked_on_the_work_hold,
    running_change,
    step_status,
    wait,
)

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

TASK_RESULT = r"Task runner\.tasks\.run_window\[[0-9a-f-]+\] succeeded in [0-9.e-]+s: ['\"](.*)['\"]$"


def run_results(world: World) -> list[str]:
    """What every run_window task of the test's workers returned, from their logs."""
    return [result for process, _ in world.workers.started
            for result in re.findall(TASK_RESULT, world.workers.log_of(process), flags=re.MULTILINE)]


def test_a_15_s_database_outage_mid_step_is_ridden_out_by_the_running_task(world: World) -> None:
    # A 30 s lease: the engine retries its writes for that long, so a 15 s outage never ends the task.
    worker = world.worker("w1", EXMAINT_LEASE_SECONDS="30")
    outage = Outage(world.pg.stop, world.pg.start, 15)
    # PostgreSQL stops (fast shutdown: "terminating connection due to administrator command") while the server
    # restarts transport; the step's next writes meet the dead connection.
    OnCommand(world.sim, "Restart-Service", outage.begin, Name="MSExchangeTransport")
    change = running_change(world.requester)

    wait(world, outage.returned.is_set, "the database outage to end", timeout=120, sweep=False)
    took = wait(world, lambda: parked_on_the_work_hold(change), "the work hold", timeout=60,
                since=outage.returned_at)
    change_work_done(change, actor=world.operator, notes="CU15 installed")
    wait(world, lambda: finished(change), "completion", timeout=60)

    check_the_window(world, change)
    restart = StepRun.objects.get(change=change, key="enter.restart_transport")
    assert (restart.attempts, restart.issues) == (1, []), "the step ran once: the task waited for the database"
    assert "database unavailable" not in run_results(world)
    assert "the database is unreachable" in world.workers.log_of(worker)  # the outage did hit the engine's writes
    assert alerts(change) == []
    assert took < 60


def test_a_worker_sigkilled_with_a_transport_restart_unanswered_leaves_sent_outcome_unknown(world: World) -> None:
    held = HeldAnswer(world.sim, "Restart-Service", Name="MSExchangeTransport")
    first = world.worker("w1")
    change = running_change(world.requester)
    try:
        wait(world, held.reached.is_set, "the transport restart to reach the server", timeout=90, sweep=False)
        # The command is on the step log before the server answers, as sent.
        restart = StepRun.objects.get(change=change, key="enter.restart_transport")
        assert (restart.commands[-1]["cmdlet"], restart.commands[-1]["outcome"]) == ("Restart-Service", "sent")
        world.workers.kill(first)
    finally:
        held.release()

    world.worker("w2")  # a lease of 5 s: the sweep hands the run over within seconds
    took = wait(world, lambda: step_status(change, "enter.restart_transport") == S.PASSED,
                "the interrupted step to resume and pass", timeout=60)
    wait(world, lambda: parked_on_the_work_hold(change), "the work hold", timeout=60)
    change_work_done(change, actor=world.operator, notes="CU15 installed")
    wait(world, lambda: finished(change), "completion", timeout=60)

    check_the_window(world, change)
    assert took < 60
    restart = StepRun.objects.get(change=change, key="enter.restart_transport")
    assert restart.attempts == 2 and restart.issues[0]["summary"] == RESUMED
    assert "Restart-Service -Name MSExchangeTransport" in restart.issues[0]["resolution"]
    unknown = [(c["cmdlet"], c["parameters"], c["step_attempt"]) for c in restart.commands
               if c["outcome"] == "sent, outcome unknown"]
    assert unknown == [("Restart-Service", {"Name": "MSExchangeTransport"}, 1)]

    # The API and the report show it.
    auditor = make_user("audrey", "auditor")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {api_key(auditor)}")
    steps = client.get(f"/api/v1/changes/{change.pk}/steps/").json()
    steps = steps["results"] if isinstance(steps, dict) else steps
    api_restart = next(s for s in steps if s["key"] == "enter.restart_transport")
    assert {"cmdlet": "Restart-Service", "outcome": "sent, outcome unknown"}.items() <= api_restart["commands"][
        [c["outcome"] for c in api_restart["commands"]].index("sent, outcome unknown")].items()

    from reports.context import build_report_data

    head = AuditHead.objects.get(id=1)
    data = build_report_data(change.pk, head_seq=head.seq, head_hash=head.hash)
    block = next(b for b in data.commands if b.step.startswith(f"{restart.order}. "))
    assert "Restart-Service -Name MSExchangeTransport" in block.log and "SENT, OUTCOME UNKNOWN" in block.log
    assert any("outcome unknown: Restart-Service -Name MSExchangeTransport" in row.seen for row in data.issues)
