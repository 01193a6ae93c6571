"""The DAG as the DAG itself reports it (Get-DatabaseAvailabilityGroup -Status): its members against the inventory
before the window (§3.1), and the Primary Active Manager role leaving the paused node (§1(b) 5e)."""
from __future__ import annotations

from dataclasses import replace

import pytest

from exchange_sim.model import SimulatedExchange
from runner.step_types import Phase, ServerInfo, StepFailed

from .harness import server_info, start

DEFAULT = "Microsoft.PowerShell"


@pytest.fixture
def dag() -> SimulatedExchange:
    sim = SimulatedExchange()
    sim.add_dag("DAG1", ["EX02", "EX03", "EX04"])
    return sim


def failed(run_outcomes: dict) -> list[str]:
    return [k for k, v in run_outcomes.items() if isinstance(v, StepFailed)]


# --- membership ---------------------------------------------------------------------------------------------------


def test_the_members_come_from_the_dag_and_match_the_inventory(dag: SimulatedExchange) -> None:
    run = start(dag, "EX02")
    outcome = run.step("precheck.dag_members")
    assert outcome.status == "passed"
    [read] = run.reads("Get-DatabaseAvailabilityGroup")
    assert (read.get("Identity"), read.get("Status")) == ("DAG1", True)
    found = outcome.findings["dag"]
    assert (found["servers"], found["operational"], found["in_maintenance"]) == (["EX02", "EX03", "EX04"],
                                                                                 ["EX02", "EX03", "EX04"], [])
    assert found["primary_active_manager"] == "EX02"
    assert outcome.summary.endswith("Primary Active Manager EX02")


def test_a_member_the_inventory_does_not_know_refuses_the_window(dag: SimulatedExchange) -> None:
    inventory = server_info(dag, "EX02")
    run = start(dag, "EX02", server=replace(inventory, peers=inventory.peers[:1]))  # EX04 left out
    with pytest.raises(StepFailed) as refused:
        run.step("precheck.dag_members")
    assert str(refused.value) == "DAG1 membership differs from the inventory (members missing from the inventory: EX04)"
    assert run.plan.step("precheck.dag_members").gate
    # The unknown member is still checked, so the findings show whether it is in maintenance.
    assert [(p["server"], p["in_inventory"]) for p in refused.value.findings["peers"]] == [("EX03", True),
                                                                                        ("EX04", False)]


def test_an_inventory_peer_that_is_no_member_refuses_the_window(dag: SimulatedExchange) -> None:
    inventory = server_info(dag, "EX02")
    stranger = ServerInfo("EX09", "EX09.contoso.com", "DAG1")
    run = start(dag, "EX02", server=replace(inventory, peers=(*inventory.peers, stranger)))
    with pytest.raises(StepFailed, match=r"in the inventory but not members: EX09"):
        run.step("precheck.dag_members")


def test_an_unreadable_dag_names_the_inventorys_dag(dag: SimulatedExchange) -> None:
    run = start(dag, "EX02", server=replace(server_info(dag, "EX02"), dag_name="DAG9"))
    with pytest.raises(StepFailed, match=r"^the inventory's DAG DAG9 could not be read: .*DAG9"):
        run.step("precheck.dag_members")


def test_a_member_whose_node_is_paused_is_in_maintenance_for_the_dag(dag: SimulatedExchange) -> None:
    dag.invoke("EX03", DEFAULT, "Suspend-ClusterNode", [("Name", "EX03")])
    run = start(dag, "EX02")
    with pytest.raises(StepFailed, match=r"another DAG member is in maintenance or not operational: EX03$") as refused:
        run.step("precheck.dag_members")
    assert refused.value.findings["dag"]["in_maintenance"] == ["EX03"]


def test_a_member_that_is_down_is_not_operational(dag: SimulatedExchange) -> None:
    dag.servers["EX04"].cluster_state = "Down"
    run = start(dag, "EX02")
    with pytest.raises(StepFailed, match=r"in maintenance or not operational: EX04$") as refused:
        run.step("precheck.dag_members")
    assert refused.value.findings["dag"]["operational"] == ["EX02", "EX03"]
    assert [p["operational"] for p in refused.value.findings["peers"]] == [True, False]


# --- the Primary Active Manager -----------------------------------------------------------------------------------


def test_the_pam_check_reads_the_dag_after_the_pause_and_finds_the_role_moved(dag: SimulatedExchange) -> None:
    assert dag.dags["DAG1"].primary_active_manager == "EX02"
    run = start(dag, "EX02")
    assert run.phases(Phase.PRECHECK, Phase.ENTER) is None
    [pause] = run.index("Suspend-ClusterNode", Name="EX02")
    reads = [i for i in run.index("Get-DatabaseAvailabilityGroup", Identity="DAG1", Status=True) if i > pause]
    assert len(reads) == 2  # the PAM check, then the final gate
    outcome = run.outcomes["enter.pam_moved"]
    assert (outcome.status, outcome.findings["primary_active_manager"]) == ("skipped", "EX03")


def test_a_pam_that_stays_pauses_the_entry_and_a_retry_passes_once_the_cluster_group_is_moved(
        dag: SimulatedExchange) -> None:
    dag.inject("pam-stuck", "EX02")
    run = start(dag, "EX02")
    paused = run.phases(Phase.PRECHECK, Phase.ENTER)
    assert isinstance(paused, StepFailed)
    assert failed(run.outcomes) == ["enter.pam_moved"]
    assert str(paused).startswith("EX02 still holds the Primary Active Manager role 60 s after its cluster node was "
                                  "paused")
    assert "Move-ClusterGroup 'Cluster Group' -Node" in str(paused)
    assert paused.findings["primary_active_manager"] == "EX02"
    assert run.mutating()[-1] == ("Set-MailboxServer", "Identity=EX02", "DatabaseCopyAutoActivationPolicy=Blocked")
    # The operator moves the cluster group by hand, then retries.
    dag.invoke("EX03", DEFAULT, "Move-ClusterGroup", [("Name", "Cluster Group"), ("Node", "EX04")])
    assert run.step("enter.pam_moved").findings["primary_active_manager"] == "EX04"
    assert run.phases(Phase.ENTER) is None


def test_a_pam_that_moves_late_passes_with_an_automatic_issue(dag: SimulatedExchange) -> None:
    dag.inject("pam-stuck", "EX02", seconds=60)  # the database switchovers take 30 s of it
    run = start(dag, "EX02")
    assert run.phases(Phase.PRECHECK, Phase.ENTER) is None
    outcome = run.outcomes["enter.pam_moved"]
    assert outcome.status == "passed"
    [issue] = outcome.issues
    assert issue.automatic and issue.summary == "EX02 kept the Primary Active Manager role after its node was paused"
    assert issue.resolution.startswith("moved to EX03")


def test_skipping_the_pam_check_still_leaves_the_final_gate_refusing(dag: SimulatedExchange) -> None:
    dag.inject("pam-stuck", "EX02")
    run = start(dag, "EX02")
    run.phases(Phase.PRECHECK, Phase.ENTER)
    run.step("enter.serverwideoffline_inactive")  # the operator skipped enter.pam_moved
    with pytest.raises(StepFailed, match="server is still the Primary Active Manager"):
        run.step("enter.final_gate")
