"""Real Celery workers (prefork, Redis broker, PostgreSQL) run windows against the simulator served over WinRM/PSRP
in this process; a worker is SIGKILLed mid-window and a new worker finishes the window: the engine's test plan
killed in a poll, and the real maintenance plan killed with a mutating command executed but not yet answered. Two
workers given copies of one change's run (or start) message at once: one runs the window, the other gives up."""
from __future__ import annotations

import re
import subprocess
from collections import Counter

import pytest

from changes.models import Alert, Change, StepRun, WindowRun
from changes.queue import enqueue_run, enqueue_start
from changes.run_services import change_work_done
from changes.states import State
from runner.engine import RESUMED
from runner.scheduler import resume_held_windows
from tests.support.workers import Workers

from .support import (
    MUTATING_VERBS,
    HeldAnswer,
    maintenance_leftovers,
    mutating_commands,
    open_change,
    organisation,
    running_change,
)

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.django_db(transaction=True)]

APP = "tests.runner.engine.worker_app"
# The simulated Exchange and the workers' clock both run this many times faster than the wall clock (as in the
# demo): a 10 s poll sleeps 1/6 s, the 60 s BootLoader wait after a transport restart lasts 1 s.
SPEED = 60
# The shortest lease the settings accept: a killed worker's run is taken over within 5 s.
REAL_PLAN_ENV = {"EXMAINT_RUNNER_CLOCK": f"scaled:{SPEED}", "EXMAINT_LEASE_SECONDS": "5"}
# The engine's test plan (worker_app.py) on the real clock: its settle step polls Get-Queue every 0.5 s.
TEST_PLAN_ENV = {"EXMAINT_TEST_PLAN": "1", "EXMAINT_LEASE_SECONDS": "6"}


def step_status(change: Change, key: str) -> str:
    return StepRun.objects.filter(change=change, key=key).values_list("status", flat=True).first() or ""


def unpaused_state(change: Change) -> str:
    """The change's state; fails the test at once (naming the failed step) if the window paused."""
    state = Change.objects.get(pk=change.pk).state
    if state == State.PAUSED:
        failed = StepRun.objects.filter(change=change, status=StepRun.Status.FAILED).first()
        pytest.fail(f"the window paused: {failed.key}: {failed.error}" if failed else "the window paused")
    return state


def reached(change: Change, key: str) -> bool:
    """Whether step ``key`` is running (a hold waits in state running)."""
    return unpaused_state(change) == State.RUNNING and step_status(change, key) == StepRun.Status.RUNNING


def completed(change: Change) -> bool:
    return unpaused_state(change) == State.COMPLETED


# The line Celery logs when a task returns: run_window returns what the engine did (held, busy, completed, …),
# start_window what the scheduler did (started, not scheduled (running), refused: …).
TASK_RESULT = r"Task runner\.tasks\.{}\[[0-9a-f-]+\] succeeded in [0-9.e-]+s: ['\"](.*)['\"]$"
# The line the runner logs for each command it sends to a server.
COMMAND_SENT = r"\] EX\d+ [A-Z][a-z]+-\w+ .* → "


def task_results(workers: Workers, task: str, *processes: subprocess.Popen) -> list[str]:
    """What each ``runner.tasks.<task>`` the given workers finished returned, worker by worker, from their logs."""
    return [result for worker in processes
            for result in re.findall(TASK_RESULT.format(task), workers.log_of(worker), flags=re.MULTILINE)]


def finished(workers: Workers, change: Change) -> bool:
    """The window completed and the task that completed it has returned: its lease is released. (The change reads
    completed a moment earlier, while that worker still closes its sessions and then releases the lease.)"""
    return completed(change) and "completed" in task_results(
        workers, "run_window", *(process for process, _ in workers.started))


def commands_sent(workers: Workers, worker: subprocess.Popen) -> list[str]:
    return re.findall(COMMAND_SENT, workers.log_of(worker))


def real_plan_worker(workers: Workers, name: str) -> subprocess.Popen:
    """A worker running the project's engine and the real maintenance plan (no test plan, no test sessions)."""
    return workers.start(name, app=APP, **REAL_PLAN_ENV)


def kill_with_answer_held(workers: Workers, held: HeldAnswer, worker: subprocess.Popen, change: Change) -> None:
    """SIGKILL ``worker`` while the server has executed the held command and the worker still waits for its answer;
    then let the simulator's pipeline thread finish (its answer goes to nobody)."""
    try:
        workers.wait_for(held.reached.is_set, f"{held.cmdlet} {held.parameters} to reach the simulated server")
        assert WindowRun.objects.get(change=change).lock_owner.startswith("w1@")
        workers.kill(worker)
    finally:
        held.release()


def finish_on_a_new_worker(workers: Workers, change: Change, operator) -> None:
    """A second worker takes the run over once the killed worker's lease expires (the beat sweep re-queues it; the
    killed worker's message stays unacknowledged in Redis), holds for the work, then exits on the work-done report."""
    real_plan_worker(workers, "w2")
    workers.wait_for(lambda: reached(change, "work.hold"), "the work hold", every=resume_held_windows)
    change_work_done(change, actor=operator, notes="CU15 installed")
    workers.wait_for(lambda: finished(workers, change), "completion")


def mutating_sequence(sim) -> list[tuple[str, str]]:
    """The mutating commands the simulated servers received, in order, as (cmdlet, what it set) from the simulator's
    redacted command record."""
    out = []
    for command in sim.commands:
        if not command.cmdlet.startswith(MUTATING_VERBS):
            continue
        params = {str(n): str(v) for n, v in command.parameters}
        target = params.get("Component") or params.get("Name") or params.get("Target") or ""
        setting = next((f"{k} {v}" for k, v in params.items() if k.startswith("DatabaseCopy")), params.get("State"))
        out.append((command.cmdlet, " ".join(filter(None, (target, setting)))))
    return out


def test_a_window_survives_a_sigkilled_worker_and_sends_no_mutating_command_twice(
        requester, operator, servers, serve, celery_workers) -> None:
    sim = organisation(standalone=("EX01",))
    serve(sim)
    first = celery_workers.start("w1", app=APP, **TEST_PLAN_ENV, EXMAINT_TEST_SETTLE_SECONDS="30")
    change = running_change(requester)  # queues run_window on commit, through Redis
    celery_workers.wait_for(lambda: reached(change, "enter.settle"), "the settle step to start")
    celery_workers.wait_for(lambda: sum(c.cmdlet == "Get-Queue" for c in sim.commands) >= 2,
                            "a few polls into the wait")
    celery_workers.kill(first)
    assert step_status(change, "enter.settle") == StepRun.Status.RUNNING
    assert WindowRun.objects.get(change=change).lock_owner.startswith("w1@")

    celery_workers.start("w2", app=APP, **TEST_PLAN_ENV, EXMAINT_TEST_SETTLE_SECONDS="1")
    # The broker keeps the killed worker's message unacknowledged; the beat sweep finds the expired lease.
    celery_workers.wait_for(lambda: reached(change, "work.hold"), "the work hold", timeout=90,
                            every=resume_held_windows)
    change_work_done(change, actor=operator, notes="patched")
    celery_workers.wait_for(lambda: finished(celery_workers, change), "completion")

    settle = StepRun.objects.get(change=change, key="enter.settle")
    assert settle.attempts == 2
    assert settle.issues[0]["summary"] == RESUMED
    assert WindowRun.objects.get(change=change).lock_owner == ""
    sent = Counter(mutating_commands(sim))
    assert len(sent) == 4 and set(sent.values()) == {1}, sent


STANDALONE_WINDOW = [
    ("Set-ServerComponentState", "HubTransport Draining"),
    ("Restart-Service", "MSExchangeTransport"),
    ("Restart-Service", "MSExchangeFrontEndTransport"),
    ("Set-ServerComponentState", "ServerWideOffline Inactive"),
    ("Set-ServerComponentState", "ServerWideOffline Active"),
    ("Set-ServerComponentState", "HubTransport Active"),
    ("Restart-Service", "MSExchangeTransport"),
    ("Restart-Service", "MSExchangeFrontEndTransport"),
]


def test_the_maintenance_plan_survives_a_worker_killed_with_a_transport_restart_unanswered(
        requester, operator, servers, serve, celery_workers) -> None:
    sim = organisation(standalone=("EX01",), speed=SPEED)
    serve(sim)
    held = HeldAnswer(sim, "Restart-Service", Name="MSExchangeTransport")
    first = real_plan_worker(celery_workers, "w1")
    change = running_change(requester)  # the real "maintenance" plan, queued on commit through Redis
    kill_with_answer_held(celery_workers, held, first, change)

    # The killed worker left the step running and, persisted before the command, the mark that it was sent.
    assert step_status(change, "enter.restart_transport") == StepRun.Status.RUNNING
    assert "transport_restarted_enter_sent_MSExchangeTransport" in WindowRun.objects.get(change=change).context["EX01"]
    assert sim.servers["EX01"].components.effective("HubTransport") == "Draining"

    finish_on_a_new_worker(celery_workers, change, operator)

    restart = StepRun.objects.get(change=change, key="enter.restart_transport")
    assert restart.attempts == 2
    assert [i["summary"] for i in restart.issues] == [
        RESUMED, "Restart-Service MSExchangeTransport was sent by an interrupted attempt"]
    # The new worker verified the service instead of restarting it again, and restarted only what was left. The
    # killed attempt's restart is on the log, recorded before it was sent, its outcome unknown (issue 24 item 3).
    assert [(c["parameters"], c["step_attempt"], c["outcome"]) for c in restart.commands
            if c["cmdlet"] == "Restart-Service"] == [
        ({"Name": "MSExchangeTransport"}, 1, "sent, outcome unknown"),
        ({"Name": "MSExchangeFrontEndTransport"}, 2, "ok")]
    assert set(StepRun.objects.filter(change=change).values_list("status", flat=True)) <= {
        StepRun.Status.PASSED, StepRun.Status.SKIPPED}
    # Exactly what an uninterrupted window sends: transport restarted once on the way in and once on the way out.
    assert mutating_sequence(sim) == STANDALONE_WINDOW
    assert maintenance_leftovers(sim, "EX01") == []
    assert WindowRun.objects.get(change=change).lock_owner == ""


def parked_on_the_work_hold(change: Change) -> bool:
    """The work hold waits for the operator with the lease released and a wake-up time set."""
    run = WindowRun.objects.get(change=change)
    return reached(change, "work.hold") and run.lock_owner == "" and run.wake_at is not None


def two_ready_workers(workers: Workers) -> dict[str, subprocess.Popen]:
    """Two real-plan workers, both consuming: a message sent now goes to whichever is free, one each."""
    pair = {name: real_plan_worker(workers, name) for name in ("w1", "w2")}
    workers.wait_for(lambda: all(" ready." in workers.log_of(w) for w in pair.values()), "both workers to be ready")
    return pair


def test_two_workers_racing_for_one_change_run_the_maintenance_window_once(
        requester, operator, servers, serve, celery_workers) -> None:
    sim = organisation(standalone=("EX01",), speed=SPEED)
    serve(sim)
    # The winner's first write is executed and left unanswered until the other worker has given up, so the other
    # copy meets the lease in the middle of the entry however the broker times the two deliveries.
    held = HeldAnswer(sim, "Set-ServerComponentState", Component="HubTransport", State="Draining")
    workers = two_ready_workers(celery_workers)
    change = running_change(requester)  # queues run_window on commit, through Redis
    enqueue_run(change.pk)  # the same run once more, as a redelivered message would: one copy for each worker
    try:
        celery_workers.wait_for(held.reached.is_set, "the first write of the window")
        owner = WindowRun.objects.get(change=change).lock_owner
        winner = owner.partition("@")[0]
        assert winner in workers, f"the lease is held by {owner!r}"
        loser = next(name for name in workers if name != winner)
        celery_workers.wait_for(lambda: task_results(celery_workers, "run_window", workers[loser]) == ["busy"],
                                f"{loser} to find the window taken")
        assert WindowRun.objects.get(change=change).lock_owner == owner  # the loser took nothing over
    finally:
        held.release()

    celery_workers.wait_for(
        lambda: parked_on_the_work_hold(change) and task_results(celery_workers, "run_window", workers[winner]) == [
            "held"], f"{winner} to park the window on the work hold")
    # The entry ran once, on the winner; the loser gave up before running a step or sending a command.
    assert task_results(celery_workers, "run_window", workers[loser]) == ["busy"]
    assert f"change {change.pk} step" in celery_workers.log_of(workers[winner])
    assert f"change {change.pk} step" not in celery_workers.log_of(workers[loser])
    assert commands_sent(celery_workers, workers[winner]) and commands_sent(celery_workers, workers[loser]) == []
    assert mutating_sequence(sim) == STANDALONE_WINDOW[:4]

    change_work_done(change, actor=operator, notes="CU15 installed")
    celery_workers.wait_for(lambda: finished(celery_workers, change), "completion")
    # Whichever worker the work-done report's message reached ran the exit, once.
    assert sorted(task_results(celery_workers, "run_window", *workers.values())) == ["busy", "completed", "held"]

    attempts = dict(StepRun.objects.filter(change=change).values_list("key", "attempts"))
    assert attempts.pop("work.hold") == 2  # held, then run again after the work-done report
    assert set(attempts.values()) == {1}, attempts  # every other step ran once
    assert set(StepRun.objects.filter(change=change).values_list("status", flat=True)) <= {
        StepRun.Status.PASSED, StepRun.Status.SKIPPED}
    # Exactly what an uninterrupted window sends: each write once on the way in and once on the way out.
    assert mutating_sequence(sim) == STANDALONE_WINDOW
    assert maintenance_leftovers(sim, "EX01") == []
    assert WindowRun.objects.get(change=change).lock_owner == ""
    assert list(Alert.objects.filter(change=change).values_list("kind", "message")) == []


def test_two_workers_racing_to_start_one_window_start_it_once_and_raise_no_alert(
        requester, servers, serve, celery_workers) -> None:
    sim = organisation(standalone=("EX01",), speed=SPEED)
    serve(sim)
    workers = two_ready_workers(celery_workers).values()
    change = open_change(requester)  # scheduled in its open window: its start message is due at once
    enqueue_start(change.pk, change.window_start)  # the same start once more, as a redelivery would: one per worker
    celery_workers.wait_for(lambda: len(task_results(celery_workers, "start_window", *workers)) == 2,
                            "both start messages to be handled")

    # Each worker took one copy: one started the window, the other found it running and left it alone, without
    # an alert that the window "did not start".
    assert sorted(tuple(task_results(celery_workers, "start_window", w)) for w in workers) == [
        ("not scheduled (running)",), ("started",)]
    assert list(Alert.objects.filter(change=change).values_list("kind", "message")) == []
    assert WindowRun.objects.filter(change=change).count() == 1
    # The one start queued one run, which entered maintenance once and parked on the work hold.
    celery_workers.wait_for(lambda: parked_on_the_work_hold(change) and task_results(
        celery_workers, "run_window", *workers) == ["held"], "the window to park on the work hold")
    assert mutating_sequence(sim) == STANDALONE_WINDOW[:4]


DAG_MEMBER_WINDOW = [
    ("Set-ServerComponentState", "HubTransport Draining"),
    ("Restart-Service", "MSExchangeTransport"),
    ("Restart-Service", "MSExchangeFrontEndTransport"),
    ("Redirect-Message", "['ex03.corp.example']"),
    ("Suspend-ClusterNode", "EX02"),
    ("Set-MailboxServer", "DatabaseCopyActivationDisabledAndMoveNow True"),
    ("Set-MailboxServer", "DatabaseCopyAutoActivationPolicy Blocked"),
    ("Set-ServerComponentState", "ServerWideOffline Inactive"),
    ("Set-ServerComponentState", "ServerWideOffline Active"),
    ("Resume-ClusterNode", "EX02"),
    ("Set-MailboxServer", "DatabaseCopyActivationDisabledAndMoveNow False"),
    ("Set-MailboxServer", "DatabaseCopyAutoActivationPolicy Unrestricted"),
    ("Set-ServerComponentState", "HubTransport Active"),
    ("Restart-Service", "MSExchangeTransport"),
    ("Restart-Service", "MSExchangeFrontEndTransport"),
]


def test_a_dag_member_exit_survives_a_worker_killed_with_a_transport_restart_unanswered(
        requester, operator, servers, serve, celery_workers) -> None:
    sim = organisation(dags={"DAG1": ("EX02", "EX03", "EX04")}, speed=SPEED)
    # EX02's queues stand still for a few Get-Queue polls, so they still hold mail when the entry redirects it
    # (in scaled time they could otherwise drain first, and the window would send no Redirect-Message).
    sim.inject("queue-slow", "EX02")
    serve(sim)
    # The exit's restart of the second transport service (the entry restarted it once already).
    held = HeldAnswer(sim, "Restart-Service", after=1, Name="MSExchangeFrontEndTransport")
    first = real_plan_worker(celery_workers, "w1")
    change = running_change(requester, servers=("EX02",))
    celery_workers.wait_for(lambda: reached(change, "work.hold"), "the work hold")
    assert (sim.servers["EX02"].cluster_state, sim.servers["EX02"].activation_policy) == ("Paused", "Blocked")
    assert sim.servers["EX02"].components.effective("ServerWideOffline") == "Inactive"
    change_work_done(change, actor=operator, notes="CU15 installed")  # the same worker runs the exit
    kill_with_answer_held(celery_workers, held, first, change)

    # Killed mid-exit: ServerWideOffline, the cluster node and activation are restored, transport is half restarted.
    ex02 = sim.servers["EX02"]
    assert (ex02.components.effective("ServerWideOffline"), ex02.cluster_state, ex02.activation_policy) == (
        "Active", "Up", "Unrestricted")
    assert step_status(change, "exit.restart_transport") == StepRun.Status.RUNNING
    context = WindowRun.objects.get(change=change).context["EX02"]
    assert context["transport_restarted_exit_done"] == ["MSExchangeTransport"]
    assert "transport_restarted_exit_sent_MSExchangeFrontEndTransport" in context

    real_plan_worker(celery_workers, "w2")
    celery_workers.wait_for(lambda: finished(celery_workers, change), "completion", every=resume_held_windows)

    restart = StepRun.objects.get(change=change, key="exit.restart_transport")
    assert restart.attempts == 2
    assert [i["summary"] for i in restart.issues] == [
        RESUMED,
        "Restart-Service MSExchangeTransport was sent by an interrupted attempt",
        "Restart-Service MSExchangeFrontEndTransport was sent by an interrupted attempt"]
    # The interrupted attempt's restarts are on the log (the second with its outcome unknown); the new worker sent
    # none again (issue 24 item 3).
    assert [(c["parameters"], c["step_attempt"], c["outcome"]) for c in restart.commands
            if c["cmdlet"] == "Restart-Service"] == [
        ({"Name": "MSExchangeTransport"}, 1, "ok"), ({"Name": "MSExchangeFrontEndTransport"}, 1,
                                                     "sent, outcome unknown")]
    assert set(StepRun.objects.filter(change=change).values_list("status", flat=True)) <= {
        StepRun.Status.PASSED, StepRun.Status.SKIPPED}
    assert mutating_sequence(sim) == DAG_MEMBER_WINDOW
    assert maintenance_leftovers(sim, "EX02") == []
    assert WindowRun.objects.get(change=change).lock_owner == ""
