"""Transport: draining over simulated time, the restart window, Redirect-Message, Get-Queue -Filter."""
from __future__ import annotations

import pytest

from exchange_sim import transport
from exchange_sim.model import SimulatedExchange
from exchange_sim.objects import SimTerminatingError

EX = "Microsoft.Exchange"
DEFAULT = "Microsoft.PowerShell"
ACTIVE_FILTER = "MessageCount -gt 0 -and DeliveryType -ne 'ShadowRedundancy' -and NextHopDomain -ne 'Poison Message'"


@pytest.fixture
def sim() -> SimulatedExchange:
    sim = SimulatedExchange()
    sim.add_dag("DAG1", ["EX01", "EX02"])
    return sim


def queues(sim: SimulatedExchange, server: str = "EX01", filter_text: str | None = None) -> dict[str, int]:
    params: list[tuple[str, object]] = [("Server", server)]
    if filter_text:
        params.append(("Filter", filter_text))
    result = sim.invoke("EX02", EX, "Get-Queue", params)
    return {o.props["Identity"].to_string: o.props["MessageCount"] for o in result.output}


def pending(sim: SimulatedExchange, server: str = "EX01") -> int:
    return sum(queues(sim, server, ACTIVE_FILTER).values())


def drain(sim: SimulatedExchange, server: str = "EX01") -> None:
    sim.invoke("EX02", EX, "Set-ServerComponentState", [("Identity", server), ("Component", "HubTransport"),
                                                         ("State", "Draining"), ("Requester", "Maintenance")])
    sim.invoke(server, DEFAULT, "Restart-Service", [("Name", "MSExchangeTransport")])
    sim.clock.advance(transport.BOOTLOADER_SECONDS)


def test_queues_hold_still_while_hub_transport_is_active(sim: SimulatedExchange) -> None:
    before = pending(sim)
    assert before > 0
    sim.clock.advance(3600)
    assert pending(sim) == before


def test_queues_drain_over_simulated_time_once_draining_is_picked_up(sim: SimulatedExchange) -> None:
    drain(sim)
    before = pending(sim)
    sim.clock.advance(transport.SECONDS_PER_MESSAGE)
    middle = pending(sim)
    assert 0 < middle < before
    sim.clock.advance(60)
    assert pending(sim) == 0


def test_transport_picks_up_draining_late_without_a_restart(sim: SimulatedExchange) -> None:
    sim.invoke("EX02", EX, "Set-ServerComponentState", [("Identity", "EX01"), ("Component", "HubTransport"),
                                                         ("State", "Draining"), ("Requester", "Maintenance")])
    before = pending(sim)
    sim.clock.advance(60)
    assert pending(sim) == before  # the running service has not noticed yet
    sim.clock.advance(transport.STATE_PICKUP_SECONDS + 60)
    assert pending(sim) == 0


def test_shadow_and_poison_queues_never_drain_by_themselves(sim: SimulatedExchange) -> None:
    sim.inject("poison-message", "EX01", messages=2)
    drain(sim)
    sim.clock.advance(600)
    remaining = queues(sim, filter_text="MessageCount -gt 0")
    assert remaining == {"EX01\\Shadow\\6": 2, "EX01\\Poison": 2}


def test_get_queue_fails_while_the_transport_restarts(sim: SimulatedExchange) -> None:
    sim.invoke("EX01", DEFAULT, "Restart-Service", [("Name", "MSExchangeTransport")])
    with pytest.raises(SimTerminatingError) as caught:
        queues(sim)
    assert caught.value.error.exception_type.endswith("QueueViewerException")
    assert "GetQueue" in caught.value.error.error_id
    sim.clock.advance(transport.BOOTLOADER_SECONDS)
    assert queues(sim)


def test_restart_service_takes_simulated_time(sim: SimulatedExchange) -> None:
    start = sim.clock.now()
    result = sim.invoke("EX01", DEFAULT, "Restart-Service", [("Name", "MSExchangeTransport")])
    assert (sim.clock.now() - start).total_seconds() == transport.SERVICE_RESTART_SECONDS
    assert result.warnings and "Waiting for service" in result.warnings[0]
    (svc,) = sim.invoke("EX01", DEFAULT, "Get-Service", [("Name", "MSExchangeTransport")]).output
    assert svc.props["Status"].name == "Running"


def test_redirect_message_moves_active_messages_to_the_peer(sim: SimulatedExchange) -> None:
    sim.invoke("EX02", EX, "Set-ServerComponentState", [("Identity", "EX01"), ("Component", "HubTransport"),
                                                         ("State", "Draining"), ("Requester", "Maintenance")])
    moved = pending(sim)
    peer_before = queues(sim, "EX02")["EX02\\Submission"]
    result = sim.invoke("EX02", EX, "Redirect-Message", [("Server", "EX01"), ("Target", "EX02.contoso.com"),
                                                          ("Confirm", False)])
    assert result.errors == []
    assert pending(sim) == 0
    assert queues(sim, "EX02")["EX02\\Submission"] == peer_before + moved
    assert queues(sim)["EX01\\Shadow\\6"] == 2  # shadow copies are not redirected


def test_redirect_message_refuses_a_peer_that_is_not_accepting_mail(sim: SimulatedExchange) -> None:
    sim.invoke("EX02", EX, "Set-ServerComponentState", [("Identity", "EX02"), ("Component", "HubTransport"),
                                                         ("State", "Draining"), ("Requester", "Maintenance")])
    before = pending(sim)
    result = sim.invoke("EX02", EX, "Redirect-Message", [("Server", "EX01"), ("Target", ["EX02.contoso.com"])])
    assert len(result.errors) == 1
    assert pending(sim) == before


def test_get_queue_filter_understands_the_common_operators(sim: SimulatedExchange) -> None:
    assert set(queues(sim, filter_text="DeliveryType -eq 'ShadowRedundancy'")) == {"EX01\\Shadow\\6"}
    assert set(queues(sim, filter_text="NextHopDomain -eq 'fabrikam.com'")) == {"EX01\\7"}
    assert set(queues(sim, filter_text="MessageCount -ge 3 -and Status -eq Ready")) == {"EX01\\3", "EX01\\4", "EX01\\7"}
    assert set(queues(sim, filter_text="MessageCount -lt 3")) == {"EX01\\Submission", "EX01\\5", "EX01\\Shadow\\6"}
    assert set(queues(sim, filter_text="Identity -eq 'EX01\\Submission'")) == {"EX01\\Submission"}
    assert set(queues(sim, filter_text="NextHopDomain -like 'ex02*' -or MessageCount -le 0")) == {"EX01\\Shadow\\6"}
    assert set(queues(sim, filter_text="DeliveryType -ne 'ShadowRedundancy' -and -not (MessageCount -gt 2)")) == {
        "EX01\\Submission", "EX01\\5"}


def test_an_invalid_filter_is_a_terminating_error(sim: SimulatedExchange) -> None:
    with pytest.raises(SimTerminatingError) as caught:
        queues(sim, filter_text="NoSuchProperty -eq 1")
    assert caught.value.error.category == "InvalidArgument"
    with pytest.raises(SimTerminatingError):
        queues(sim, filter_text="MessageCount -gt")


def test_get_queue_by_identity_and_get_message(sim: SimulatedExchange) -> None:
    (queue,) = sim.invoke("EX02", EX, "Get-Queue", [("Identity", "EX01\\Submission")]).output
    assert queue.props["DeliveryType"].name == "Undefined"
    messages = sim.invoke("EX02", EX, "Get-Message", [("Queue", "EX01\\Submission")]).output
    assert len(messages) == 2
    assert messages[0].props["Identity"].to_string.startswith("EX01\\Submission\\")


def test_retry_queue_on_a_shadow_queue_discards_copies_once_the_primary_drained(sim: SimulatedExchange) -> None:
    shadow_filter = "DeliveryType -eq 'ShadowRedundancy' -and NextHopDomain -like 'EX01*'"
    sim.invoke("EX02", EX, "Retry-Queue", [("Server", "EX02"), ("Filter", shadow_filter)])
    assert sum(queues(sim, "EX02", shadow_filter).values()) == 2  # primary still has mail in flight
    drain(sim)
    sim.clock.advance(600)
    sim.invoke("EX02", EX, "Retry-Queue", [("Server", "EX02"), ("Filter", shadow_filter)])
    assert sum(queues(sim, "EX02", shadow_filter).values()) == 0


def test_auto_advance_lets_a_sleepless_poller_see_progress(sim: SimulatedExchange) -> None:
    drain(sim)
    counts = []
    for _ in range(5):
        result = sim.invoke("EX02", EX, "Get-Queue", [("Server", "EX01"), ("Filter", ACTIVE_FILTER)],
                            auto_advance_seconds=5)
        counts.append(sum(o.props["MessageCount"] for o in result.output))
    assert counts == sorted(counts, reverse=True)
    assert counts[-1] < counts[0]


def test_resume_queue_resumes_a_suspended_submission_queue(sim: SimulatedExchange) -> None:
    sim.servers["EX01"].transport.queues["Submission"].status = "Suspended"
    sim.invoke("EX02", EX, "Resume-Queue", [("Identity", "EX01\\Submission"), ("Confirm", False)])
    (queue,) = sim.invoke("EX02", EX, "Get-Queue", [("Identity", "EX01\\Submission")]).output
    assert queue.props["Status"].name == "Ready"


def test_a_running_clock_moves_on_its_own_and_still_jumps_ahead() -> None:
    """Served to a real engine (the demo), simulated time runs on its own, faster than the wall clock."""
    import time as _time
    from datetime import UTC, datetime

    from exchange_sim.model import SimulatedExchange

    sim = SimulatedExchange(start=datetime.now(UTC), speed=600)
    sim.add_standalone("EX01")
    before = sim.clock.now()
    _time.sleep(0.05)
    assert (sim.clock.now() - before).total_seconds() >= 25
    sim.clock.advance(100)
    assert (sim.clock.now() - before).total_seconds() >= 125
