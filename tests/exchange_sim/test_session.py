"""The in-process session: conversion to plain dicts and the mapping of errors to the session's exceptions."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest

from exchange_sim.model import SimulatedExchange
from exchange_sim.objects import SimEnum, SimList, SimObject
from exchange_sim.session import SimulatorSession, to_plain
from runner.exchange.session import CmdletError, Endpoint, EndpointUnreachable


@pytest.fixture
def sim() -> SimulatedExchange:
    sim = SimulatedExchange()
    sim.add_dag("DAG1", ["EX01", "EX02"])
    return sim


def test_to_plain_follows_the_parser_rules() -> None:
    when = datetime(2021, 9, 28, 17, 32, 1, tzinfo=UTC)
    obj = SimObject(
        ("Deserialized.Some.Type", "System.Object"),
        {
            "State": SimEnum(("Microsoft.Exchange.Data.ServiceState", "System.Enum"), "Active", 1),
            "When": when,
            "Identity": SimObject(("Microsoft.Exchange.Data.Directory.ADObjectId",), {"Name": "EX01"}, "EX01"),
            "Names": SimList(("MultiValuedProperty",), ["a", "b"]),
            "Votes": SimList(("List",), [SimObject(("Details",), {"Requester": "Functional"}, "Requestor:...")]),
            "Count": 3,
            "Nothing": None,
        },
        "Some.Type",
    )
    assert to_plain(obj) == {
        "State": "Active",
        "When": when,
        "Identity": "EX01",
        "Names": ["a", "b"],
        "Votes": [{"Requester": "Functional", "_type": "Details"}],
        "Count": 3,
        "Nothing": None,
        "_type": "Some.Type",
    }


def test_run_returns_plain_dicts(sim: SimulatedExchange) -> None:
    session = SimulatorSession(sim, "EX02")
    result = session.run("Get-ServerComponentState", {"Identity": "EX01", "Component": "HubTransport"})
    (state,) = result.output
    assert state["_type"] == "Microsoft.Exchange.Data.Directory.Management.ServerComponentStatePresentationObject"
    assert state["State"] == "Active"
    assert state["Identity"] == "EX01"
    assert state["LocalStates"] == []
    assert result.ok


def test_run_takes_pairs_and_switches(sim: SimulatedExchange) -> None:
    session = SimulatorSession(sim, "EX02")
    result = session.run("Get-MailboxDatabase", [("Server", "EX01"), ("Status", None)])
    assert {db["Name"] for db in result.output} == {"DB01", "DB02", "DB03", "DB04"}
    assert all(isinstance(db["LastFullBackup"], datetime) for db in result.output)
    assert result.output[0]["DatabaseSize"].endswith("bytes)")


def test_run_on_the_default_endpoint(sim: SimulatedExchange) -> None:
    session = SimulatorSession(sim, "EX01")
    (node,) = session.run("Get-ClusterNode", {"Name": "EX01"}, endpoint=Endpoint.DEFAULT).output
    assert node["State"] == "Up"
    assert session.run("Restart-Service", {"Name": "MSExchangeTransport"}, endpoint=Endpoint.DEFAULT).ok


def test_non_terminating_errors_become_error_records(sim: SimulatedExchange) -> None:
    result = SimulatorSession(sim, "EX02").run("Get-MailboxServer", {"Identity": "EX99"})
    assert not result.ok
    assert result.errors[0].category == "ObjectNotFound"
    assert result.errors[0].exception_type.endswith("ManagementObjectNotFoundException")


def test_terminating_errors_raise_cmdlet_error(sim: SimulatedExchange) -> None:
    with pytest.raises(CmdletError) as caught:
        SimulatorSession(sim, "EX02").run("Get-Queue", {"Bogus": 1})
    assert caught.value.record.error_id.startswith("NamedParameterNotFound,")
    assert caught.value.cmdlet == "Get-Queue"
    assert not caught.value.retryable


def test_unreachable_raises_a_retryable_endpoint_unreachable(sim: SimulatedExchange) -> None:
    sim.inject("unreachable", "EX02", times=1)
    session = SimulatorSession(sim, "EX02")
    with pytest.raises(EndpointUnreachable) as caught:
        session.run("Get-ExchangeServer", {"Identity": "EX01"})
    assert caught.value.retryable
    assert session.run("Get-ExchangeServer", {"Identity": "EX01"}).output[0]["Name"] == "EX01"
    assert [c.cmdlet for c in sim.commands] == ["Get-ExchangeServer"]  # the failed request never reached Exchange
