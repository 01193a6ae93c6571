"""Starting windows on time, waking held runs, the lease under a real race, and the watchdog."""
from __future__ import annotations

import threading
from datetime import timedelta
from unittest import mock

import pytest
from django.db import connection
from django.utils import timezone

from changes import services
from changes.models import Alert, AuditEvent, Change, Server, StepRun, WindowRun
from changes.states import State
from runner import scheduler
from runner.engine import run_window
from runner.watchdog import watchdog
from tests.support.catalogue import pre_approved

from .support import mutating_commands, running_change, sim_factory

pytestmark = pytest.mark.django_db


@pytest.fixture
def servers(servers):
    """Only EX01 is simulated here."""
    for name in ("EX02", "EX03", "EX04", "EX05"):
        servers.pop(name).delete()
    return servers


def scheduled_change(requester, *, start_in: timedelta, hours: float = 2, ref: str = "CHG9",
                     server: str = "EX01") -> Change:
    start = timezone.now() + start_in
    change, _ = services.change_create(actor=requester, data={
        "source": "servicenow", "external_ref": ref, "title": "Patch", "description": "", "change_type": "standard",
        "risk": "low", "impact": "low", "servers": [server], "plan": "maintenance", "window_start": start,
        "window_end": start + timedelta(hours=hours), "requested_by": "carol@example.com", "notify": [],
        "callback_url": "", "standard_template": pre_approved([server]),
    })
    assert change.state == State.SCHEDULED
    return change


def test_a_window_whose_start_message_was_lost_is_started_by_the_sweep(requester, servers) -> None:
    change = scheduled_change(requester, start_in=-timedelta(minutes=3))
    assert scheduler.start_due_windows() == [change.pk]
    change.refresh_from_db()
    assert change.state == State.RUNNING
    assert WindowRun.objects.get(change=change).started_at is not None
    assert AuditEvent.objects.filter(object_id=str(change.pk), actor="system:scheduler").exists()
    assert scheduler.start_due_windows() == []  # a second sweep (or the late ETA message) changes nothing
    assert scheduler.start_window(change.pk) == "not scheduled (running)"


def test_a_start_message_that_loses_the_race_to_another_starter_leaves_the_window_alone(requester, servers) -> None:
    change = scheduled_change(requester, start_in=-timedelta(minutes=3))
    start = scheduler.change_start

    def another_starter_first(stale: Change, *, actor: str) -> Change:
        # Between this message's read of the change and its start, another copy (on another worker) starts it.
        start(Change.objects.get(pk=stale.pk), actor=actor)
        return start(stale, actor=actor)

    with mock.patch("runner.scheduler.change_start", side_effect=another_starter_first):
        assert scheduler.start_window(change.pk) == "not scheduled (running)"
    assert Change.objects.get(pk=change.pk).state == State.RUNNING
    assert not Alert.objects.filter(change=change).exists()  # nothing "did not start"


def test_an_early_start_message_is_put_back_until_the_window_opens(requester, servers) -> None:
    change = scheduled_change(requester, start_in=timedelta(hours=1))
    with mock.patch("runner.scheduler.current_app.send_task") as send:
        assert scheduler.start_window(change.pk) == "early"
    send.assert_called_once_with("runner.tasks.start_window", args=[change.pk], eta=change.window_start)
    assert scheduler.start_due_windows() == []
    change.refresh_from_db()
    assert change.state == State.SCHEDULED


def test_a_closed_window_is_not_started(requester, servers) -> None:
    change = scheduled_change(requester, start_in=-timedelta(hours=3), hours=1)
    assert scheduler.start_window(change.pk) == "window closed"


def test_due_holds_and_runs_of_dead_workers_are_queued_again(requester, servers) -> None:
    held = running_change(requester, ref="CHG-A")
    Server.objects.create(name="EX09", fqdn="ex09.corp.example")
    dead = scheduled_change(requester, start_in=-timedelta(minutes=1), ref="CHG-B", server="EX09")
    services.change_transition(dead.pk, State.RUNNING, actor="system:runner")
    now = timezone.now()
    WindowRun.objects.filter(change=held).update(wake_at=now - timedelta(seconds=1))
    WindowRun.objects.create(change=dead, plan="maintenance", started_at=now - timedelta(minutes=30),
                             lock_owner="w1#dead", lock_expires_at=now - timedelta(seconds=5))
    with mock.patch("runner.scheduler.current_app.send_task") as send:
        assert sorted(scheduler.resume_held_windows()) == sorted([held.pk, dead.pk])
    assert send.call_count == 2
    WindowRun.objects.filter(change=held).update(wake_at=now + timedelta(minutes=10))
    WindowRun.objects.filter(change=dead).update(lock_expires_at=now + timedelta(minutes=5))
    with mock.patch("runner.scheduler.current_app.send_task"):
        assert scheduler.resume_held_windows() == []


def test_a_parked_hold_whose_work_done_message_was_lost_is_queued_again(requester, servers) -> None:
    """Issue 24: the work-done report's message was lost to a broker outage; the hold would otherwise sleep until
    the window's end."""
    held = running_change(requester)
    now = timezone.now()
    WindowRun.objects.filter(change=held).update(wake_at=now + timedelta(hours=1), lock_owner="",
                                                 started_at=now - timedelta(minutes=30))
    with mock.patch("runner.scheduler.current_app.send_task"):
        assert scheduler.resume_held_windows() == []
    # The report is recorded as a decision waiting (changes.run_services); the sweep nudges one older than NUDGE_AFTER.
    waiting_since = now - scheduler.NUDGE_AFTER - timedelta(seconds=1)
    WindowRun.objects.filter(change=held).update(work_done_at=now, decision_waiting_since=waiting_since)
    with mock.patch("runner.scheduler.current_app.send_task") as send:
        assert scheduler.resume_held_windows() == [held.pk]
    send.assert_called_once_with("runner.tasks.run_window", args=[held.pk])


def test_a_just_started_run_is_left_to_its_own_message(requester, servers) -> None:
    running_change(requester)
    with mock.patch("runner.scheduler.current_app.send_task"):
        assert scheduler.resume_held_windows() == []


@pytest.mark.django_db(transaction=True)
def test_two_workers_racing_for_one_change_run_each_step_once(requester, servers, sim, clock, hooks) -> None:
    from .support import build_test_plan

    change = running_change(requester)
    release = threading.Event()
    hooks.block["precheck.active"] = release  # the winner waits inside its first step until the loser is done
    kwargs = {"clock": clock, "sessions_factory": sim_factory(sim), "plan_builder": build_test_plan(hooks)}
    results: dict[str, str] = {}
    start = threading.Barrier(2)

    def worker(name: str) -> None:
        try:
            start.wait()
            results[name] = run_window(change.pk, worker=name, **kwargs)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in ("w1", "w2")]
    for t in threads:
        t.start()
    for _ in range(200):
        if "busy" in results.values():
            break
        threading.Event().wait(0.05)
    release.set()
    for t in threads:
        t.join(timeout=30)
    assert sorted(results.values()) == ["busy", "held"]
    assert hooks.runs["precheck.active"] == 1 and hooks.runs["enter.hub_draining"] == 1
    assert len(mutating_commands(sim)) == 2
    assert StepRun.objects.filter(change=change).count() == 9


def test_the_watchdog_raises_overrun_for_a_window_active_past_its_end(requester, servers, sim) -> None:
    change = scheduled_change(requester, start_in=-timedelta(hours=3), hours=1)
    services.change_transition(change.pk, State.RUNNING, actor="system:runner")
    report = watchdog(sessions_factory=sim_factory(sim))
    assert report.overrun == [change.pk]
    alert = Alert.objects.get(kind=Alert.Kind.OVERRUN)
    assert alert.change_id == change.pk and "still running" in alert.message
    assert AuditEvent.objects.filter(action="alert.overrun", actor="system:watchdog").exists()
    watchdog(sessions_factory=sim_factory(sim))
    assert Alert.objects.filter(kind=Alert.Kind.OVERRUN).count() == 1  # raised once, not every sweep


def test_a_window_within_its_grace_is_not_an_overrun(requester, servers, sim) -> None:
    change = scheduled_change(requester, start_in=-timedelta(minutes=70), hours=1)
    services.change_transition(change.pk, State.RUNNING, actor="system:runner")
    assert watchdog(sessions_factory=sim_factory(sim)).overrun == []


def test_the_watchdog_finds_a_server_left_in_maintenance_with_no_running_change(servers, sim) -> None:
    assert watchdog(sessions_factory=sim_factory(sim)).left_in_maintenance == {}
    sim.inject("already-in-maintenance", "EX01")
    report = watchdog(sessions_factory=sim_factory(sim))
    assert "ServerWideOffline is Inactive" in report.left_in_maintenance["EX01"]
    alert = Alert.objects.get(kind=Alert.Kind.LEFT_IN_MAINTENANCE)
    assert alert.server.name == "EX01" and alert.cleared_at is None
    sim.invoke("EX01", "Microsoft.Exchange", "Set-ServerComponentState",
               [("Identity", "EX01"), ("Component", "ServerWideOffline"), ("State", "Active"),
                ("Requester", "Maintenance")])
    assert watchdog(sessions_factory=sim_factory(sim)).left_in_maintenance == {}
    alert.refresh_from_db()
    assert alert.cleared_at is not None


def test_the_watchdog_leaves_servers_of_a_running_change_alone(requester, servers, sim) -> None:
    running_change(requester)
    sim.inject("already-in-maintenance", "EX01")
    report = watchdog(sessions_factory=sim_factory(sim))
    assert report.left_in_maintenance == {} and not Alert.objects.exists()


def test_the_watchdog_alerts_once_on_a_server_it_cannot_check_and_clears_it_when_readable(servers, sim) -> None:
    sim.inject("unreachable", "EX01", times=6)
    report = watchdog(sessions_factory=sim_factory(sim))
    assert "EX01" in report.unreachable
    watchdog(sessions_factory=sim_factory(sim))  # still unreachable: the open alert is not repeated
    alert = Alert.objects.get(kind=Alert.Kind.UNREACHABLE)
    assert alert.server.name == "EX01" and "cannot be checked" in alert.message and alert.cleared_at is None
    for _ in range(6):  # the fault runs out after six failed requests
        if not watchdog(sessions_factory=sim_factory(sim)).unreachable:
            break
    assert Alert.objects.get(pk=alert.pk).cleared_at is not None


def test_the_watchdog_treats_an_error_answer_as_cannot_check_not_as_healthy(servers, sim) -> None:
    # EX01's endpoint answers, but for EX09 (in the inventory, unknown to Exchange) with "couldn't be found".
    Server.objects.create(name="EX09", fqdn="ex09.corp.example")
    report = watchdog(sessions_factory=lambda server: sim_factory(sim)(Server(name="EX01")) if server.name == "EX09"
                      else sim_factory(sim)(server))
    assert "EX09" in report.unreachable and "EX09" not in report.left_in_maintenance
    assert "couldn't be found" in report.unreachable["EX09"] or "not found" in report.unreachable["EX09"].lower()
    assert Alert.objects.filter(kind=Alert.Kind.UNREACHABLE, server__name="EX09").exists()


def test_a_window_that_cannot_start_raises_an_alert(requester, operator, servers) -> None:
    from changes import services as change_services

    change = scheduled_change(requester, start_in=-timedelta(minutes=5), hours=2)
    change_services.freeze_window_save(None, actor=operator, data={
        "start": timezone.now() - timedelta(hours=1), "end": timezone.now() + timedelta(hours=1), "dag_name": "",
        "reason": "Incident bridge open"})
    assert scheduler.start_due_windows() == []
    alert = Alert.objects.get(kind=Alert.Kind.NOT_STARTED, change=change)
    assert "Incident bridge open" in alert.message
