"""Exchange 2016 with Unified Messaging: UMCallRouter Draining, then a bounded wait for the calls in progress to end
(§1 step 3, DSC Wait-ForUMToDrain: every 15 s, up to 5 min); what is still up pauses the window."""
from __future__ import annotations

import pytest

from exchange_sim.model import SimulatedExchange
from runner.step_types import Phase, ServerInfo, StepFailed

from .harness import fully_active, start


@pytest.fixture
def ex16() -> SimulatedExchange:
    sim = SimulatedExchange()
    sim.add_standalone("EX16", version="2016")
    return sim


def um_router(state: str) -> tuple[str, ...]:
    return ("Set-ServerComponentState", "Identity=EX16", "Component=UMCallRouter", f"State={state}",
            "Requester=Maintenance")


def test_the_entry_waits_for_the_calls_in_progress_to_end_before_taking_the_server_offline(
        ex16: SimulatedExchange) -> None:
    assert len(ex16.servers["EX16"].um.active(ex16.clock.now())) == 2
    run = start(ex16, "EX16")
    assert run.phases(Phase.PRECHECK, Phase.ENTER) is None
    draining = run.index("Set-ServerComponentState", Component="UMCallRouter", State="Draining")[0]
    offline = run.index("Set-ServerComponentState", Component="ServerWideOffline", State="Inactive")[0]
    reads = run.index("Get-UMActiveCalls", Server="EX16")
    polls = [i for i in reads if draining < i < offline]
    # The wait's polls, then the final gate's check once ServerWideOffline is Inactive.
    assert reads == [*polls, reads[-1]] and reads[-1] > offline
    outcome = run.outcomes["enter.um_calls_drained"]
    assert outcome.status == "passed"
    # The calls ended on their own, polled every 15 s: the longest seeded call lasts 150 s.
    assert outcome.findings["polls"] == len(polls) > 1
    assert 0 < outcome.findings["waited_s"] <= 150
    assert ex16.servers["EX16"].um.active(ex16.clock.now()) == []


def test_a_call_that_stays_up_pauses_the_entry_after_five_minutes_with_the_call_in_the_findings(
        ex16: SimulatedExchange) -> None:
    ex16.inject("um-call-stuck", "EX16")
    run = start(ex16, "EX16")
    paused = run.phases(Phase.PRECHECK, Phase.ENTER)
    assert isinstance(paused, StepFailed)
    assert [k for k, v in run.outcomes.items() if isinstance(v, StepFailed)] == ["enter.um_calls_drained"]
    assert str(paused) == "1 UM call(s) still active after 300 s"
    [stuck] = paused.findings["calls"]
    assert (stuck["call_type"], stuck["call_state"]) == ("SubscriberAccess", "Connected")
    assert paused.findings["polls"] == 21  # 0, 15, ... 300 s
    assert run.mutating()[-1] == um_router("Draining")  # nothing after the Draining was sent


def test_after_a_skip_the_window_completes_records_the_cut_call_and_restores_umcallrouter(
        ex16: SimulatedExchange) -> None:
    ex16.inject("um-call-stuck", "EX16")
    run = start(ex16, "EX16")
    run.phases(Phase.PRECHECK, Phase.ENTER)
    # The operator skips the wait with a reason; the entry goes on from the next step.
    keys = [s.key for s in run.steps(Phase.ENTER)]
    for key in keys[keys.index("enter.um_calls_drained") + 1:]:
        run.step(key)
    assert "1 UM call(s) still active on entering maintenance" in run.issues()
    run.work_done()
    assert run.phases(Phase.WORK, Phase.EXIT, Phase.VERIFY) is None
    assert um_router("Active") in run.mutating()
    assert fully_active(run.components())


def test_a_retry_passes_once_the_last_call_has_ended(ex16: SimulatedExchange) -> None:
    ex16.inject("um-call-stuck", "EX16")
    run = start(ex16, "EX16")
    run.phases(Phase.PRECHECK, Phase.ENTER)
    ex16.servers["EX16"].um.calls.clear()  # the caller hung up
    outcome = run.step("enter.um_calls_drained")  # the operator's retry
    assert (outcome.status, outcome.summary) == ("skipped", "no active UM calls")
    assert run.phases(Phase.ENTER) is None


def test_a_2019_server_of_unknown_version_never_asks_for_um_calls() -> None:
    sim = SimulatedExchange()
    sim.add_standalone("EX01")
    run = start(sim, "EX01", server=ServerInfo("EX01", sim.servers["EX01"].fqdn, version=""))
    assert run.phases(Phase.PRECHECK, Phase.ENTER) is None
    assert run.outcomes["enter.um_calls_drained"].status == "skipped"
    assert run.reads("Get-UMActiveCalls") == []  # the cmdlet does not exist on 2019


def test_an_inventory_that_says_2019_for_a_um_server_is_reported_at_the_snapshot(ex16: SimulatedExchange) -> None:
    run = start(ex16, "EX16", server=ServerInfo("EX16", ex16.servers["EX16"].fqdn, version="Exchange Server 2019 CU14"))
    assert "enter.um_calls_drained" not in {s.key for s in run.plan.steps}
    [issue] = run.step("enter.snapshot").issues
    assert "UMCallRouter" in issue.summary and not issue.automatic
