"""The endpoint in front of the real simulated organisation (exchange_sim.model), driven by pypsrp."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.wsman import WSMan

from exchange_sim.endpoint import DEFAULT, EXCHANGE, RunningEndpoint, start_endpoint
from runner.exchange.parsing import to_plain

model = pytest.importorskip(
    "exchange_sim.model", reason="the simulated organisation is not complete yet", exc_type=ImportError
)

USER, PASSWORD = "exmaint-svc", "Model-Test-Passw0rd"


@pytest.fixture
def sim() -> Any:
    exchange = model.SimulatedExchange()
    exchange.add_standalone("EX01")
    exchange.add_dag("DAG1", ["EX02", "EX03"])
    return exchange


@pytest.fixture
def endpoint(sim: Any) -> Iterator[RunningEndpoint]:
    with start_endpoint(sim, users={USER: PASSWORD}) as running:
        yield running


def pool_for(endpoint: RunningEndpoint, server: str, configuration: str = EXCHANGE) -> RunspacePool:
    wsman = WSMan("127.0.0.1", port=endpoint.port, path=endpoint.path_for(server, configuration), ssl=False,
                  auth="basic", encryption="never", username=USER, password=PASSWORD)
    return RunspacePool(wsman, configuration_name=configuration)


def invoke(pool: RunspacePool, cmdlet: str, **parameters: Any) -> PowerShell:
    ps = PowerShell(pool)
    ps.add_cmdlet(cmdlet)
    for name, value in parameters.items():
        ps.add_parameter(name, value)
    ps.invoke()
    ps.close()
    return ps


def test_component_states_arrive_as_exchange_shaped_objects(endpoint: RunningEndpoint) -> None:
    with pool_for(endpoint, "EX01") as pool:
        ps = invoke(pool, "Get-ServerComponentState", Identity="EX01")
    assert not ps.had_errors
    assert ps.output
    first = ps.output[0]
    assert first.types[0].startswith("Deserialized.Microsoft.Exchange.")
    state = first.adapted_properties["State"]
    assert str(state) in ("Active", "Inactive")
    assert state != str(state)
    assert first.adapted_properties["LocalStates"].property_sets[0].startswith("<LST")


def test_an_unknown_mailbox_is_a_non_terminating_error(endpoint: RunningEndpoint) -> None:
    with pool_for(endpoint, "EX01") as pool:
        ps = invoke(pool, "Get-Mailbox", Identity="nobody-at-all")
    assert ps.had_errors is False
    assert ps.streams.error


def test_the_exchange_endpoint_refuses_scripts(endpoint: RunningEndpoint) -> None:
    with pool_for(endpoint, "EX01") as pool:
        ps = PowerShell(pool)
        ps.add_script("Get-ExchangeServer")
        ps.invoke()
    assert ps.had_errors is True


def test_dag_status_arrives_in_the_shape_the_steps_read(endpoint: RunningEndpoint, sim: Any) -> None:
    sim.invoke("EX03", DEFAULT, "Suspend-ClusterNode", [("Name", "EX02")])
    with pool_for(endpoint, "EX03") as pool:
        ps = invoke(pool, "Get-DatabaseAvailabilityGroup", Identity="DAG1", Status=True)
    assert not ps.had_errors
    dag = to_plain(ps.output[0])
    # Lists of ADObjectIds become dicts with a Name; a single ADObjectId becomes its ToString.
    assert [s["Name"] for s in dag["Servers"]] == ["EX02", "EX03"]
    assert [s["Name"] for s in dag["OperationalServers"]] == ["EX02", "EX03"]
    assert [s["Name"] for s in dag["ServersInMaintenance"]] == ["EX02"]
    assert dag["PrimaryActiveManager"] == "EX03"


def test_um_active_calls_arrive_from_a_2016_server(endpoint: RunningEndpoint, sim: Any) -> None:
    sim.add_standalone("EX16", version="2016")
    with pool_for(endpoint, "EX16") as pool:
        ps = invoke(pool, "Get-UMActiveCalls", Server="EX16")
    assert not ps.had_errors
    assert ps.output[0].types[0] == "Deserialized.Microsoft.Exchange.UM.Rpc.ActiveCalls"
    calls = [to_plain(o) for o in ps.output]
    assert [(c["CallType"], c["CallState"]) for c in calls] == [("CallAnswering", "Connected"),
                                                                ("SubscriberAccess", "Connected")]


def test_services_are_served_on_the_wsman_path(endpoint: RunningEndpoint) -> None:
    with pool_for(endpoint, "EX02", DEFAULT) as pool:
        ps = invoke(pool, "Get-Service", Name="MSExchangeTransport")
    assert not ps.had_errors
    assert endpoint.stats.creates[("EX02", DEFAULT)] == 1


def test_the_unreachable_fault_drops_the_connection(endpoint: RunningEndpoint, sim: Any) -> None:
    sim.inject("unreachable", "EX03")
    with pytest.raises(requests.exceptions.ConnectionError):
        pool_for(endpoint, "EX03").open()
