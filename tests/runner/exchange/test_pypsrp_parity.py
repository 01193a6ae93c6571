"""The pypsrp adapter, over the real WinRM/PSRP endpoint, returns exactly what the in-process simulator session does."""
from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest

from exchange_sim.endpoint import start_endpoint
from exchange_sim.model import SimulatedExchange
from runner.exchange.parsing import component_states, exchange_server, mailbox_server, service_health
from runner.exchange.pypsrp_session import EndpointConfig, PypsrpSession
from runner.exchange.session import CmdletError, Endpoint, EndpointUnreachable

USER, PASSWORD = "exmaint-svc", "Sim-Passw0rd-42"

READS: list[tuple[str, str, dict[str, Any]]] = [
    ("EX01", "Get-ServerComponentState", {"Identity": "EX01"}),
    ("EX01", "Test-ServiceHealth", {"Server": "EX01"}),
    ("EX01", "Get-MailboxServer", {"Identity": "EX01"}),
    ("EX01", "Get-ExchangeServer", {"Identity": "EX01"}),
    ("EX01", "Get-MailboxDatabase", {"Server": "EX01", "Status": True}),
    ("EX01", "Get-Queue", {"Server": "EX01"}),
    ("EX02", "Get-ServerComponentState", {"Identity": "EX02"}),
    ("EX02", "Get-MailboxServer", {"Identity": "EX02"}),
    ("EX02", "Get-MailboxDatabase", {"Status": True}),
    ("EX02", "Get-Queue", {"Server": "EX03"}),
    ("EX02", "Get-MailboxServer", {"Identity": "NOSUCHSERVER"}),  # a non-terminating error record
]


def _stable(records: list) -> list:
    """Error records without the RequestId/TimeStamp in Exchange's error id prefix: those differ from call to call."""
    return [dataclasses.replace(r, error_id=re.sub(r"RequestId=[^,\]]*,TimeStamp=[^\]]*", "", r.error_id))
            for r in records]


@pytest.fixture
def sim() -> SimulatedExchange:
    organisation = SimulatedExchange()
    organisation.add_standalone("EX01")
    organisation.add_dag("DAG1", ["EX02", "EX03", "EX04"])
    return organisation


@pytest.fixture
def endpoint(sim):
    with start_endpoint(sim, users={USER: PASSWORD}) as running:
        yield running


def adapter(running, server: str) -> PypsrpSession:
    def config(ep: Endpoint) -> EndpointConfig:
        return EndpointConfig(url=running.url_for(server, ep.value), configuration_name=ep.value, auth="basic",
                              username=USER, password=PASSWORD, encryption="never", operation_timeout=5,
                              read_timeout=10)

    return PypsrpSession(server, {Endpoint.EXCHANGE: config(Endpoint.EXCHANGE), Endpoint.DEFAULT: config(
        Endpoint.DEFAULT)})


def in_process(sim, server: str):
    from exchange_sim.session import SimulatorSession

    return SimulatorSession(sim, server)


@pytest.mark.parametrize(("server", "cmdlet", "parameters"), READS, ids=[f"{s}-{c}" for s, c, _ in READS])
def test_the_adapter_returns_the_same_dicts_as_the_in_process_session(sim, endpoint, server, cmdlet, parameters):
    with adapter(endpoint, server) as remote:
        over_the_wire = remote.run(cmdlet, parameters)
    local = in_process(sim, server).run(cmdlet, parameters)
    assert over_the_wire.output == local.output
    assert _stable(over_the_wire.errors) == _stable(local.errors)
    assert over_the_wire.warnings == local.warnings
    assert over_the_wire.output or over_the_wire.errors


def test_the_typed_readers_understand_the_simulated_objects(endpoint):
    with adapter(endpoint, "EX02") as remote:
        states = component_states(remote.run("Get-ServerComponentState", {"Identity": "EX02"}).output)
        health = service_health(remote.run("Test-ServiceHealth", {"Server": "EX02"}).output)
        mbx = mailbox_server(remote.run("Get-MailboxServer", {"Identity": "EX02"}).output[0])
        exs = exchange_server(remote.run("Get-ExchangeServer", {"Identity": "EX02"}).output[0])
    assert {s.component for s in states} >= {"ServerWideOffline", "HubTransport"}
    assert all(s.state in ("Active", "Inactive", "Draining") for s in states)
    assert health and all(h.role for h in health)
    assert mbx.name.upper() == "EX02" and mbx.dag == "DAG1"
    assert exs.name.upper() == "EX02" and exs.build.startswith("15.")


def test_a_maintenance_write_goes_through_and_reads_back(endpoint):
    with adapter(endpoint, "EX02") as remote:
        remote.run("Set-ServerComponentState", {"Identity": "EX02", "Component": "HubTransport", "State": "Draining",
                                                "Requester": "Maintenance"})
        states = component_states(remote.run("Get-ServerComponentState", {"Identity": "EX02",
                                                                          "Component": "HubTransport"}).output)
    assert [s.state for s in states] == ["Draining"]
    assert any(v.requester == "Maintenance" and v.state == "Draining" for v in states[0].local_states)


def test_a_bad_parameter_is_a_terminating_cmdlet_error(endpoint):
    with adapter(endpoint, "EX01") as remote, pytest.raises(CmdletError) as caught:
        remote.run("Get-MailboxServer", {"NoSuchParameter": "x"})
    assert caught.value.record.error_id
    assert caught.value.record.category


def test_the_exchange_endpoint_refuses_a_script_sent_by_raw_pypsrp(sim, endpoint):
    from pypsrp.powershell import PowerShell, RunspacePool
    from pypsrp.wsman import WSMan

    wsman = WSMan("127.0.0.1", port=endpoint.port, path=endpoint.path_for("EX01"), ssl=False, auth="basic",
                  username=USER, password=PASSWORD, encryption="never")
    with wsman, RunspacePool(wsman, configuration_name="Microsoft.Exchange") as pool:
        ps = PowerShell(pool)
        ps.add_script("Get-MailboxServer | Set-MailboxServer -DatabaseCopyAutoActivationPolicy Blocked")
        ps.invoke()
    assert ps.had_errors
    assert "no-language" in str(ps.streams.error[-1]).lower() or "not supported" in str(ps.streams.error[-1])
    assert sim.commands[-1].is_script


def test_an_unreachable_server_is_a_retryable_error_after_one_retry_for_reads(sim, endpoint):
    with adapter(endpoint, "EX01") as remote:
        remote.run("Get-MailboxServer", {"Identity": "EX01"})
        sim.inject("unreachable", "EX01", times=2)
        with pytest.raises(EndpointUnreachable) as caught:
            remote.run("Get-MailboxServer", {"Identity": "EX01"})
        assert caught.value.retryable
        assert remote.run("Get-MailboxServer", {"Identity": "EX01"}).output  # back once the fault is used up
    assert endpoint.open_shells() == []
