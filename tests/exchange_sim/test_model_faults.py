"""Each named fault, injected from code or from a NAME@SERVER[:N] string, and its effect."""
from __future__ import annotations

from datetime import timedelta

import pytest

from exchange_sim import transport
from exchange_sim.model import SimulatedExchange, parse_fault
from exchange_sim.objects import SimTerminatingError

EX = "Microsoft.Exchange"
DEFAULT = "Microsoft.PowerShell"
ACTIVE_FILTER = "MessageCount -gt 0 -and DeliveryType -ne 'ShadowRedundancy' -and NextHopDomain -ne 'Poison Message'"


@pytest.fixture
def sim() -> SimulatedExchange:
    sim = SimulatedExchange()
    sim.add_dag("DAG1", ["EX01", "EX02"])
    return sim


def pending(sim: SimulatedExchange, server: str = "EX01") -> int:
    result = sim.invoke("EX02", EX, "Get-Queue", [("Server", server), ("Filter", ACTIVE_FILTER)])
    return sum(o.props["MessageCount"] for o in result.output)


def start_draining(sim: SimulatedExchange) -> None:
    sim.invoke("EX02", EX, "Set-ServerComponentState", [("Identity", "EX01"), ("Component", "HubTransport"),
                                                         ("State", "Draining"), ("Requester", "Maintenance")])
    sim.invoke("EX01", DEFAULT, "Restart-Service", [("Name", "MSExchangeTransport")])
    sim.clock.advance(transport.BOOTLOADER_SECONDS)


def states(sim: SimulatedExchange, server: str = "EX01") -> dict[str, str]:
    result = sim.invoke("EX02", EX, "Get-ServerComponentState", [("Identity", server)])
    return {o.props["Component"]: o.props["State"].name for o in result.output}


def test_parse_fault_reads_name_server_and_count() -> None:
    assert parse_fault("unreachable@EX01:3") == ("unreachable", "EX01", {"times": 3})
    assert parse_fault("queue-slow@EX02:4").options == {"polls": 4}
    assert parse_fault(" backup-stale@SOLO01 ") == ("backup-stale", "SOLO01", {})


@pytest.mark.parametrize("text", ["no-such-fault@EX01", "backup-stale", "backup-stale@", "backup-stale@EX01:2",
                                  "unreachable@EX01:x"])
def test_parse_fault_refuses_malformed_specs(text: str) -> None:
    with pytest.raises(ValueError):
        parse_fault(text)


def test_inject_refuses_unknown_faults_and_servers(sim: SimulatedExchange) -> None:
    with pytest.raises(ValueError):
        sim.inject("melted", "EX01")
    with pytest.raises(ValueError):
        sim.inject("backup-stale", "EX99")


def test_backup_stale_makes_the_last_backup_days_old(sim: SimulatedExchange) -> None:
    sim.inject_spec("backup-stale@EX01")
    result = sim.invoke("EX01", EX, "Get-MailboxDatabase", [("Server", "EX01"), ("Status", None)])
    for db in result.output:
        assert sim.clock.now() - db.props["LastFullBackup"] >= timedelta(days=9)
        assert db.props["LastIncrementalBackup"] is None


def test_backup_in_progress_sets_the_flag(sim: SimulatedExchange) -> None:
    sim.inject("backup-in-progress", "EX01", database="DB01")
    result = sim.invoke("EX01", EX, "Get-MailboxDatabase", [("Status", None)])
    assert {db.props["Name"]: db.props["BackupInProgress"] for db in result.output} == {
        "DB01": True, "DB02": False, "DB03": False, "DB04": False}


def test_queue_stuck_never_drains_nor_redirects(sim: SimulatedExchange) -> None:
    sim.inject("queue-stuck", "EX01")
    start_draining(sim)
    sim.invoke("EX02", EX, "Redirect-Message", [("Server", "EX01"), ("Target", "EX02.contoso.com")])
    sim.clock.advance(3600)
    (stuck,) = sim.invoke("EX02", EX, "Get-Queue", [("Server", "EX01"), ("Filter", ACTIVE_FILTER)]).output
    assert stuck.props["NextHopDomain"] == "fabrikam.com"
    assert stuck.props["Status"].name == "Retry"
    assert stuck.props["LastError"].startswith("451 4.4.0")


def queue_to(sim: SimulatedExchange, hop: str, server: str = "EX01") -> dict:
    (queue,) = sim.invoke("EX02", EX, "Get-Queue", [("Server", server),
                                                     ("Filter", f"NextHopDomain -eq '{hop}'")]).output
    return queue.props


def test_queue_retry_grows_while_transport_accepts_mail_and_stops_once_draining(sim: SimulatedExchange) -> None:
    sim.inject_spec("queue-retry@EX01:30")
    start = queue_to(sim, "fabrikam.com")["MessageCount"]
    sim.clock.advance(300)
    queue = queue_to(sim, "fabrikam.com")
    assert (queue["Status"].name, queue["MessageCount"]) == ("Retry", start + 10)
    assert queue["LastError"].startswith("451 4.4.0")
    start_draining(sim)  # no new mail is accepted: the queue stops growing, and never drains
    held = queue_to(sim, "fabrikam.com")["MessageCount"]
    sim.clock.advance(3600)
    assert queue_to(sim, "fabrikam.com")["MessageCount"] == held


def test_queue_retry_on_a_named_queue_that_does_not_grow(sim: SimulatedExchange) -> None:
    sim.inject("queue-retry", "EX01", queue="dag1", every=0, messages=4)
    sim.clock.advance(3600)
    queue = queue_to(sim, "dag1")
    assert (queue["Status"].name, queue["MessageCount"], queue["DeliveryType"].name) == ("Retry", 6, "SmtpRelayToDag")


def test_queue_suspended_suspends_the_submission_queue_by_default(sim: SimulatedExchange) -> None:
    sim.inject("queue-suspended", "EX01")
    (queue,) = sim.invoke("EX02", EX, "Get-Queue", [("Identity", "EX01\\Submission")]).output
    assert queue.props["Status"].name == "Suspended"
    with pytest.raises(ValueError):
        sim.inject("queue-suspended", "EX01", queue="nowhere.example")


def test_queue_slow_drains_only_after_n_polls(sim: SimulatedExchange) -> None:
    sim.inject_spec("queue-slow@EX01:3")
    start_draining(sim)
    before = pending(sim)  # poll 1
    sim.clock.advance(600)
    assert pending(sim) == before  # poll 2
    sim.clock.advance(600)
    assert pending(sim) == before  # poll 3: from now on mail moves
    sim.clock.advance(600)
    assert pending(sim) == 0


def test_poison_message_shows_a_poison_queue(sim: SimulatedExchange) -> None:
    sim.inject("poison-message", "EX01")
    (queue,) = sim.invoke("EX02", EX, "Get-Queue", [("Server", "EX01"),
                                                     ("Filter", "NextHopDomain -eq 'Poison Message'")]).output
    assert queue.props["MessageCount"] == 1
    assert queue.props["Identity"].to_string == "EX01\\Poison"


def test_transport_restart_fails_the_first_attempt(sim: SimulatedExchange) -> None:
    sim.inject("transport-restart-fails", "EX01")
    first = sim.invoke("EX01", DEFAULT, "Restart-Service", [("Name", "MSExchangeTransport")])
    assert first.errors[0].error_id == "StartServiceFailed,Microsoft.PowerShell.Commands.RestartServiceCommand"
    (svc,) = sim.invoke("EX01", DEFAULT, "Get-Service", [("Name", "MSExchangeTransport")]).output
    assert svc.props["Status"].name == "Stopped"
    health = sim.invoke("EX01", EX, "Test-ServiceHealth", []).output
    assert [h.props["ServicesNotRunning"].items for h in health][-1] == ["MSExchangeTransport"]
    sim.clock.advance(600)
    with pytest.raises(SimTerminatingError):
        pending(sim)
    second = sim.invoke("EX01", DEFAULT, "Restart-Service", [("Name", "MSExchangeTransport")])
    assert second.errors == []
    sim.clock.advance(transport.BOOTLOADER_SECONDS)
    assert pending(sim) > 0


def test_held_by_other_requester_keeps_owa_proxy_inactive(sim: SimulatedExchange) -> None:
    sim.inject("held-by-other-requester", "EX01")
    assert states(sim)["OwaProxy"] == "Inactive"
    sim.invoke("EX02", EX, "Set-ServerComponentState", [("Identity", "EX01"), ("Component", "OwaProxy"),
                                                         ("State", "Active"), ("Requester", "Maintenance")])
    assert states(sim)["OwaProxy"] == "Inactive"


def test_setup_leftover_holds_the_server_offline_with_functional_votes(sim: SimulatedExchange) -> None:
    sim.inject("setup-leftover", "EX01")
    current = states(sim)
    assert current["ServerWideOffline"] == current["Monitoring"] == current["RecoveryActionsEnabled"] == "Inactive"
    assert current["HubTransport"] == "Inactive"
    for component in ("ServerWideOffline", "Monitoring", "RecoveryActionsEnabled"):
        sim.invoke("EX02", EX, "Set-ServerComponentState", [("Identity", "EX01"), ("Component", component),
                                                             ("State", "Active"), ("Requester", "Functional")])
    assert {c for c, s in states(sim).items() if s != "Active"} == {"ForwardSyncDaemon", "ProvisioningRps"}


def test_db_move_refused_refuses_moves_until_it_runs_out(sim: SimulatedExchange) -> None:
    sim.inject("db-move-refused", "EX01", times=1)
    refused = sim.invoke("EX02", EX, "Move-ActiveMailboxDatabase", [("Identity", "DB01")])
    assert "AmDbMoveMoveSuppressedBlackoutException" in refused.errors[0].message
    moved = sim.invoke("EX02", EX, "Move-ActiveMailboxDatabase", [("Identity", "DB01")])
    assert moved.errors == [] and moved.output[0].props["ActiveServerAtEnd"] == "ex02"


def test_unreachable_fails_the_next_n_http_requests(sim: SimulatedExchange) -> None:
    sim.inject_spec("unreachable@EX01:2")
    assert [sim.take_http_failure("EX01") for _ in range(3)] == [True, True, False]
    assert sim.take_http_failure("EX02") is False


def test_cluster_resume_fails_once(sim: SimulatedExchange) -> None:
    sim.invoke("EX01", DEFAULT, "Suspend-ClusterNode", [("Name", "EX01")])
    sim.inject("cluster-resume-fails", "EX01")
    with pytest.raises(SimTerminatingError):
        sim.invoke("EX01", DEFAULT, "Resume-ClusterNode", [("Name", "EX01")])
    (node,) = sim.invoke("EX01", DEFAULT, "Resume-ClusterNode", [("Name", "EX01")]).output
    assert node.props["State"].name == "Up"


def test_already_in_maintenance_looks_like_a_finished_entry_run(sim: SimulatedExchange) -> None:
    sim.inject("already-in-maintenance", "EX01")
    current = states(sim)
    assert {c for c, s in current.items() if s == "Active"} == {"Monitoring", "RecoveryActionsEnabled"}
    (mbx,) = sim.invoke("EX02", EX, "Get-MailboxServer", [("Identity", "EX01")]).output
    assert mbx.props["DatabaseCopyAutoActivationPolicy"].name == "Blocked"
    assert mbx.props["DatabaseCopyActivationDisabledAndMoveNow"] is True
    (node,) = sim.invoke("EX02", DEFAULT, "Get-ClusterNode", [("Name", "EX01")]).output
    assert node.props["State"].name == "Paused"
    assert pending(sim) == 0
    copies = sim.invoke("EX02", EX, "Get-MailboxDatabaseCopyStatus", [("Server", "EX01")]).output
    assert not any(c.props["ActiveCopy"] for c in copies)


def test_a_mailbox_move_is_served_by_get_moverequest_and_its_database_filters(sim) -> None:
    sim.inject_spec(parse_fault("mailbox-move-in-progress@EX01"))
    [move] = sim.invoke("EX02", EX, "Get-MoveRequest", [("ResultSize", "Unlimited")]).output
    assert (move.props["Status"].name, move.props["Status"].value) == ("InProgress", 2)
    assert str(move.props["TargetDatabase"].to_string) == "DB01"
    assert sim.invoke("EX02", EX, "Get-MoveRequest", [("TargetDatabase", "db01")]).output
    assert not sim.invoke("EX02", EX, "Get-MoveRequest", [("SourceDatabase", "DB01")]).output
    assert not sim.invoke("EX02", EX, "Get-MoveRequest", [("MoveStatus", "Queued")]).output


def test_the_auth_certificate_expires_in_n_days_on_every_server_and_other_thumbprints_are_not_found(sim) -> None:
    thumbprint = sim.invoke("EX01", EX, "Get-AuthConfig", []).output[0].props["CurrentCertificateThumbprint"]
    before = sim.invoke("EX01", EX, "Get-ExchangeCertificate", [("Thumbprint", thumbprint), ("Server", "EX02")])
    assert before.output[0].props["NotAfter"] - sim.clock.now() > timedelta(days=4 * 365)
    sim.inject_spec(parse_fault("auth-cert-expiring@EX01:-3"))
    after = sim.invoke("EX01", EX, "Get-ExchangeCertificate", [("Thumbprint", thumbprint), ("Server", "EX02")])
    assert after.output[0].props["NotAfter"] == sim.clock.now() - timedelta(days=3)
    assert after.output[0].props["Status"] == "DateInvalid"
    other = sim.invoke("EX01", EX, "Get-ExchangeCertificate", [("Thumbprint", "00" * 20), ("Server", "EX01")])
    assert not other.output and other.errors


def test_back_pressure_raises_one_transport_resource_in_the_resource_throttling_diagnostics(sim) -> None:
    def levels() -> str:
        return sim.invoke("EX02", EX, "Get-ExchangeDiagnosticInfo", [
            ("Server", "EX01"), ("Process", "EdgeTransport"), ("Component", "ResourceThrottling")]).output[0].props[
            "Result"]

    assert "<CurrentResourceUse>High</CurrentResourceUse>" not in levels()
    sim.inject_spec(parse_fault("back-pressure@EX01"))
    assert "Queue]</Resource><CurrentResourceUse>High</CurrentResourceUse>" in levels()
