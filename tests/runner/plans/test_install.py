"""The work kinds ``reboot`` and ``exchange-update`` against the in-process simulator: the plan's steps in order,
the gates, the faults, and the proof of the new build."""
from __future__ import annotations

from dataclasses import replace

import pytest

from changes.work import normalize_work
from exchange_sim.model import SimulatedExchange
from runner.step_types import Options, Phase, StepFailed, StepOutcome

from .harness import fully_active, server_info, start

CU15 = {"kind": "exchange-update", "package": {"kind": "cu", "path": "\\\\files.contoso.com\\exchange\\CU15"},
        "target_build": "15.2.1748.10", "ad_prepared": True}
SU = {"kind": "exchange-update", "target_build": "15.2.1544.14",
      "package": {"kind": "su", "path": "D:\\Exchange\\Exchange2019-KB5049233-x64-en.msp"}}


@pytest.fixture
def sim() -> SimulatedExchange:
    sim = SimulatedExchange()
    sim.add_standalone("EX01")
    return sim


def run_for(sim: SimulatedExchange, work: dict, **options):
    info = replace(server_info(sim, "EX01"), install_username="CONTOSO\\exinstall",
                   install_password=lambda: "Install-Passw0rd")
    return start(sim, "EX01", Options(work=normalize_work(work), **options), server=info)


def work_keys(run) -> list[str]:
    return [s.key for s in run.steps(Phase.WORK)]


def test_the_plan_for_a_cu_copies_starts_waits_restarts_and_proves_the_build(sim) -> None:
    run = run_for(sim, CU15)
    assert work_keys(run) == ["work.install_copy", "work.install_start", "work.install_wait",
                              "work.install_restart", "work.install_wait_healthy", "work.install_verify",
                              "work.install_after"]
    assert [s.key for s in run.steps(Phase.PRECHECK)][-5:] == [
        "precheck.install_target", "precheck.install_ready", "precheck.install_moves",
        "precheck.install_auth_certificate", "precheck.install_back_pressure"]
    assert all(not s.mutating for s in run.steps(Phase.PRECHECK))


def test_a_reboot_change_restarts_and_waits_for_the_server(sim) -> None:
    run = run_for(sim, {"kind": "reboot"})
    assert work_keys(run) == ["work.restart", "work.wait_healthy"]
    assert run.phases(Phase.WORK) is None, run.outcomes
    state = run.ctx.state["reboot"]
    assert state["boot_after"] > state["boot_before"]
    assert 150 <= state["downtime_seconds"] <= 300
    assert [r.cmdlet for r in sim.commands].count("Restart-Computer") == 1


def test_a_cu_window_installs_restarts_and_proves_the_new_build(sim) -> None:
    run = run_for(sim, CU15)
    run.all_through()
    state = run.ctx.state["install"]
    assert (state["build_before"], state["build_after"], state["result"]) == ("15.2.1544.4", "15.2.1748.10",
                                                                               "succeeded")
    assert sim.servers["EX01"].windows.setups_started == 1
    task = next(r for r in sim.commands if r.cmdlet == "Register-ScheduledTask")
    assert task.get("Password") == "***" and task.get("User") == "CONTOSO\\exinstall"
    xml = task.get("Xml")
    assert "C:\\ExchangeUpdates\\15.2.1748.10\\CU15\\Setup.exe" in xml  # absolute path to the local copy
    assert "/Mode:Upgrade /IAcceptExchangeServerLicenseTerms_DiagnosticDataOFF" in xml
    assert "<RunLevel>HighestAvailable</RunLevel>" in xml
    assert "Install-Passw0rd" not in str(run.ctx.state) and "Install-Passw0rd" not in str(
        [c.as_dict() for c in run.ctx.commands])
    assert state["phase"] == "Finalizing Setup"
    assert fully_active(run.components())


def test_an_su_window_installs_and_restarts_because_the_installer_asked(sim) -> None:
    run = run_for(sim, SU)
    run.all_through()
    state = run.ctx.state["install"]
    assert (state["build_after"], state["exit_code"]) == ("15.2.1544.14", 3010)
    assert "msiexec.exe" in state["command"] and "/quiet /norestart" in state["command"]
    assert run.ctx.state["reboot"]["healthy_at"]
    # AdminDisplayVersion still shows the CU: the build came from ExSetup.exe.
    assert "1544.4" in sim.servers["EX01"].version_string()


def test_already_at_target_skips_the_install_steps(sim) -> None:
    sim.inject("already-at-target", "EX01")
    run = run_for(sim, CU15)
    run.all_through()
    skipped = [k for k, o in run.outcomes.items() if isinstance(o, StepOutcome) and o.status == "skipped"
               and "already at target" in o.summary]
    assert set(skipped) >= {"work.install_copy", "work.install_start", "work.install_wait", "work.install_verify"}
    assert sim.servers["EX01"].windows.setups_started == 0


@pytest.mark.parametrize(("fault", "words"), [
    ("pending-reboot", "a restart is pending"),
    ("low-disk", "the system drive C: has 4.0 GB free"),
])
def test_a_gate_refuses_before_the_window_with_its_evidence(sim, fault, words) -> None:
    sim.inject(fault, "EX01")
    run = run_for(sim, CU15)
    failed = run.phases(Phase.PRECHECK)
    assert isinstance(failed, StepFailed) and words in str(failed), failed
    assert run.mutating() == []


def test_the_moves_auth_certificate_and_back_pressure_gates_pass_on_a_quiet_server_with_their_reads(sim) -> None:
    run = run_for(sim, CU15)
    assert run.phases(Phase.PRECHECK) is None, run.outcomes
    assert run.outcomes["precheck.install_moves"].findings == {"databases": ["db01"], "moves": []}
    cert = run.outcomes["precheck.install_auth_certificate"]
    assert cert.findings["days_left"] > 30 and not cert.issues
    levels = run.outcomes["precheck.install_back_pressure"].findings["resources"]
    assert len(levels) == 5 and set(levels.values()) == {"Low"}
    sent = [r.cmdlet for r in sim.commands]
    assert {"Get-MoveRequest", "Get-AuthConfig", "Get-ExchangeCertificate", "Get-ExchangeDiagnosticInfo"} <= set(sent)


def test_a_mailbox_move_into_the_servers_database_refuses_the_window_and_lists_the_move(sim) -> None:
    sim.inject("mailbox-move-in-progress", "EX01")
    run = run_for(sim, CU15)
    failed = run.phases(Phase.PRECHECK)
    assert isinstance(failed, StepFailed), failed
    assert "1 mailbox move(s)" in str(failed) and "Ellen Adams (InProgress, Mailbox Database 0815 -> DB01)" in str(
        failed)
    assert failed.findings["moves"] == [{"mailbox": "Ellen Adams", "status": "InProgress",
                                         "source": "Mailbox Database 0815", "target": "DB01"}]
    assert run.mutating() == []


def test_a_suspended_move_or_one_between_other_databases_is_listed_not_gated(sim) -> None:
    sim.inject("mailbox-move-in-progress", "EX01", status="Suspended")
    sim.move_requests.append({"DisplayName": "Other", "Alias": "other", "Status": "InProgress",
                              "SourceDatabase": "DB77", "TargetDatabase": "DB78"})
    run = run_for(sim, CU15)
    assert run.phases(Phase.PRECHECK) is None, run.outcomes
    outcome = run.outcomes["precheck.install_moves"]
    assert [m["mailbox"] for m in outcome.findings["moves"]] == ["Ellen Adams"]
    assert "1 waiting for an operator" in outcome.summary


def test_an_auth_certificate_expiring_within_30_days_is_a_warning_and_an_expired_one_a_gate(sim) -> None:
    sim.inject("auth-cert-expiring", "EX01", days=10)
    run = run_for(sim, CU15)
    assert run.phases(Phase.PRECHECK) is None, run.outcomes
    outcome = run.outcomes["precheck.install_auth_certificate"]
    assert outcome.findings["days_left"] == 10.0
    assert [i.summary for i in outcome.issues] == [
        "the Exchange Auth certificate A1B2C3D4E5F60718293A4B5C6D7E8F9012345678 expires on 2026-12-09 (10 day(s))"]
    sim.inject("auth-cert-expiring", "EX01", days=-2)
    failed = run_for(sim, CU15).phases(Phase.PRECHECK)
    assert isinstance(failed, StepFailed) and "expired on 2026-11-27" in str(failed), failed
    assert failed.findings["days_left"] == -2.0


def test_back_pressure_refuses_the_window_with_the_resource_levels(sim) -> None:
    sim.inject("back-pressure", "EX01", level="Medium")
    run = run_for(sim, CU15)
    failed = run.phases(Phase.PRECHECK)
    assert isinstance(failed, StepFailed), failed
    assert "transport is under back pressure: UsedDiskSpace[C:\\Program Files" in str(failed)
    assert "Queue] Medium" in str(failed)
    levels = failed.findings["resources"]
    assert sorted(levels.values()) == ["Low", "Low", "Low", "Low", "Medium"]
    assert run.mutating() == []


def test_a_missing_package_is_refused(sim) -> None:
    sim.inject("package-missing", "EX01")
    failed = run_for(sim, CU15).phases(Phase.PRECHECK)
    assert isinstance(failed, StepFailed) and "is not there" in str(failed)


def test_an_edge_server_is_refused(sim) -> None:
    sim.servers["EX01"].edge = True  # read by the simulator's Get-ExchangeServer
    failed = run_for(sim, CU15).phases(Phase.PRECHECK)
    assert isinstance(failed, StepFailed) and "Edge Transport" in str(failed)


def test_a_cu_that_changes_active_directory_is_refused_with_the_prepare_command(sim) -> None:
    failed = run_for(sim, {**CU15, "ad_prepared": False}).phases(Phase.PRECHECK)
    assert isinstance(failed, StepFailed), failed
    assert "/PrepareAD /IAcceptExchangeServerLicenseTerms_DiagnosticDataOFF" in str(failed)
    assert "/PrepareSchema" not in str(failed)  # CU14 → CU15 keeps the schema (17003)


def test_setup_failing_half_way_pauses_with_the_watermark_and_disabled_services(sim) -> None:
    sim.inject("setup-fails", "EX01")
    run = run_for(sim, CU15)
    for phase in (Phase.PRECHECK, Phase.ENTER):
        assert run.phases(phase) is None, run.outcomes
    failed = run.phases(Phase.WORK)
    assert isinstance(failed, StepFailed) and run.outcomes["work.install_wait"] is failed
    assert "setup failed" in str(failed) and "critical errors" in str(failed)
    assert failed.findings["watermarks"] and "MSExchangeTransport" in failed.findings["disabled_services"]
    assert {v["component"] for v in failed.findings["functional_votes"]} >= {"ServerWideOffline"}


def test_setup_hanging_past_its_budget_pauses_with_the_last_phase(sim) -> None:
    sim.inject("setup-hangs", "EX01")
    run = run_for(sim, {**CU15, "install_minutes": 60})
    for phase in (Phase.PRECHECK, Phase.ENTER):
        assert run.phases(phase) is None, run.outcomes
    failed = run.phases(Phase.WORK)
    assert isinstance(failed, StepFailed) and "budget 60 min" in str(failed)
    assert failed.findings["phase"]
    # Retrying keeps polling: setup is never started twice.
    assert "not started again" in run.step("work.install_start").summary
    with pytest.raises(StepFailed):
        run.step("work.install_wait")
    assert sim.servers["EX01"].windows.setups_started == 1


def test_a_server_that_never_comes_back_pauses_after_the_reboot_budget(sim) -> None:
    sim.inject("reboot-never-returns", "EX01")
    run = run_for(sim, {"kind": "reboot", "reboot_minutes": 10})
    failed = run.phases(Phase.WORK)
    assert isinstance(failed, StepFailed) and "WinRM does not answer" in str(failed)


def test_a_service_left_disabled_is_reported_or_restored_on_opt_in(sim) -> None:
    sim.inject("service-stays-disabled", "EX01")
    run = run_for(sim, CU15)
    run.all_through()
    assert any("setup left Disabled: MSExchangeFrontEndTransport" in i for i in run.issues())
    other = SimulatedExchange()
    other.add_standalone("EX01")
    other.inject("service-stays-disabled", "EX01")
    restored = run_for(other, {**CU15, "restore_disabled_services": True})
    restored.all_through()
    assert other.servers["EX01"].services["MSExchangeFrontEndTransport"].start_type == "Automatic"


def test_a_resumed_start_step_never_starts_setup_twice(sim) -> None:
    run = run_for(sim, CU15)
    for phase in (Phase.PRECHECK, Phase.ENTER):
        assert run.phases(phase) is None, run.outcomes
    run.step("work.install_copy")
    run.step("work.install_start")
    again = run.step("work.install_start")  # a worker that died after the launch runs the step again
    assert "not started again" in again.summary
    assert sim.servers["EX01"].windows.setups_started == 1


def test_a_cu_on_a_dag_member_installs_with_its_databases_moved_and_comes_back() -> None:
    sim = SimulatedExchange()
    sim.add_dag("DAG1", ["EX02", "EX03", "EX04"])
    info = replace(server_info(sim, "EX02"), install_username="CONTOSO\\exinstall",
                   install_password=lambda: "Install-Passw0rd")
    run = start(sim, "EX02", Options(work=normalize_work(CU15)), server=info)
    assert run.plan.variant == "dag-member"
    run.all_through()
    assert run.ctx.state["install"]["build_after"] == "15.2.1748.10"
    assert sim.servers["EX02"].cluster_state == "Up"
    assert fully_active(run.components("EX02"))
