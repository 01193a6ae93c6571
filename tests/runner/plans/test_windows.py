"""Both variants from pre-checks to verification against the simulator: the exact mutating commands, in order."""
from __future__ import annotations

from datetime import timedelta

import pytest

from exchange_sim.model import SimulatedExchange
from exchange_sim.session import SimulatorSession
from runner.context import ExecutionContext
from runner.exchange.session import Endpoint
from runner.step_types import Hold, Phase

from .harness import fully_active, start


def hub(server: str, state: str) -> tuple[str, ...]:
    return ("Set-ServerComponentState", f"Identity={server}", "Component=HubTransport", f"State={state}",
            "Requester=Maintenance")


def swo(server: str, state: str) -> tuple[str, ...]:
    return ("Set-ServerComponentState", f"Identity={server}", "Component=ServerWideOffline", f"State={state}",
            "Requester=Maintenance")


RESTART = [("Restart-Service", "Name=MSExchangeTransport"), ("Restart-Service", "Name=MSExchangeFrontEndTransport")]


@pytest.fixture
def standalone() -> SimulatedExchange:
    sim = SimulatedExchange()
    sim.add_standalone("EX01")
    return sim


@pytest.fixture
def dag() -> SimulatedExchange:
    sim = SimulatedExchange()
    sim.add_dag("DAG1", ["EX02", "EX03", "EX04"])
    return sim


def test_standalone_window_sends_the_documented_commands_in_order(standalone: SimulatedExchange) -> None:
    run = start(standalone, "EX01")
    run.all_through()
    assert run.mutating() == [
        hub("EX01", "Draining"), *RESTART, swo("EX01", "Inactive"),
        swo("EX01", "Active"), hub("EX01", "Active"), *RESTART,
    ]
    assert fully_active(run.components())


def test_standalone_entry_leaves_only_monitoring_and_recovery_actions_active(standalone: SimulatedExchange) -> None:
    run = start(standalone, "EX01")
    assert run.phases(Phase.PRECHECK, Phase.ENTER) is None
    active = {name for name, state in run.components().items() if state != "Inactive"}
    assert active == {"Monitoring", "RecoveryActionsEnabled"}
    assert standalone.servers["EX01"].transport.active_message_count() == 0


def test_dag_member_window_sends_the_documented_commands_in_order(dag: SimulatedExchange) -> None:
    run = start(dag, "EX02")
    run.all_through()
    assert run.mutating() == [
        hub("EX02", "Draining"), *RESTART,
        ("Redirect-Message", "Server=EX02", "Target=EX03.contoso.com"),
        ("Suspend-ClusterNode", "Name=EX02"),
        ("Set-MailboxServer", "Identity=EX02", "DatabaseCopyActivationDisabledAndMoveNow=True"),
        ("Set-MailboxServer", "Identity=EX02", "DatabaseCopyAutoActivationPolicy=Blocked"),
        swo("EX02", "Inactive"),
        swo("EX02", "Active"),
        ("Resume-ClusterNode", "Name=EX02"),
        ("Set-MailboxServer", "Identity=EX02", "DatabaseCopyActivationDisabledAndMoveNow=False"),
        ("Set-MailboxServer", "Identity=EX02", "DatabaseCopyAutoActivationPolicy=Unrestricted"),
        hub("EX02", "Active"), *RESTART,
    ]
    server = dag.servers["EX02"]
    assert fully_active(run.components())
    assert (server.cluster_state, server.activation_policy, server.move_now) == ("Up", "Unrestricted", False)


def test_dag_member_entry_moves_every_database_and_the_pam_off(dag: SimulatedExchange) -> None:
    run = start(dag, "EX02")
    assert run.phases(Phase.PRECHECK, Phase.ENTER) is None
    assert not [db for db in dag.databases.values() if db.active == "EX02"]
    assert dag.dags["DAG1"].primary_active_manager != "EX02"
    assert dag.servers["EX02"].cluster_state == "Paused"


def test_redirect_message_is_sent_with_confirm_false(dag: SimulatedExchange) -> None:
    run = start(dag, "EX02")
    run.phases(Phase.PRECHECK, Phase.ENTER)
    record = next(r for r in dag.commands if r.cmdlet == "Redirect-Message")
    assert record.get("Confirm") is False


def test_exit_restores_the_saved_activation_policy_rather_than_unrestricted(dag: SimulatedExchange) -> None:
    dag.servers["EX02"].activation_policy = "IntrasiteOnly"
    run = start(dag, "EX02")
    run.all_through()
    assert ("Set-MailboxServer", "Identity=EX02", "DatabaseCopyAutoActivationPolicy=IntrasiteOnly") in run.mutating()
    assert dag.servers["EX02"].activation_policy == "IntrasiteOnly"
    assert run.ctx.state["snapshot"]["mailbox_server"] == {"policy": "IntrasiteOnly", "move_now": False}


def test_work_holds_until_the_window_end(standalone: SimulatedExchange) -> None:
    run = start(standalone, "EX01", window_hours=2)
    with pytest.raises(Hold) as held:
        run.step("work.hold")
    assert held.value.until == standalone.clock.now() + timedelta(hours=2)


def test_work_passes_with_the_operators_notes_once_reported(standalone: SimulatedExchange) -> None:
    run = start(standalone, "EX01")
    run.work_done("CU14 installed")
    outcome = run.step("work.hold")
    assert outcome.status == "passed"
    assert outcome.findings["notes"] == "CU14 installed"


def test_work_passes_with_an_issue_at_the_window_end_so_the_exit_runs(standalone: SimulatedExchange) -> None:
    run = start(standalone, "EX01", window_hours=1)
    standalone.advance(3600)
    outcome = run.step("work.hold")
    assert outcome.status == "passed"
    assert [i.summary for i in outcome.issues] == ["window end reached without a work-done report"]


@pytest.mark.parametrize("variant", ["standalone", "dag"])
def test_prechecks_run_in_a_dry_run_without_any_mutating_command(variant: str, request: pytest.FixtureRequest) \
        -> None:
    sim = request.getfixturevalue(variant)
    name = "EX01" if variant == "standalone" else "EX02"
    run = start(sim, name)
    session = SimulatorSession(sim, name)
    dry = ExecutionContext(server=run.ctx.server, sessions={Endpoint.EXCHANGE: session, Endpoint.DEFAULT: session},
                           clock=run.ctx.clock, dry_run=True)
    for step in run.plan.phase(Phase.PRECHECK):
        assert step.run(dry).status == "passed"
    assert run.mutating() == []


def test_a_resumed_run_passes_the_server_state_check_with_its_own_votes_in_place(standalone: SimulatedExchange) \
        -> None:
    run = start(standalone, "EX01")
    run.phases(Phase.PRECHECK, Phase.ENTER)
    outcome = run.step("precheck.server_state")
    assert outcome.summary.startswith("resume")


def test_an_exchange_2016_server_also_drains_and_restores_umcallrouter() -> None:
    sim = SimulatedExchange()
    sim.add_standalone("EX16", version="2016")
    run = start(sim, "EX16")
    run.all_through()

    def um(state: str) -> tuple[str, ...]:
        return ("Set-ServerComponentState", "Identity=EX16", "Component=UMCallRouter", f"State={state}",
                "Requester=Maintenance")

    # §1 step 3 after the transport restart; §2 step 2 right after ServerWideOffline Active.
    assert run.mutating() == [
        hub("EX16", "Draining"), *RESTART, um("Draining"), swo("EX16", "Inactive"),
        swo("EX16", "Active"), um("Active"), hub("EX16", "Active"), *RESTART,
    ]
    assert run.outcomes["enter.um_calls_drained"].status == "passed"  # the seeded calls ended on their own
    assert fully_active(run.components())
