"""Databases, copies, activation settings, cluster nodes and health tests."""
from __future__ import annotations

import pytest

from exchange_sim.model import SimulatedExchange
from exchange_sim.objects import SimTerminatingError

EX = "Microsoft.Exchange"
DEFAULT = "Microsoft.PowerShell"


@pytest.fixture
def sim() -> SimulatedExchange:
    sim = SimulatedExchange()
    sim.add_dag("DAG1", ["EX01", "EX02"])
    sim.add_standalone("SOLO01")
    return sim


def active_on(sim: SimulatedExchange, server: str) -> list[str]:
    result = sim.invoke("EX02", EX, "Get-MailboxDatabaseCopyStatus", [("Server", server)])
    return sorted(o.props["DatabaseName"] for o in result.output if o.props["ActiveCopy"])


def test_a_dag_spreads_active_copies_across_its_members(sim: SimulatedExchange) -> None:
    assert active_on(sim, "EX01") == ["DB01", "DB03"]
    assert active_on(sim, "EX02") == ["DB02", "DB04"]
    (copy,) = sim.invoke("EX01", EX, "Get-MailboxDatabaseCopyStatus", [("Identity", "DB01\\EX02")]).output
    assert copy.props["Status"].name == "Healthy"
    assert copy.props["ActivationPreference"] == 2
    assert copy.props["CopyQueueLength"] == 0
    assert copy.props["ReplayLagStatus"].to_string.startswith("Enabled:False")
    assert len(sim.invoke("EX01", EX, "Get-MailboxDatabaseCopyStatus", [("Identity", "DB01")]).output) == 2


def test_backup_properties_are_blank_without_status(sim: SimulatedExchange) -> None:
    (plain,) = sim.invoke("EX01", EX, "Get-MailboxDatabase", [("Identity", "DB01")]).output
    assert plain.props["LastFullBackup"] is None
    (full,) = sim.invoke("EX01", EX, "Get-MailboxDatabase", [("Identity", "DB01"), ("Status", None)]).output
    assert full.props["LastFullBackup"] is not None
    assert full.props["BackupInProgress"] is False
    assert full.props["Mounted"] is True
    assert full.props["ReplicationType"].name == "Remote"
    (solo,) = sim.invoke("EX01", EX, "Get-MailboxDatabase", [("Server", "SOLO01"), ("Status", True)]).output
    assert solo.props["ReplicationType"].name == "None"


def test_move_now_moves_active_copies_to_healthy_peers(sim: SimulatedExchange) -> None:
    result = sim.invoke("EX02", EX, "Set-MailboxServer", [("Identity", "EX01"),
                                                          ("DatabaseCopyActivationDisabledAndMoveNow", True)])
    assert result.warnings == []
    assert active_on(sim, "EX01") == []
    assert active_on(sim, "EX02") == ["DB01", "DB02", "DB03", "DB04"]
    (mbx,) = sim.invoke("EX02", EX, "Get-MailboxServer", [("Identity", "EX01")]).output
    assert mbx.props["DatabaseCopyActivationDisabledAndMoveNow"] is True


def test_move_now_leaves_databases_without_a_healthy_copy(sim: SimulatedExchange) -> None:
    sim.inject("copy-unhealthy", "EX02")
    result = sim.invoke("EX02", EX, "Set-MailboxServer", [("Identity", "EX01"),
                                                          ("DatabaseCopyActivationDisabledAndMoveNow", "$true")])
    assert active_on(sim, "EX01") == ["DB01", "DB03"]
    assert len(result.warnings) == 2
    assert "copy queue length of 250" in result.warnings[0]


def test_move_active_mailbox_database_is_refused_without_a_healthy_copy(sim: SimulatedExchange) -> None:
    sim.inject("copy-unhealthy", "EX02")
    result = sim.invoke("EX02", EX, "Move-ActiveMailboxDatabase", [("Server", "EX01"), ("Confirm", False)])
    assert result.output == []
    assert len(result.errors) == 2
    assert result.errors[0].category == "InvalidOperation"
    assert result.errors[0].error_id.endswith("MoveActiveMailboxDatabase")
    skipped = sim.invoke("EX02", EX, "Move-ActiveMailboxDatabase",
                         [("Identity", "DB01"), ("SkipLagChecks", None), ("Confirm", False)])
    assert skipped.output[0].props["Status"].name == "Succeeded"


def test_move_active_mailbox_database_avoids_blocked_servers(sim: SimulatedExchange) -> None:
    sim.invoke("EX02", EX, "Set-MailboxServer", [("Identity", "EX02"), ("DatabaseCopyAutoActivationPolicy", "Blocked")])
    result = sim.invoke("EX02", EX, "Move-ActiveMailboxDatabase", [("Identity", "DB01")])
    assert "Blocked" in result.errors[0].message
    assert active_on(sim, "EX01") == ["DB01", "DB03"]


def test_activate_preferred_on_server_rebalances(sim: SimulatedExchange) -> None:
    sim.invoke("EX02", EX, "Move-ActiveMailboxDatabase", [("Server", "EX01")])
    assert active_on(sim, "EX01") == []
    sim.invoke("EX02", EX, "Move-ActiveMailboxDatabase", [("ActivatePreferredOnServer", "EX01")])
    assert active_on(sim, "EX01") == ["DB01", "DB03"]


def test_a_non_replicated_database_cannot_move(sim: SimulatedExchange) -> None:
    result = sim.invoke("SOLO01", EX, "Move-ActiveMailboxDatabase", [("Identity", "DB05")])
    assert result.errors and "only one copy" in result.errors[0].message


def test_suspending_a_cluster_node_pauses_it_and_moves_the_pam(sim: SimulatedExchange) -> None:
    (dag,) = sim.invoke("EX02", EX, "Get-DatabaseAvailabilityGroup", [("Identity", "DAG1"), ("Status", None)]).output
    assert dag.props["PrimaryActiveManager"].to_string == "EX01"
    (node,) = sim.invoke("EX01", DEFAULT, "Suspend-ClusterNode", [("Name", "EX01")]).output
    assert node.props["State"].name == "Paused"
    (dag,) = sim.invoke("EX02", EX, "Get-DatabaseAvailabilityGroup", [("Identity", "DAG1"), ("Status", None)]).output
    assert dag.props["PrimaryActiveManager"].to_string == "EX02"
    (node,) = sim.invoke("EX02", DEFAULT, "Resume-ClusterNode", [("Name", "EX01")]).output
    assert node.props["State"].name == "Up"
    states = {n.props["Name"]: n.props["State"].name for n in sim.invoke("EX02", DEFAULT, "Get-ClusterNode", []).output}
    assert states == {"EX01": "Up", "EX02": "Up"}


def dag_status(sim: SimulatedExchange) -> dict:
    (dag,) = sim.invoke("EX02", EX, "Get-DatabaseAvailabilityGroup", [("Identity", "DAG1"), ("Status", None)]).output
    return dag.props


def names(value: object) -> list[str]:
    return [item.to_string for item in value.items]


def test_dag_status_counts_a_paused_node_operational_and_in_maintenance(sim: SimulatedExchange) -> None:
    (plain,) = sim.invoke("EX02", EX, "Get-DatabaseAvailabilityGroup", [("Identity", "DAG1")]).output
    assert [plain.props[p] for p in ("OperationalServers", "PrimaryActiveManager", "ServersInMaintenance")] == \
        [None, None, None]  # blank without -Status
    assert names(dag_status(sim)["ServersInMaintenance"]) == []
    sim.invoke("EX01", DEFAULT, "Suspend-ClusterNode", [("Name", "EX01")])
    status = dag_status(sim)
    assert names(status["Servers"]) == ["EX01", "EX02"]
    assert names(status["OperationalServers"]) == ["EX01", "EX02"]
    assert names(status["ServersInMaintenance"]) == ["EX01"]
    assert status["ServersInDeferredRecovery"].items == []


def test_pam_stuck_keeps_the_role_on_the_paused_node_until_the_cluster_group_is_moved(sim: SimulatedExchange) \
        -> None:
    sim.inject("pam-stuck", "EX02")
    sim.invoke("EX02", DEFAULT, "Suspend-ClusterNode", [("Name", "EX02")])
    sim.advance(3600)
    assert dag_status(sim)["PrimaryActiveManager"].to_string == "EX02"
    sim.invoke("EX01", DEFAULT, "Suspend-ClusterNode", [("Name", "EX01")])
    with pytest.raises(SimTerminatingError, match="the node is paused"):  # a paused node takes no group
        sim.invoke("EX01", DEFAULT, "Move-ClusterGroup", [("Name", "Cluster Group"), ("Node", "EX01")])
    sim.invoke("EX01", DEFAULT, "Resume-ClusterNode", [("Name", "EX01")])
    (group,) = sim.invoke("EX01", DEFAULT, "Move-ClusterGroup", [("Name", "Cluster Group"), ("Node", "EX01")]).output
    assert (group.props["OwnerNode"], group.props["State"].name) == ("EX01", "Online")
    assert dag_status(sim)["PrimaryActiveManager"].to_string == "EX01"


def test_pam_stuck_for_some_seconds_moves_the_role_late(sim: SimulatedExchange) -> None:
    sim.inject_spec("pam-stuck@EX02:30")
    sim.invoke("EX02", DEFAULT, "Suspend-ClusterNode", [("Name", "EX02")])
    sim.advance(29)
    assert dag_status(sim)["PrimaryActiveManager"].to_string == "EX02"
    sim.advance(1)
    assert dag_status(sim)["PrimaryActiveManager"].to_string == "EX01"


def test_only_the_core_cluster_group_can_be_moved(sim: SimulatedExchange) -> None:
    with pytest.raises(SimTerminatingError, match="'Available Storage' was not found"):
        sim.invoke("EX01", DEFAULT, "Move-ClusterGroup", [("Name", "Available Storage"), ("Node", "EX02")])


def test_a_standalone_server_has_no_cluster(sim: SimulatedExchange) -> None:
    with pytest.raises(SimTerminatingError) as caught:
        sim.invoke("SOLO01", DEFAULT, "Get-ClusterNode", [])
    assert caught.value.error.exception_type.endswith("ClusterCmdletException")


def test_replication_health_passes_on_a_healthy_dag(sim: SimulatedExchange) -> None:
    result = sim.invoke("EX02", EX, "Test-ReplicationHealth", [("Identity", "EX01")])
    assert {o.props["Result"].to_string for o in result.output} == {"Passed"}
    assert "DBLogCopyKeepingUp" in {o.props["Check"] for o in result.output}


def test_replication_health_flags_a_copy_that_falls_behind(sim: SimulatedExchange) -> None:
    sim.inject("copy-unhealthy", "EX02")
    result = sim.invoke("EX01", EX, "Test-ReplicationHealth", [("Identity", "EX02")])
    failed = {o.props["Check"] for o in result.output if o.props["Result"].to_string == "Failed"}
    assert failed == {"DBLogCopyKeepingUp"}


def test_test_service_health_reports_one_object_per_role(sim: SimulatedExchange) -> None:
    result = sim.invoke("EX01", EX, "Test-ServiceHealth", [("Server", "EX01")])
    assert [o.props["Role"] for o in result.output] == [
        "Mailbox Server Role", "Client Access Server Role", "Hub Transport Server Role"]
    assert all(o.props["RequiredServicesRunning"] for o in result.output)


def test_exchange_server_reports_its_version_like_the_capture(sim: SimulatedExchange) -> None:
    (server,) = sim.invoke("EX01", EX, "Get-ExchangeServer", [("Identity", "ex01.contoso.com")]).output
    assert server.props["AdminDisplayVersion"].to_string.startswith("Version 15.2 (Build ")
    assert server.props["Fqdn"] == "EX01.contoso.com"
    assert server.props["ServerRole"].name == "Mailbox"
    assert server.to_string == "EX01"


def test_get_mailbox_by_server_honours_result_size(sim: SimulatedExchange) -> None:
    everything = sim.invoke("EX01", EX, "Get-Mailbox", [("Server", "EX01"), ("ResultSize", "Unlimited")]).output
    assert len(everything) == 16
    assert {m.props["Database"].to_string for m in everything} == {"DB01", "DB03"}
    assert len(sim.invoke("EX01", EX, "Get-Mailbox", [("Server", "EX01"), ("ResultSize", 5)]).output) == 5
