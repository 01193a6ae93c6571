"""Operator decisions survive a lost message (issue 13, D9): each is recorded in the database with the decision, the
sweep acts on any the runner has not taken up, and the watchdog alerts when one waits, when a server stays in
maintenance past its window, when a step stalls or when a run's worker stops heartbeating (issue 24, item 4)."""
from __future__ import annotations

import time
from datetime import timedelta
from unittest import mock

import pytest
from django.db import connection
from django.utils import timezone
from kombu.exceptions import OperationalError

from changes.leases import Lease
from changes.models import Alert, AuditEvent, Change, StepRun, WindowRun
from changes.queue import RUN_TASK
from changes.run_services import change_resume, change_start, change_work_done
from changes.states import State
from runner import scheduler
from runner.engine import run_window
from runner.watchdog import watch_runs, watchdog

from .support import open_change, running_change, sim_factory

pytestmark = pytest.mark.django_db

BROKER_DOWN = OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")


def broker_down():  # noqa: ANN201
    """Every message the code tries to queue fails as it does while Redis is unreachable."""
    return mock.patch("changes.queue.current_app.send_task", side_effect=BROKER_DOWN)


def sweep() -> list[int]:
    """The beat sweep, with the messages it queues captured instead of sent."""
    with mock.patch("runner.scheduler.current_app.send_task") as send:
        queued = scheduler.resume_held_windows()
    assert [c.args for c in send.call_args_list] == [(RUN_TASK,)] * len(queued)
    assert [c.kwargs["args"] for c in send.call_args_list] == [[pk] for pk in queued]
    return queued


def age_decision(change: Change, by: timedelta) -> None:
    """Make the recorded decision look ``by`` older (the sweep and the watchdog go by its age)."""
    run = WindowRun.objects.get(change=change)
    WindowRun.objects.filter(pk=run.pk).update(decision_waiting_since=run.decision_waiting_since - by)


def held(requester, engine_kwargs) -> Change:
    change = running_change(requester)
    assert run_window(change.pk, worker="w1", **engine_kwargs) == "held"
    return change


def test_a_work_done_posted_while_the_broker_is_down_is_answered_recorded_and_run_by_the_sweep(
        requester, operator, api, engine_kwargs, django_capture_on_commit_callbacks) -> None:
    change = held(requester, engine_kwargs)
    with broker_down() as send, django_capture_on_commit_callbacks(execute=True):
        response = api(operator).post(f"/api/v1/changes/{change.pk}/work-done/", {"notes": "CU15 installed"},
                                      format="json")
    assert send.call_count == 1  # the fast path was tried, and failed
    assert response.status_code == 200, response.content
    assert response.json()["work_done_at"]
    assert response.json()["decision_waiting_since"] == response.json()["work_done_at"]  # recorded, not yet taken up
    run = WindowRun.objects.get(change=change)
    assert run.decision_waiting_since == run.work_done_at and run.wake_at is not None  # parked until the window end

    # The sweep leaves a fresh decision to its own message for a few seconds, then queues the run: no message from
    # the work-done report is needed.
    assert sweep() == []
    age_decision(change, scheduler.NUDGE_AFTER)
    assert sweep() == [change.pk]
    assert run_window(change.pk, worker="w2", **engine_kwargs) == "completed"
    assert WindowRun.objects.get(change=change).decision_waiting_since is None
    assert sweep() == []


def test_the_same_work_done_again_is_idempotent_and_a_different_one_says_what_stands(
        requester, operator, api, engine_kwargs, django_capture_on_commit_callbacks) -> None:
    change = held(requester, engine_kwargs)
    url = f"/api/v1/changes/{change.pk}/work-done/"
    with broker_down(), django_capture_on_commit_callbacks(execute=True):
        first = api(operator).post(url, {"notes": "CU15 installed"}, format="json")
    events = AuditEvent.objects.filter(action="window.work_done").count()
    # The operator sees nothing happen (the broker is down) and posts again.
    with broker_down() as send, django_capture_on_commit_callbacks(execute=True):
        again = api(operator).post(url, {"notes": "CU15 installed"}, format="json")
    assert again.status_code == 200 and again.json()["work_done_at"] == first.json()["work_done_at"]
    assert send.call_count == 1  # the runner is woken again, in case the first message was lost
    assert AuditEvent.objects.filter(action="window.work_done").count() == events  # nothing recorded twice
    with broker_down(), django_capture_on_commit_callbacks(execute=True):
        other = api(operator).post(url, {"notes": "CU15 and a hotfix"}, format="json")
    assert other.status_code == 409
    assert "already reported done at" in other.json()["detail"]
    assert "waiting for the runner since" in other.json()["detail"]
    run = WindowRun.objects.get(change=change)
    assert run.work_notes == "CU15 installed"


def test_a_retry_decision_whose_message_was_lost_is_run_by_the_sweep(
        requester, operator, engine_kwargs, hooks, django_capture_on_commit_callbacks) -> None:
    hooks.fail["enter.hub_draining"] = 1
    change = running_change(requester)
    assert run_window(change.pk, worker="w1", **engine_kwargs) == "paused"
    with broker_down(), django_capture_on_commit_callbacks(execute=True):
        change_resume(change, actor=operator, action="retry", reason="the transient error is gone")
    assert Change.objects.get(pk=change.pk).state == State.RUNNING
    age_decision(change, scheduler.NUDGE_AFTER)
    assert sweep() == [change.pk]
    assert run_window(change.pk, worker="w2", **engine_kwargs) == "held"
    assert StepRun.objects.get(change=change, key="enter.hub_draining").status == StepRun.Status.PASSED


def test_an_operator_start_whose_message_was_lost_is_run_by_the_sweep(
        requester, operator, servers, django_capture_on_commit_callbacks) -> None:
    change = open_change(requester)
    with broker_down(), django_capture_on_commit_callbacks(execute=True):
        change_start(change, actor=operator)
    assert sweep() == []  # its own message may still be on the way
    age_decision(change, scheduler.NUDGE_AFTER)
    assert sweep() == [change.pk]


def test_a_dead_workers_run_is_queued_as_soon_as_its_lease_expires_even_just_after_the_start(requester,
                                                                                                servers) -> None:
    change = running_change(requester)  # started a moment ago
    now = timezone.now()
    WindowRun.objects.filter(change=change).update(lock_owner="w1@host:1#dead", decision_waiting_since=None,
                                                   lock_expires_at=now + timedelta(seconds=5))
    assert sweep() == []  # the worker may still be alive: its lease runs
    WindowRun.objects.filter(change=change).update(lock_expires_at=now - timedelta(seconds=1))
    assert sweep() == [change.pk]


def test_the_sweep_and_the_watchdog_run_often_enough_to_resume_a_dead_workers_window_within_a_minute() -> None:
    from config import settings as project  # the project's defaults, not this directory's test override

    beat = {entry["task"]: entry["schedule"] for entry in project.CELERY_BEAT_SCHEDULE.values()}
    lease = project.EXMAINT["LEASE_SECONDS"]
    # A worker dies just after a renewal: its lease ends ``lease`` seconds later; the next sweep queues the run.
    assert lease + beat["runner.tasks.resume_held_windows"] <= 45
    assert beat["runner.tasks.watch_runs"] <= 30


# --- the watchdog ---------------------------------------------------------------------------------------------------


def open_alerts(kind: str) -> list[Alert]:
    return list(Alert.objects.filter(kind=kind, cleared_at__isnull=True))


def test_a_decision_waiting_over_a_minute_raises_one_alert_cleared_once_a_worker_takes_it(
        requester, operator, engine_kwargs, django_capture_on_commit_callbacks) -> None:
    change = held(requester, engine_kwargs)
    with broker_down(), django_capture_on_commit_callbacks(execute=True):
        change_work_done(change, actor=operator, notes="CU15 installed")
    assert watch_runs().decision_waiting == []  # seconds old: not yet
    age_decision(change, timedelta(seconds=61))
    assert watch_runs().decision_waiting == [change.pk]
    watch_runs()
    [alert] = open_alerts(Alert.Kind.DECISION_WAITING)  # one open alert per cause, not one per sweep
    assert alert.change_id == change.pk and "has waited 1 min for the runner" in alert.message
    assert AuditEvent.objects.filter(action="alert.decision_waiting", actor="system:watchdog").count() == 1
    assert run_window(change.pk, worker="w2", **engine_kwargs) == "completed"
    watch_runs()
    assert open_alerts(Alert.Kind.DECISION_WAITING) == []


def test_a_run_whose_worker_stopped_heartbeating_raises_worker_lost_until_taken_over(
        requester, engine_kwargs, settings) -> None:
    change = running_change(requester)
    lease = settings.EXMAINT["LEASE_SECONDS"]
    now = timezone.now()
    WindowRun.objects.filter(change=change).update(lock_owner="w1@host:7#dead",
                                                   lock_expires_at=now - timedelta(seconds=lease - 5))
    assert watch_runs().worker_lost == []  # expired moments ago: the sweep is about to hand it over
    WindowRun.objects.filter(change=change).update(lock_expires_at=now - timedelta(seconds=lease + 5))
    assert watch_runs().worker_lost == [change.pk]
    [alert] = open_alerts(Alert.Kind.WORKER_LOST)
    assert "w1@host:7#dead" in alert.message and "no other worker has taken it over" in alert.message
    assert run_window(change.pk, worker="w2", **engine_kwargs) == "held"  # another worker takes the run over
    watch_runs()
    assert open_alerts(Alert.Kind.WORKER_LOST) == []


def test_a_step_running_past_its_timeout_and_grace_raises_a_stall_alert_even_for_a_busy_server(
        requester, servers, sim, settings) -> None:
    change = running_change(requester)
    now = timezone.now()
    WindowRun.objects.filter(change=change).update(lock_owner="w1@host:7#alive",
                                                   lock_expires_at=now + timedelta(seconds=20))
    step = StepRun.objects.create(change=change, order=1, phase="enter", key="enter.drain_queues",
                                  name="Wait for the local queues to drain", server=servers["EX01"],
                                  status=StepRun.Status.RUNNING, attempts=1, timeout_s=600,
                                  started_at=now - timedelta(seconds=600 + 110))
    assert watch_runs().step_stalled == []  # within its timeout plus the 2 min grace
    StepRun.objects.filter(pk=step.pk).update(started_at=now - timedelta(seconds=600 + 130))
    # The Exchange watchdog skips a server with an active change; the stall alert is about that very server.
    report = watchdog(sessions_factory=sim_factory(sim), now=now)
    assert report.runs.step_stalled == [(change.pk, "EX01")]
    assert report.left_in_maintenance == {}
    watch_runs()
    [alert] = open_alerts(Alert.Kind.STEP_STALLED)
    assert alert.server.name == "EX01"
    assert "step 1 (Wait for the local queues to drain) on EX01 has run 12 min" in alert.message
    assert "w1@host:7#alive" in alert.message
    StepRun.objects.filter(pk=step.pk).update(status=StepRun.Status.PASSED)
    watch_runs()
    assert open_alerts(Alert.Kind.STEP_STALLED) == []


def test_a_held_step_waiting_for_the_work_is_not_a_stall(requester, engine_kwargs) -> None:
    change = held(requester, engine_kwargs)
    StepRun.objects.filter(change=change, key="work.hold").update(started_at=timezone.now() - timedelta(hours=3))
    assert watch_runs().step_stalled == []


def test_a_server_still_in_maintenance_past_the_window_end_raises_an_alert(requester, engine_kwargs) -> None:
    change = held(requester, engine_kwargs)  # EX01 entered maintenance; the exit has not run
    end = timezone.now() - timedelta(minutes=3)
    Change.objects.filter(pk=change.pk).update(window_start=end - timedelta(hours=2), window_end=end)
    assert watch_runs().past_window_end == [(change.pk, "EX01")]
    [alert] = open_alerts(Alert.Kind.PAST_WINDOW_END)
    assert alert.server.name == "EX01" and "still in maintenance 3 min after the window" in alert.message
    StepRun.objects.filter(change=change, phase="exit").update(status=StepRun.Status.PASSED)
    watch_runs()
    assert open_alerts(Alert.Kind.PAST_WINDOW_END) == []


@pytest.mark.django_db(transaction=True)
def test_the_heartbeat_keeps_a_short_lease_alive_and_says_lost_once_renewals_stop(requester, servers) -> None:
    change = running_change(requester)
    run = WindowRun.objects.get(change=change)
    lease = Lease.take(WindowRun, run.pk, worker="w1", seconds=3, owner_field="lock_owner",
                       expires_field="lock_expires_at")
    with lease.heartbeat() as lost:
        time.sleep(4.5)  # longer than the lease: only the heartbeat keeps it
        assert not lost.is_set()
        assert WindowRun.objects.get(pk=run.pk).lock_expires_at > timezone.now()
    connection.close()
    # Renewals that keep failing (the database is unreachable): once a whole lease length passed without one, the
    # lease may have lapsed and another worker may take over: the work must send no more writes.
    with mock.patch.object(Lease, "renew", side_effect=OperationalError("server closed the connection")), \
            lease.heartbeat() as lost:
        assert not lost.is_set()
        time.sleep(3.5)
        assert lost.is_set()
