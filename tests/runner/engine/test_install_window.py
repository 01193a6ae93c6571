"""Exchange updates run by the engine end to end: through the real pypsrp client and the WinRM/PSRP endpoint serving
the simulator (whose clock the engine's waits advance, so an hour of setup takes seconds), a CU and an SU window on
a standalone server complete on their own and prove the new build; a failing setup pauses with its evidence; a
worker that dies while setup runs is replaced by one that polls on and never starts setup twice."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from changes import services
from changes.models import AuditHead, Pause, Server, StepRun, WindowRun
from changes.run_services import change_start
from changes.states import State
from reports.context import build_report_data
from reports.render import render_html
from runner.clock import SimulatedClock
from runner.engine import run_window
from tests.support.catalogue import pre_approved

from .support import WorkerDied, organisation, sim_factory

pytestmark = pytest.mark.django_db

CU15 = {"kind": "exchange-update", "package": {"kind": "cu", "path": "\\\\files.contoso.com\\exchange\\CU15"},
        "target_build": "15.2.1748.10", "ad_prepared": True}
SU = {"kind": "exchange-update", "target_build": "15.2.1544.14",
      "package": {"kind": "su", "path": "D:\\Exchange\\Exchange2019-KB5049233-x64-en.msp"}}


def started(requester, work: dict, ref: str = "CHG-INSTALL"):
    now = timezone.now()
    change, _ = services.change_create(actor=requester, data={
        "source": "servicenow", "external_ref": ref, "title": "Exchange update on EX01", "description": "",
        "change_type": "standard", "risk": "low", "impact": "low", "servers": ["EX01"], "plan": "maintenance",
        "window_start": now - timedelta(minutes=1), "window_end": now + timedelta(hours=6),
        "requested_by": "carol@example.com", "notify": [], "callback_url": "", "work": work,
        "standard_template": pre_approved(["EX01"]),
    })
    change_start(change, actor="system:scheduler")
    change.refresh_from_db()
    return change


def dies_on(sim, cmdlet: str, nth: int) -> None:
    """The worker dies (as with SIGKILL: nothing in the engine catches it) when it sends ``cmdlet`` the nth time;
    the simulator answers normally afterwards (in-process sessions: the engine's own thread runs the command)."""
    original, seen = sim.invoke, {"n": 0}

    def invoke(server, endpoint, name, params, **kwargs):
        if name == cmdlet:
            seen["n"] += 1
            if seen["n"] == nth:
                raise WorkerDied(f"SIGKILL at {cmdlet} #{nth}")
        return original(server, endpoint, name, params, **kwargs)

    sim.invoke = invoke


def statuses(change) -> dict[str, str]:
    return dict(StepRun.objects.filter(change=change).order_by("order").values_list("key", "status"))


@pytest.fixture
def served(serve):
    sim = organisation(standalone=("EX01",))
    return sim, serve(sim)


@pytest.mark.parametrize(("work", "build"), [(CU15, "15.2.1748.10"), (SU, "15.2.1544.14")], ids=["cu", "su"])
def test_an_update_window_completes_on_its_own_through_pypsrp_and_proves_the_build(requester, served, work,
                                                                                   build) -> None:
    sim, _ = served
    change = started(requester, work)
    assert run_window(change.pk, worker="w1", clock=SimulatedClock(sim)) == "completed", statuses(change)
    change.refresh_from_db()
    assert change.state == State.COMPLETED
    assert set(statuses(change).values()) <= {StepRun.Status.PASSED, StepRun.Status.SKIPPED}
    proof = StepRun.objects.get(change=change, key="work.install_verify")
    assert (proof.findings["build_before"], proof.findings["build_after"]) == ("15.2.1544.4", build)
    install = WindowRun.objects.get(change=change).context["EX01"]["install"]
    assert install["result"] == "succeeded" and install["status"] == "installed"
    assert sim.servers["EX01"].windows.setups_started == 1
    assert [c.cmdlet for c in sim.commands].count("Restart-Computer") == 1
    assert Server.objects.get(name="EX01").build == build  # the inventory follows what the server reports
    # The install account's password went to the server once, and nowhere into the records.
    assert all("Sim-Passw0rd" not in str(row.commands) for row in StepRun.objects.filter(change=change))
    # The report proves it: build before and after, the install's duration and phase, the restart's downtime.
    head = AuditHead.objects.get(id=1)
    report = build_report_data(change.pk, head_seq=head.seq, head_hash=head.hash)
    assert report.work.startswith("install the ")
    [row] = report.install[0].rows
    assert row[:3] == ["EX01", "15.2.1544.4", build] and row[-1] == "installed"
    assert row[5].endswith(" min") and row[3].endswith(" min")
    html = render_html(report)
    assert "Build after (ExSetup.exe)" in html and build in html and "Sim-Passw0rd" not in html


def test_a_failing_cu_setup_pauses_with_the_watermark_as_evidence(requester, served) -> None:
    sim, _ = served
    sim.inject("setup-fails", "EX01")
    change = started(requester, CU15)
    assert run_window(change.pk, worker="w1", clock=SimulatedClock(sim)) == "paused"
    pause = Pause.objects.get(change=change)
    assert pause.step.key == "work.install_wait"
    assert pause.evidence["watermarks"] and "MSExchangeTransport" in pause.evidence["disabled_services"]
    assert "critical errors" in pause.message


def test_a_worker_dying_while_setup_runs_is_followed_by_one_that_polls_and_never_starts_setup_twice(
        requester, servers, sim) -> None:
    servers["EX01"].install_username = "CONTOSO\\exinstall"
    servers["EX01"].set_install_password("Install-Passw0rd")
    servers["EX01"].save()
    change = started(requester, CU15)
    clock = SimulatedClock(sim)
    dies_on(sim, "Get-Content", 3)  # the third read of the setup log
    with pytest.raises(WorkerDied):
        run_window(change.pk, worker="w1", clock=clock, sessions_factory=sim_factory(sim))
    assert statuses(change)["work.install_wait"] == StepRun.Status.RUNNING
    assert run_window(change.pk, worker="w2", clock=clock, sessions_factory=sim_factory(sim)) == "completed"
    wait = StepRun.objects.get(change=change, key="work.install_wait")
    assert wait.status == StepRun.Status.PASSED and "found running" in wait.issues[0]["summary"]
    assert sim.servers["EX01"].windows.setups_started == 1
    assert [c.cmdlet for c in sim.commands].count("Start-ScheduledTask") == 1


def test_the_dry_run_shows_the_install_steps_and_runs_the_install_gates_read_only(requester, operator, servers,
                                                                                   sim) -> None:
    from runner.dry_run import change_dry_run

    servers["EX01"].install_username = "CONTOSO\\exinstall"
    servers["EX01"].set_install_password("Install-Passw0rd")
    servers["EX01"].save()
    now = timezone.now()
    change, _ = services.change_create(actor=requester, data={
        "source": "servicenow", "external_ref": "CHG-DRY", "title": "CU15", "description": "",
        "change_type": "normal", "risk": "low", "impact": "low", "servers": ["EX01"], "plan": "maintenance",
        "window_start": now + timedelta(days=1), "window_end": now + timedelta(days=1, hours=4),
        "requested_by": "carol@example.com", "notify": [], "callback_url": "", "work": CU15,
    })
    body = change_dry_run(change, actor=operator, sessions_factory=sim_factory(sim))
    keys = [s["key"] for s in body["plan"]["steps"]]
    assert keys.index("work.install_start") < keys.index("work.install_verify") and "work.hold" not in keys
    found = {p["key"]: p for p in body["prechecks"]}
    assert found["precheck.install_target"]["status"] == "passed", found["precheck.install_target"]
    assert found["precheck.install_target"]["findings"]["build_before"] == "15.2.1544.4"
    assert found["precheck.install_ready"]["status"] == "passed", found["precheck.install_ready"]
    assert not [c for c in sim.commands if c.cmdlet.startswith(("Register-", "Start-", "Copy-", "Restart-"))]


def test_a_worker_dying_during_the_reboot_wait_is_followed_by_one_that_waits_on_without_a_second_restart(
        requester, servers, sim) -> None:
    change = started(requester, {"kind": "reboot"})
    clock = SimulatedClock(sim)
    dies_on(sim, "Get-CimInstance", 3)  # the boot time read before, then twice while waiting
    with pytest.raises(WorkerDied):
        run_window(change.pk, worker="w1", clock=clock, sessions_factory=sim_factory(sim))
    assert statuses(change)["work.wait_healthy"] == StepRun.Status.RUNNING
    assert run_window(change.pk, worker="w2", clock=clock, sessions_factory=sim_factory(sim)) == "completed"
    assert statuses(change)["work.wait_healthy"] == StepRun.Status.PASSED
    assert [c.cmdlet for c in sim.commands].count("Restart-Computer") == 1


# Each Exchange-update fault of the simulator, driven through the engine: where the window pauses (step key), or
# None when it completes on its own, and a word of the evidence or issue the operator reads.
INSTALL_FAULT_CASES = {
    "setup-fails": (CU15, "work.install_wait", "critical errors"),
    "setup-hangs": ({**CU15, "install_minutes": 60}, "work.install_wait", "budget 60 min"),
    "reboot-never-returns": ({"kind": "reboot", "reboot_minutes": 10}, "work.wait_healthy", "WinRM does not answer"),
    "service-stays-disabled": (CU15, None, "setup left Disabled: MSExchangeFrontEndTransport"),
    "low-disk": (CU15, "precheck.install_ready", "GB free"),
    "pending-reboot": (CU15, "precheck.install_ready", "a restart is pending"),
    "package-missing": (CU15, "precheck.install_target", "is not there"),
    "already-at-target": (CU15, None, "already at target"),
    "mailbox-move-in-progress": (CU15, "precheck.install_moves", "Ellen Adams (InProgress"),
    "auth-cert-expiring": (CU15, None, "expires in 10 day(s)"),
    "back-pressure": (CU15, "precheck.install_back_pressure", "transport is under back pressure"),
}


@pytest.mark.parametrize("fault", sorted(INSTALL_FAULT_CASES))
def test_each_install_fault_pauses_with_its_evidence_or_is_handled(requester, servers, sim, fault) -> None:
    work, paused_at, words = INSTALL_FAULT_CASES[fault]
    servers["EX01"].install_username = "CONTOSO\\exinstall"
    servers["EX01"].set_install_password("Install-Passw0rd")
    servers["EX01"].save()
    sim.inject(fault, "EX01")
    change = started(requester, work)
    outcome = run_window(change.pk, worker="w1", clock=SimulatedClock(sim), sessions_factory=sim_factory(sim))
    if paused_at is None:
        assert outcome == "completed", statuses(change)
        said = " ".join(str(s.output_summary) + str(s.issues) for s in StepRun.objects.filter(change=change))
        assert words in said
    else:
        assert outcome == "paused", statuses(change)
        pause = Pause.objects.get(change=change)
        assert pause.step.key == paused_at and words in pause.message, pause.message
    assert sim.servers["EX01"].windows.setups_started <= 1
