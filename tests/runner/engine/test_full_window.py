"""The real maintenance plan (runner.plans) through the real pypsrp client and the WinRM/PSRP endpoint serving the
simulator: a standalone server from scheduled to completed, and a stuck queue that pauses, is skipped and completes
with its issue recorded."""
from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest
from django.utils import timezone

from changes import services
from changes.models import StepRun, WindowRun
from changes.run_services import change_resume, change_work_done
from changes.states import State
from runner.clock import SimulatedClock
from runner.engine import run_window
from runner.scheduler import start_due_windows
from tests.support.catalogue import pre_approved

from .support import mutating_commands, organisation

pytestmark = pytest.mark.django_db


@pytest.fixture
def served(serve):
    sim = organisation(standalone=("EX01",))
    return sim, serve(sim)


def scheduled(requester, server: str = "EX01", ref: str = "CHG-FULL"):
    """A standard change for SERVER whose window opened a minute ago."""
    now = timezone.now()
    change, _ = services.change_create(actor=requester, data={
        "source": "servicenow", "external_ref": ref, "title": f"CU15 on {server}", "description": "",
        "change_type": "standard", "risk": "low", "impact": "low", "servers": [server], "plan": "maintenance",
        "window_start": now - timedelta(minutes=1), "window_end": now + timedelta(hours=4),
        "requested_by": "carol@example.com", "notify": [], "callback_url": "",
        "standard_template": pre_approved([server]),
    })
    assert change.state == State.SCHEDULED
    return change


def statuses(change):
    return dict(StepRun.objects.filter(change=change).order_by("order").values_list("key", "status"))


def test_a_standalone_window_runs_from_scheduled_to_completed_through_pypsrp(requester, operator, served) -> None:
    sim, endpoint = served
    change = scheduled(requester)
    assert start_due_windows() == [change.pk]
    clock = SimulatedClock(sim)
    assert run_window(change.pk, worker="w1", clock=clock) == "held"
    assert statuses(change)["work.hold"] == StepRun.Status.RUNNING
    assert sim.servers["EX01"].components.effective("ServerWideOffline") == "Inactive"
    change_work_done(change, actor=operator, notes="CU15 installed, rebooted")
    assert run_window(change.pk, worker="w2", clock=clock) == "completed"
    change.refresh_from_db()
    assert change.state == State.COMPLETED
    assert set(statuses(change).values()) <= {StepRun.Status.PASSED, StepRun.Status.SKIPPED}
    sent = Counter(mutating_commands(sim))
    # Transport is restarted on the way in (to pick up Draining) and on the way out; everything else goes once.
    assert {count for (cmdlet, _), count in sent.items() if cmdlet != "Restart-Service"} == {1}, sent
    assert {count for (cmdlet, _), count in sent.items() if cmdlet == "Restart-Service"} == {2}, sent
    assert [c.cmdlet for c in sim.commands if c.cmdlet.startswith("Set-")][0] == "Set-ServerComponentState"
    assert sim.servers["EX01"].components.effective("ServerWideOffline") == "Active"
    assert sim.servers["EX01"].components.effective("HubTransport") == "Active"
    assert endpoint.open_shells() == []
    assert WindowRun.objects.get(change=change).context["EX01"]


def test_a_stuck_queue_pauses_takes_a_skip_and_completes_with_the_issue_recorded(requester, operator,
                                                                                  served) -> None:
    sim, _ = served
    sim.inject("queue-stuck", "EX01")
    change = scheduled(requester)
    start_due_windows()
    clock = SimulatedClock(sim)
    assert run_window(change.pk, worker="w1", clock=clock) == "paused"
    failed = StepRun.objects.get(change=change, status=StepRun.Status.FAILED)
    assert failed.key == "enter.drain_queues"
    change_resume(change, actor=operator, action="skip", reason="external queue to fabrikam.com: accepted")
    assert run_window(change.pk, worker="w1", clock=clock) == "held"
    change_work_done(change, actor=operator, notes="done")
    assert run_window(change.pk, worker="w1", clock=clock) == "completed"
    failed.refresh_from_db()
    assert (failed.status, failed.resolution) == (StepRun.Status.SKIPPED, "external queue to fabrikam.com: accepted")
    assert failed.error or failed.issues


@pytest.fixture
def served_dag(serve):
    sim = organisation(dags={"DAG1": ("EX02", "EX03", "EX04")})
    return sim, serve(sim)


def test_a_dag_member_window_sends_the_documented_commands_in_order_through_pypsrp(requester, operator,
                                                                                   served_dag) -> None:
    sim, endpoint = served_dag
    # The policy before the window is IntrasiteOnly: the exit must restore it, not set Unrestricted blindly.
    sim.invoke("EX02", "Microsoft.Exchange", "Set-MailboxServer",
               [("Identity", "EX02"), ("DatabaseCopyAutoActivationPolicy", "IntrasiteOnly")])
    first_command = len(sim.commands)
    change = scheduled(requester, "EX02", "CHG-DAG")
    assert start_due_windows() == [change.pk]
    clock = SimulatedClock(sim)
    assert run_window(change.pk, worker="w1", clock=clock) == "held"
    change_work_done(change, actor=operator, notes="done")
    assert run_window(change.pk, worker="w1", clock=clock) == "completed"
    def targets_ex02(params: dict) -> bool:
        return any(str(params.get(k, "")).upper().startswith("EX02") for k in ("Identity", "Server", "Name"))

    writes = [c for c in sim.commands[first_command:] if not c.cmdlet.startswith(("Get-", "Test-"))]
    sent = [(c.cmdlet, dict((str(n), str(v)) for n, v in c.parameters)) for c in writes]
    # Every write names EX02 (Restart-Service names the service: it runs on EX02's own endpoint, checked below).
    assert [(c, p) for c, p in sent if c != "Restart-Service" and not targets_ex02(p)] == []
    # Exchange cmdlets run from a healthy peer's endpoint (EX02's own RPS goes offline with ServerWideOffline);
    # services and cluster cmdlets run on EX02's own WinRM endpoint.
    assert {c.server for c in writes if c.endpoint == "Microsoft.Exchange"} == {"EX03"}
    assert {c.server for c in writes if c.endpoint == "Microsoft.PowerShell"} == {"EX02"}
    ordered = [(cmdlet, params.get("Component") or params.get("Name") or params.get("Target")
                or next((k for k in params if k.startswith("DatabaseCopy")), ""), params.get("State", ""))
               for cmdlet, params in sent]
    assert ordered == [
        ("Set-ServerComponentState", "HubTransport", "Draining"),
        ("Restart-Service", "MSExchangeTransport", ""),
        ("Restart-Service", "MSExchangeFrontEndTransport", ""),
        ("Redirect-Message", "['ex03.corp.example']", ""),  # -Target takes an array of FQDNs
        ("Suspend-ClusterNode", "EX02", ""),
        ("Set-MailboxServer", "DatabaseCopyActivationDisabledAndMoveNow", ""),
        ("Set-MailboxServer", "DatabaseCopyAutoActivationPolicy", ""),
        ("Set-ServerComponentState", "ServerWideOffline", "Inactive"),
        ("Set-ServerComponentState", "ServerWideOffline", "Active"),
        ("Resume-ClusterNode", "EX02", ""),
        ("Set-MailboxServer", "DatabaseCopyActivationDisabledAndMoveNow", ""),
        ("Set-MailboxServer", "DatabaseCopyAutoActivationPolicy", ""),
        ("Set-ServerComponentState", "HubTransport", "Active"),
        ("Restart-Service", "MSExchangeTransport", ""),
        ("Restart-Service", "MSExchangeFrontEndTransport", ""),
    ]
    assert [p.get("DatabaseCopyActivationDisabledAndMoveNow") for c, p in sent if c == "Set-MailboxServer"
            and "DatabaseCopyActivationDisabledAndMoveNow" in p] == ["True", "False"]
    assert [p.get("DatabaseCopyAutoActivationPolicy") for c, p in sent if c == "Set-MailboxServer"
            and "DatabaseCopyAutoActivationPolicy" in p] == ["Blocked", "IntrasiteOnly"]
    # Reads only, so the writes above are unchanged: the DAG's own member list before the entry (checked against
    # the inventory), and the Primary Active Manager after the pause (§1(b) 5e).
    window = sim.commands[first_command:]
    dag_reads = [i for i, c in enumerate(window) if c.cmdlet == "Get-DatabaseAvailabilityGroup"]
    pause = next(i for i, c in enumerate(window) if c.cmdlet == "Suspend-ClusterNode")
    assert dag_reads[0] < pause < dag_reads[1]
    assert (statuses(change)["precheck.dag_members"], statuses(change)["enter.pam_moved"]) == (
        StepRun.Status.PASSED, StepRun.Status.SKIPPED)  # skipped: the role had already left with the pause
    assert sim.servers["EX02"].components.effective("ServerWideOffline") == "Active"
    assert endpoint.open_shells() == []


def test_when_the_first_healthy_peer_does_not_answer_the_window_runs_through_the_next(requester, operator,
                                                                                     served_dag) -> None:
    sim, endpoint = served_dag
    sim.inject("unreachable", "EX03", times=-1)  # EX03's endpoints refuse every connection, for the whole window
    first_command = len(sim.commands)
    change = scheduled(requester, "EX02", "CHG-RELAY")
    start_due_windows()
    clock = SimulatedClock(sim)
    assert run_window(change.pk, worker="w1", clock=clock) == "held"
    change_work_done(change, actor=operator, notes="done")
    assert run_window(change.pk, worker="w1", clock=clock) == "completed"
    commands = sim.commands[first_command:]
    # Every Exchange cmdlet reached the simulator through EX04's endpoint; EX03 received nothing.
    assert {c.server for c in commands if c.endpoint == "Microsoft.Exchange"} == {"EX04"}
    assert endpoint.stats.creates[("EX03", "Microsoft.Exchange")] == 0
    assert Counter(c.cmdlet for c in commands if c.cmdlet.startswith(("Set-", "Suspend-", "Resume-"))) == Counter(
        {"Set-ServerComponentState": 4, "Set-MailboxServer": 4, "Suspend-ClusterNode": 1, "Resume-ClusterNode": 1})
    issues = [i for s in StepRun.objects.filter(change=change) for i in s.issues]
    moved = [i for i in issues if "moved from EX03's endpoint to EX04's" in str(i)]
    # Said where it happened, once per engine run (entry up to the hold; then the exit): each opens its sessions.
    assert len(moved) == 2, issues
    # The step log says whose endpoint ran each command: the auditor sees EX04, never EX03.
    logged = [c for s in StepRun.objects.filter(change=change) for c in s.commands]
    assert {c.get("via") for c in logged if c["endpoint"] == "Microsoft.Exchange"} == {"EX04"}
    assert {c.get("via") for c in logged if c["endpoint"] == "Microsoft.PowerShell"} == {None}  # EX02's own
    assert endpoint.open_shells() == []
