"""Starting a window, operator decisions and the work-done report: the rules the runner relies on."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from changes import run_services, services
from changes.errors import InvalidRequest, NotPermitted, StateConflict
from changes.models import Alert, AuditEvent, Change, Pause, StepRun, WindowRun
from changes.states import State
from tests.support.catalogue import pre_approved

pytestmark = pytest.mark.django_db


@pytest.fixture
def sent(monkeypatch) -> list[tuple[str, list, object]]:
    """Tasks queued on commit (the broker is the edge; what matters is what was queued, and when)."""
    calls: list[tuple[str, list, object]] = []
    monkeypatch.setattr("changes.queue.current_app.send_task",
                        lambda name, args=None, eta=None, **kw: calls.append((name, args, eta)))
    return calls


def open_change(requester, *, minutes_ago: int = 5, hours: int = 2, **extra) -> Change:
    start = timezone.now() - timedelta(minutes=minutes_ago)
    data = {"source": "servicenow", "external_ref": extra.pop("ref", "CHG1"), "title": "CU", "description": "",
            "change_type": "standard", "risk": "low", "impact": "low", "servers": ["EX01"], "plan": "maintenance",
            "window_start": start, "window_end": start + timedelta(hours=hours), "requested_by": "carol",
            "notify": [], "callback_url": "", **extra}
    data.setdefault("standard_template", pre_approved(data["servers"]))
    return services.change_create(actor=requester, data=data)[0]


def test_scheduling_queues_the_start_at_window_start(requester, servers, django_capture_on_commit_callbacks,
                                                     sent) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        change = open_change(requester, minutes_ago=-60)
    assert sent == [("runner.tasks.start_window", [change.pk], change.window_start)]


def test_operator_starts_an_open_window(requester, servers, operator, django_capture_on_commit_callbacks,
                                        sent) -> None:
    change = open_change(requester)
    with django_capture_on_commit_callbacks(execute=True):
        change = run_services.change_start(change, actor=operator)
    assert change.state == State.RUNNING
    assert WindowRun.objects.get(change=change).plan == "maintenance"
    assert ("runner.tasks.run_window", [change.pk], None) in sent


def test_start_is_refused_before_the_window_opens_and_after_it_closes(requester, servers, operator) -> None:
    early = open_change(requester, minutes_ago=-30, ref="A")
    with pytest.raises(StateConflict, match="opens at"):
        run_services.change_start(early, actor=operator)
    late = open_change(requester, minutes_ago=180, hours=2, ref="B")
    with pytest.raises(StateConflict, match="closed"):
        run_services.change_start(late, actor=operator)


def test_start_rechecks_freeze_windows(requester, servers, operator) -> None:
    change = open_change(requester)
    services.freeze_window_save(None, actor=operator, data={
        "start": timezone.now() - timedelta(hours=1), "end": timezone.now() + timedelta(hours=1),
        "dag_name": "", "reason": "Incident in progress"})
    with pytest.raises(Exception, match="Incident in progress"):
        run_services.change_start(change, actor=operator)
    assert Change.objects.get(pk=change.pk).state == State.SCHEDULED


def test_only_operators_or_the_scheduler_start_windows(requester, servers, alice) -> None:
    change = open_change(requester)
    with pytest.raises(NotPermitted):
        run_services.change_start(change, actor=alice)
    assert run_services.change_start(change, actor="system:scheduler").state == State.RUNNING


def paused_with_failed_step(requester, operator, *, skippable: bool = True) -> Change:
    change = open_change(requester)
    run_services.change_start(change, actor=operator)
    StepRun.objects.create(change=change, order=1, phase="enter", key="enter.drain_queues", name="Drain queues",
                           status="failed", error="3 messages left", skippable=skippable)
    services.change_transition(change.pk, State.PAUSED, actor="system:runner", reason="step failed")
    return Change.objects.get(pk=change.pk)


def test_skip_with_a_reason_is_recorded_on_the_step_and_audited(requester, servers, operator) -> None:
    change = paused_with_failed_step(requester, operator)
    run_services.change_resume(change, actor=operator, action="skip", reason="external queue, retries later")
    step = StepRun.objects.get(change=change)
    assert (step.status, step.decision, step.decided_by, step.resolution) == (
        "skipped", "skip", operator, "external queue, retries later")
    assert Change.objects.get(pk=change.pk).state == State.RUNNING
    assert AuditEvent.objects.filter(action="window.skip", actor="user:olga").exists()


def test_a_pause_records_why_where_and_the_evidence_and_the_decision_answers_it(requester, servers,
                                                                                 operator) -> None:
    change = open_change(requester)
    run_services.change_start(change, actor=operator)
    step = StepRun.objects.create(change=change, order=1, phase="enter", key="enter.drain_queues", name="Drain",
                                  status="failed", error="3 messages left", server=servers["EX01"])
    pause = run_services.change_pause(change.pk, actor="system:runner", code=Pause.Reason.STEP_FAILED, step=step,
                                      message="step 1 (Drain) failed: 3 messages left", evidence={"left": 3})
    assert Change.objects.get(pk=change.pk).state == State.PAUSED
    assert (pause.server, pause.evidence, pause.decision) == (servers["EX01"], {"left": 3}, "")
    assert AuditEvent.objects.get(seq=pause.paused_seq).reason == "step 1 (Drain) failed: 3 messages left"
    assert Alert.objects.get(change=change, kind=Alert.Kind.PAUSED).server == servers["EX01"]
    run_services.change_resume(change, actor=operator, action="retry", reason="queue drained by hand")
    pause.refresh_from_db()
    assert (pause.decision, pause.decided_by, pause.decided_by_label, pause.decision_reason) == (
        "retry", operator, "user:olga", "queue drained by hand")
    assert AuditEvent.objects.get(seq=pause.decided_seq).action == "window.retry"


def test_a_pause_needs_a_known_reason_code(requester, servers, operator) -> None:
    change = open_change(requester)
    run_services.change_start(change, actor=operator)
    with pytest.raises(InvalidRequest, match="unknown pause reason"):
        run_services.change_pause(change.pk, actor="system:runner", code="because", message="x")
    assert Change.objects.get(pk=change.pk).state == State.RUNNING


def test_a_decision_on_a_pause_nobody_recorded_gets_a_record_of_its_own(requester, servers, operator) -> None:
    change = paused_with_failed_step(requester, operator)
    run_services.change_resume(change, actor=operator, action="skip", reason="checked by hand")
    pause = Pause.objects.get(change=change)
    assert (pause.code, pause.step.key, pause.decision) == (Pause.Reason.UNRECORDED, "enter.drain_queues", "skip")
    assert pause.paused_seq == pause.decided_seq


def test_skip_is_refused_for_steps_unsafe_to_skip(requester, servers, operator) -> None:
    change = paused_with_failed_step(requester, operator, skippable=False)
    with pytest.raises(StateConflict, match="not safe to skip"):
        run_services.change_resume(change, actor=operator, action="skip", reason="hurry")
    assert Change.objects.get(pk=change.pk).state == State.PAUSED


def test_retry_and_abort(requester, servers, operator) -> None:
    change = paused_with_failed_step(requester, operator)
    run_services.change_resume(change, actor=operator, action="retry", reason="queue cleared by hand")
    assert StepRun.objects.get(change=change).status == "pending"
    services.change_transition(change.pk, State.PAUSED, actor="system:runner")
    run_services.change_resume(Change.objects.get(pk=change.pk), actor=operator, action="abort", reason="give up")
    assert WindowRun.objects.get(change=change).aborting


def test_decisions_need_an_operator_a_reason_and_a_paused_window(requester, servers, operator, alice) -> None:
    change = paused_with_failed_step(requester, operator)
    with pytest.raises(NotPermitted):
        run_services.change_resume(change, actor=alice, action="retry", reason="x")
    with pytest.raises(InvalidRequest):
        run_services.change_resume(change, actor=operator, action="retry", reason=" ")
    with pytest.raises(InvalidRequest):
        run_services.change_resume(change, actor=operator, action="ignore", reason="x")
    run_services.change_resume(change, actor=operator, action="retry", reason="ok")
    # Posted again (the operator saw nothing happen yet): the answer says which decision stands and whether the
    # runner has taken it up.
    with pytest.raises(StateConflict, match=r"running again: user:olga decided retry at .* \(waiting for the runner"):
        run_services.change_resume(Change.objects.get(pk=change.pk), actor=operator, action="retry", reason="again")


def test_work_done_is_reported_once_with_notes(requester, servers, operator) -> None:
    change = open_change(requester)
    run_services.change_start(change, actor=operator)
    with pytest.raises(InvalidRequest):
        run_services.change_work_done(change, actor=operator, notes="")
    run_services.change_work_done(change, actor=operator, notes="CU15 installed, rebooted")
    run = WindowRun.objects.get(change=change)
    assert run.work_notes == "CU15 installed, rebooted" and run.work_done_by == operator
    with pytest.raises(StateConflict, match="already"):
        run_services.change_work_done(change, actor=operator, notes="again")


def test_alerts_are_raised_once_and_audited(requester, servers) -> None:
    change = open_change(requester)
    first = run_services.alert_raise("overrun", "still running", actor="system:watchdog", change=change)
    again = run_services.alert_raise("overrun", "still running", actor="system:watchdog", change=change)
    assert first.pk == again.pk and Alert.objects.count() == 1
    assert AuditEvent.objects.filter(action="alert.overrun").count() == 1


def test_resume_over_the_api(api, requester, servers, operator) -> None:
    change = paused_with_failed_step(requester, operator)
    url = f"/api/v1/changes/{change.pk}/resume/"
    bad = api(operator).post(url, data=json.dumps({"action": "skip"}), content_type="application/json")
    assert bad.status_code == 400
    res = api(operator).post(url, data=json.dumps({"action": "skip", "reason": "accepted"}),
                             content_type="application/json")
    assert res.status_code == 200 and res.json()["state"] == "running"
    detail = api(operator).get(f"/api/v1/changes/{change.pk}/").json()
    assert detail["current_step"] is None


def test_current_step_shows_live_progress(api, requester, servers, operator, auditor) -> None:
    change = paused_with_failed_step(requester, operator)
    detail = api(auditor).get(f"/api/v1/changes/{change.pk}/").json()
    assert detail["current_step"]["key"] == "enter.drain_queues" and detail["current_step"]["status"] == "failed"


def test_operator_start_options_reach_the_run_and_the_audit(api, requester, servers, operator) -> None:
    change = open_change(requester)
    url = f"/api/v1/changes/{change.pk}/start/"
    bad = api(operator).post(url, data=json.dumps({"backup_max_age_hours": 0}), content_type="application/json")
    assert bad.status_code == 400
    res = api(operator).post(url, data=json.dumps({"clear_setup_leftovers": True, "backup_max_age_hours": 48}),
                             content_type="application/json")
    assert res.status_code == 200 and res.json()["state"] == "running"
    assert WindowRun.objects.get(change=change).options == {"clear_setup_leftovers": True, "backup_max_age_hours": 48}
    event = AuditEvent.objects.filter(action="change.transition", object_id=str(change.pk)).last()
    assert "clear_setup_leftovers" in event.reason


def test_a_broker_outage_does_not_fail_a_committed_transition(requester, servers, operator, monkeypatch,
                                                              django_capture_on_commit_callbacks, caplog) -> None:
    def broker_down(*args, **kwargs):
        raise ConnectionRefusedError("broker down")

    monkeypatch.setattr("changes.queue.current_app.send_task", broker_down)
    change = open_change(requester)
    with django_capture_on_commit_callbacks(execute=True):
        run_services.change_start(change, actor=operator)
    assert Change.objects.get(pk=change.pk).state == State.RUNNING
    assert "periodic sweep will pick it up" in caplog.text
