"""Issue 24's fault suite, the long cases (`make test-faults`; CI runs it after the two passes): the database
stopped for 90 s and Redis for 90 s in the middle of a step, Redis for 90 s while the window holds for the work, and
the Exchange endpoint killed for 60 s. Each window completes, or pauses with an alert and completes on the
operator's retry; each resumes within 60 s of the service's return, sends no mutating command twice, and its step
log lists every command the server received."""
from __future__ import annotations

import re

import pytest

from changes.models import Alert, Change, Pause, StepRun
from changes.run_services import change_resume, change_work_done
from changes.states import State

from .support import (
    OnCommand,
    Outage,
    World,
    alerts,
    check_the_window,
    finished,
    parked_on_the_work_hold,
    running_change,
    state,
    wait,
)
from .test_faults import run_results

pytestmark = [pytest.mark.faults_long]


def test_a_90_s_database_outage_mid_step_ends_the_run_cleanly_and_the_sweep_resumes_it(world: World) -> None:
    # A 30 s lease: the engine retries its writes for 30 s, then ends the run; the lease has run out by then.
    worker = world.worker("w1", EXMAINT_LEASE_SECONDS="30")
    outage = Outage(world.pg.stop, world.pg.start, 90)
    OnCommand(world.sim, "Restart-Service", outage.begin, Name="MSExchangeTransport")
    change = running_change(world.requester)

    wait(world, outage.returned.is_set, "the database outage to end", timeout=200, sweep=False)
    assert "database unavailable" in run_results(world), world.workers.log_of(worker)
    took = wait(world, lambda: parked_on_the_work_hold(change), "the work hold", timeout=60,
                since=outage.returned_at)
    change_work_done(change, actor=world.operator, notes="CU15 installed")
    wait(world, lambda: finished(change), "completion", timeout=60)

    check_the_window(world, change)
    restart = StepRun.objects.get(change=change, key="enter.restart_transport")
    assert restart.attempts == 2, "the interrupted step ran again on the resumed run"
    assert worker.poll() is None and took < 60


def test_a_90_s_redis_outage_mid_step_does_not_stop_the_window(world: World) -> None:
    worker = world.worker("w1")
    outage = Outage(world.redis.stop, world.redis.start, 90)
    OnCommand(world.sim, "Restart-Service", outage.begin, Name="MSExchangeTransport")
    change = running_change(world.requester)

    # The engine needs no broker: the window goes on to the work hold during the outage.
    wait(world, lambda: parked_on_the_work_hold(change), "the work hold", timeout=60, sweep=False)
    assert not outage.returned.is_set()
    wait(world, outage.returned.is_set, "Redis to return", timeout=150, sweep=False)
    wait(world, lambda: "Connected to redis" in world.workers.log_of(worker).split("Connection to broker lost")[-1],
         "the worker to reconnect", timeout=60, sweep=False)
    change_work_done(change, actor=world.operator, notes="CU15 installed")
    took = wait(world, lambda: finished(change), "completion", timeout=60, since=outage.returned_at)

    check_the_window(world, change)
    assert worker.poll() is None and "Unrecoverable error" not in world.workers.log_of(worker)
    assert took < 60 + 30  # the operator's report came after the worker reconnected


def test_a_90_s_redis_outage_during_the_work_hold_loses_no_work_done_report(world: World) -> None:
    worker = world.worker("w1")
    change = running_change(world.requester)
    wait(world, lambda: parked_on_the_work_hold(change), "the work hold", timeout=90, sweep=False)

    outage = Outage(world.redis.stop, world.redis.start, 90)
    outage.begin()
    # Reported while the broker is down: the message that would wake the run is lost; the sweep stands behind it.
    change_work_done(change, actor=world.operator, notes="CU15 installed")
    wait(world, outage.returned.is_set, "Redis to return", timeout=150)
    took = wait(world, lambda: finished(change), "completion", timeout=60, since=outage.returned_at)

    check_the_window(world, change)
    assert worker.poll() is None and took < 60


def test_the_exchange_endpoint_killed_for_60_s_mid_step_pauses_with_an_alert_and_a_retry_completes(
        world: World) -> None:
    world.worker("w1")
    outage = Outage(world.endpoint.stop, world.endpoint.start, 60)
    OnCommand(world.sim, "Restart-Service", outage.begin, Name="MSExchangeTransport")
    change = running_change(world.requester)

    wait(world, lambda: state(change) == State.PAUSED, "the window to pause", timeout=90, sweep=False)
    assert [kind for kind, _ in alerts(change)] == [Alert.Kind.UNREACHABLE]
    pause = Pause.objects.get(change=change)
    assert (pause.code, pause.step.key) == (Pause.Reason.UNREACHABLE, "enter.restart_transport")
    wait(world, outage.returned.is_set, "the endpoint to return", timeout=90, sweep=False)
    change_resume(Change.objects.get(pk=change.pk), actor=world.operator, action="retry",
                  reason="the endpoint answers again")
    took = wait(world, lambda: parked_on_the_work_hold(change), "the work hold", timeout=60,
                since=outage.returned_at)
    change_work_done(change, actor=world.operator, notes="CU15 installed")
    wait(world, lambda: finished(change), "completion", timeout=60)

    check_the_window(world, change)
    restart = StepRun.objects.get(change=change, key="enter.restart_transport")
    # The restart sent before the endpoint died is on the log, with the transport error; the retry verified the
    # service instead of restarting it again.
    transport = [c for c in restart.commands if c["cmdlet"] == "Restart-Service"
                 and c["parameters"] == {"Name": "MSExchangeTransport"}]
    assert len(transport) == 1 and re.match(r"failed: |sent, outcome unknown", transport[0]["outcome"])
    assert took < 60
