"""Server component states: per-requester votes, ServerWideOffline, components inactive by design."""
from __future__ import annotations

import pytest

from exchange_sim.model import SimulatedExchange
from exchange_sim.objects import SimEnum, SimList, SimTerminatingError

EX = "Microsoft.Exchange"


@pytest.fixture
def sim() -> SimulatedExchange:
    sim = SimulatedExchange()
    sim.add_standalone("EX01")
    return sim


def set_state(sim: SimulatedExchange, component: str, state: str, requester: str, server: str = "EX01") -> None:
    sim.invoke("EX01", EX, "Set-ServerComponentState",
               [("Identity", server), ("Component", component), ("State", state), ("Requester", requester)])


def state_of(sim: SimulatedExchange, component: str, server: str = "EX01") -> str:
    result = sim.invoke("EX01", EX, "Get-ServerComponentState", [("Identity", server), ("Component", component)])
    (obj,) = result.output
    return obj.props["State"].name


def test_a_2019_server_lists_the_34_components_of_the_e19_capture(sim: SimulatedExchange) -> None:
    result = sim.invoke("EX01", EX, "Get-ServerComponentState", [("Identity", "EX01")])
    names = [o.props["Component"] for o in result.output]
    assert len(names) == 34
    assert names[:3] == ["ServerWideOffline", "HubTransport", "FrontendTransport"]
    assert "UMCallRouter" not in names


def test_a_2016_server_still_has_um_call_router() -> None:
    sim = SimulatedExchange()
    sim.add_standalone("EX16", version="2016")
    result = sim.invoke("EX16", EX, "Get-ServerComponentState", [("Identity", "EX16")])
    assert len(result.output) == 35
    assert "UMCallRouter" in [o.props["Component"] for o in result.output]


def test_the_object_is_shaped_like_the_capture(sim: SimulatedExchange) -> None:
    (obj,) = sim.invoke("EX01", EX, "Get-ServerComponentState",
                        [("Identity", "EX01"), ("Component", "ServerWideOffline")]).output
    assert obj.type_names[0] == "Microsoft.Exchange.Data.Directory.Management.ServerComponentStatePresentationObject"
    assert obj.props["State"] == SimEnum(
        ("Microsoft.Exchange.Data.ServiceState", "System.Enum", "System.ValueType", "System.Object"), "Active", 1)
    assert isinstance(obj.props["LocalStates"], SimList)
    (vote,) = obj.props["LocalStates"].items
    assert vote.props["Requester"] == "Functional"
    assert vote.to_string.startswith("Requestor:Functional; State:Active; Timestamp:")
    assert obj.props["Identity"].to_string == "EX01"
    assert obj.props["ServerFqdn"] == "EX01.contoso.com"


def test_inactive_from_any_requester_wins(sim: SimulatedExchange) -> None:
    set_state(sim, "OwaProxy", "Active", "Maintenance")
    set_state(sim, "OwaProxy", "Inactive", "HealthApi")
    assert state_of(sim, "OwaProxy") == "Inactive"


def test_only_the_same_requester_clears_its_vote(sim: SimulatedExchange) -> None:
    set_state(sim, "OwaProxy", "Inactive", "HealthApi")
    set_state(sim, "OwaProxy", "Active", "Maintenance")
    assert state_of(sim, "OwaProxy") == "Inactive"
    set_state(sim, "OwaProxy", "Active", "HealthApi")
    assert state_of(sim, "OwaProxy") == "Active"


def test_votes_are_kept_per_requester_in_local_and_remote_states(sim: SimulatedExchange) -> None:
    set_state(sim, "HubTransport", "Draining", "Maintenance")
    set_state(sim, "HubTransport", "Inactive", "Sidelined")
    (obj,) = sim.invoke("EX01", EX, "Get-ServerComponentState",
                        [("Identity", "EX01"), ("Component", "HubTransport")]).output
    for key in ("LocalStates", "RemoteStates"):
        votes = {v.props["Requester"]: v.props["State"] for v in obj.props[key].items}
        assert votes == {"Maintenance": "Draining", "Sidelined": "Inactive"}


def test_local_only_writes_only_the_registry(sim: SimulatedExchange) -> None:
    sim.invoke("EX01", EX, "Set-ServerComponentState",
               [("Identity", "EX01"), ("Component", "EwsProxy"), ("State", "Inactive"),
                ("Requester", "Maintenance"), ("LocalOnly", None)])
    (obj,) = sim.invoke("EX01", EX, "Get-ServerComponentState",
                        [("Identity", "EX01"), ("Component", "EwsProxy")]).output
    assert [v.props["Requester"] for v in obj.props["LocalStates"].items] == ["Maintenance"]
    assert obj.props["RemoteStates"].items == []


def test_draining_then_inactive_reports_the_most_restrictive(sim: SimulatedExchange) -> None:
    set_state(sim, "HubTransport", "Draining", "Maintenance")
    assert state_of(sim, "HubTransport") == "Draining"


def test_server_wide_offline_takes_everything_down_but_monitoring_and_recovery(sim: SimulatedExchange) -> None:
    set_state(sim, "ServerWideOffline", "Inactive", "Maintenance")
    result = sim.invoke("EX01", EX, "Get-ServerComponentState", [("Identity", "EX01")])
    active = sorted(o.props["Component"] for o in result.output if o.props["State"].name == "Active")
    assert active == ["Monitoring", "RecoveryActionsEnabled"]
    assert all(o.props["ServerWideOfflineIsOffline"] for o in result.output)


def test_a_component_can_be_inactive_without_a_vote_of_its_own(sim: SimulatedExchange) -> None:
    set_state(sim, "ServerWideOffline", "Inactive", "Functional")
    (obj,) = sim.invoke("EX01", EX, "Get-ServerComponentState",
                        [("Identity", "EX01"), ("Component", "OwaProxy")]).output
    assert obj.props["State"].name == "Inactive"
    assert obj.props["LocalStates"].items == []


def test_forward_sync_daemon_and_provisioning_rps_are_inactive_by_design(sim: SimulatedExchange) -> None:
    result = sim.invoke("EX01", EX, "Get-ServerComponentState", [("Identity", "EX01")])
    inactive = sorted(o.props["Component"] for o in result.output if o.props["State"].name != "Active")
    assert inactive == ["ForwardSyncDaemon", "ProvisioningRps"]


def test_leaving_maintenance_restores_everything_but_the_by_design_two(sim: SimulatedExchange) -> None:
    set_state(sim, "HubTransport", "Draining", "Maintenance")
    set_state(sim, "ServerWideOffline", "Inactive", "Maintenance")
    set_state(sim, "ServerWideOffline", "Active", "Maintenance")
    set_state(sim, "HubTransport", "Active", "Maintenance")
    result = sim.invoke("EX01", EX, "Get-ServerComponentState", [("Identity", "EX01")])
    assert sorted(o.props["Component"] for o in result.output if o.props["State"].name == "Inactive") == [
        "ForwardSyncDaemon", "ProvisioningRps"]


def test_draining_is_refused_for_a_non_transport_component(sim: SimulatedExchange) -> None:
    with pytest.raises(SimTerminatingError) as caught:
        set_state(sim, "OwaProxy", "Draining", "Maintenance")
    assert caught.value.error.category == "InvalidArgument"


def test_an_unknown_component_throws_like_exchange(sim: SimulatedExchange) -> None:
    with pytest.raises(SimTerminatingError) as caught:
        state_of(sim, "UMCallRouter")  # gone on 2019
    assert caught.value.error.exception_type == "System.ArgumentException"


def test_component_names_and_enum_values_are_case_insensitive(sim: SimulatedExchange) -> None:
    set_state(sim, "owaproxy", "inactive", "maintenance")
    assert state_of(sim, "OWAPROXY") == "Inactive"


def test_imap_stops_when_its_proxy_goes_inactive(sim: SimulatedExchange) -> None:
    sim.servers["EX01"].services["MSExchangeIMAP4"].running = True
    set_state(sim, "ServerWideOffline", "Inactive", "Maintenance")
    assert not sim.servers["EX01"].services["MSExchangeIMAP4"].running
