"""Unified Messaging on Exchange 2016: Get-UMActiveCalls, calls ending over simulated time once UMCallRouter stops
taking new ones, and the um-call-stuck fault. Exchange 2019 has no UM at all."""
from __future__ import annotations

import pytest

from exchange_sim.model import SimulatedExchange
from exchange_sim.objects import SimTerminatingError

EX = "Microsoft.Exchange"


@pytest.fixture
def sim() -> SimulatedExchange:
    sim = SimulatedExchange()
    sim.add_standalone("EX16", version="2016")
    sim.add_standalone("EX19")
    return sim


def calls(sim: SimulatedExchange, server: str = "EX16") -> list:
    return sim.invoke("EX16", EX, "Get-UMActiveCalls", [("Server", server)]).output


def router(sim: SimulatedExchange, state: str, component: str = "UMCallRouter") -> None:
    sim.invoke("EX16", EX, "Set-ServerComponentState", [("Identity", "EX16"), ("Component", component),
                                                         ("State", state), ("Requester", "Maintenance")])


def test_active_calls_are_shaped_like_the_activecalls_class(sim: SimulatedExchange) -> None:
    first, second = calls(sim)
    assert first.type_names[:2] == ("Microsoft.Exchange.UM.Rpc.ActiveCalls",
                                    "Microsoft.Exchange.UM.Rpc.UMDiagnosticObject")
    assert set(first.props) >= {"GatewayId", "ServerId", "DialPlan", "DialedNumber", "CallType", "CallingNumber",
                                "DiversionNumber", "CallState", "AppState", "Identity"}
    assert (first.props["ServerId"], first.props["CallState"]) == ("EX16.contoso.com", "Connected")
    assert first.props["CallingNumber"] != second.props["CallingNumber"]


def test_while_the_router_is_active_ended_calls_are_replaced(sim: SimulatedExchange) -> None:
    before = {c.props["CallingNumber"] for c in calls(sim)}
    sim.advance(600)
    after = calls(sim)
    assert len(after) == 2
    assert not before & {c.props["CallingNumber"] for c in after}


def test_once_draining_no_new_call_comes_and_the_calls_end_within_their_length(sim: SimulatedExchange) -> None:
    router(sim, "Draining")
    sim.advance(75)
    assert [c.props["CallType"] for c in calls(sim)] == ["SubscriberAccess"]  # the 75 s call has ended
    sim.advance(75)
    assert calls(sim) == []
    router(sim, "Active")
    assert len(calls(sim)) == 2  # calls are routed here again


def test_server_wide_offline_stops_new_calls_too(sim: SimulatedExchange) -> None:
    router(sim, "Inactive", component="ServerWideOffline")
    sim.advance(150)
    assert calls(sim) == []


def test_a_stuck_call_stays_up_after_draining(sim: SimulatedExchange) -> None:
    sim.inject("um-call-stuck", "EX16", calls=2)
    router(sim, "Draining")
    sim.advance(3600)
    assert len(calls(sim)) == 2


def test_the_cmdlet_does_not_exist_on_exchange_2019(sim: SimulatedExchange) -> None:
    with pytest.raises(SimTerminatingError) as caught:
        sim.invoke("EX19", EX, "Get-UMActiveCalls", [("Server", "EX19")])
    assert caught.value.error.error_id == "CommandNotFoundException"


def test_asking_a_2016_shell_about_a_2019_server_is_an_error_record(sim: SimulatedExchange) -> None:
    result = sim.invoke("EX16", EX, "Get-UMActiveCalls", [("Server", "EX19")])
    assert result.output == []
    [error] = result.errors
    assert "EX19" in error.message and error.category == "InvalidData"


def test_um_call_stuck_refuses_a_server_without_um(sim: SimulatedExchange) -> None:
    with pytest.raises(ValueError, match="no Unified Messaging"):
        sim.inject("um-call-stuck", "EX19")
