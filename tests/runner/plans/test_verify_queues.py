"""After the exit, mail must flow (§2 step 5, §2.1 "Queues", §5.1, §5.2): the Submission queue not Suspended, no
queue Suspended, none growing in Retry, none to an internal hop stuck in Retry; an external hop in Retry that holds
still and a non-empty poison queue are reported. Each case is set up after the exit, as the work would leave it."""
from __future__ import annotations

import pytest

from exchange_sim.model import SimulatedExchange
from runner.step_types import Phase, StepFailed

from .harness import Run, start


@pytest.fixture
def standalone() -> SimulatedExchange:
    sim = SimulatedExchange()
    sim.add_standalone("EX01")
    return sim


def exited(sim: SimulatedExchange, name: str = "EX01") -> Run:
    """A window through its exit, every step passed; the verification is left to the test."""
    run = start(sim, name)
    assert run.phases(Phase.PRECHECK, Phase.ENTER) is None
    run.work_done()
    assert run.phases(Phase.WORK, Phase.EXIT) is None
    return run


def test_flowing_queues_pass_on_the_first_look_with_one_get_queue(standalone: SimulatedExchange) -> None:
    run = exited(standalone)
    mark = run.mark()
    outcome = run.step("verify.queues")
    assert (outcome.status, outcome.issues, outcome.findings["polls"]) == ("passed", [], 1)
    assert [(r.cmdlet, r.get("Server")) for r in standalone.commands[mark:]] == [("Get-Queue", "EX01")]


def test_a_queue_growing_in_retry_fails_the_verification(standalone: SimulatedExchange) -> None:
    run = exited(standalone)
    standalone.inject("queue-retry", "EX01")  # fabrikam.com refuses; one new message every 10 s
    with pytest.raises(StepFailed) as failed:
        run.step("verify.queues")
    message = str(failed.value)
    assert message.startswith("queues not flowing after 300 s: EX01\\")
    assert "to fabrikam.com: in Retry and growing (0 -> 30 messages in 300 s)" in message
    [queue] = [q for q in failed.value.findings["queues"] if q["next_hop"] == "fabrikam.com"]
    assert (queue["status"], queue["first_count"], queue["message_count"]) == ("Retry", 0, 30)
    assert queue["last_error"].startswith("451 4.4.0")
    assert run.plan.step("verify.queues").skippable  # the operator decides: retry after a fix, or skip with a reason


def test_a_local_delivery_queue_stuck_in_retry_fails_even_without_growing(standalone: SimulatedExchange) -> None:
    run = exited(standalone)
    standalone.inject("queue-retry", "EX01", queue="db01", every=0)
    with pytest.raises(StepFailed, match=r"to db01: in Retry on an internal hop$"):
        run.step("verify.queues")


def test_an_external_queue_in_retry_that_holds_still_is_watched_a_minute_and_reported(
        standalone: SimulatedExchange) -> None:
    run = exited(standalone)
    standalone.inject("queue-retry", "EX01", every=0, messages=3)
    outcome = run.step("verify.queues")
    assert outcome.status == "passed"
    assert outcome.findings["watched_s"] >= 60
    [issue] = outcome.issues
    assert issue.summary.startswith("queue EX01\\") and "to fabrikam.com is in Retry with 3 message(s)" in issue.summary
    assert "not growing over 60 s" in issue.summary and not issue.automatic


def test_a_suspended_submission_queue_fails_the_verification(standalone: SimulatedExchange) -> None:
    run = exited(standalone)
    standalone.inject("queue-suspended", "EX01")
    with pytest.raises(StepFailed, match=r"EX01\\Submission to .*: Suspended$"):
        run.step("verify.queues")


def test_the_poison_queue_is_reported_not_failed(standalone: SimulatedExchange) -> None:
    run = exited(standalone)
    standalone.inject("poison-message", "EX01", messages=2)
    outcome = run.step("verify.queues")
    assert outcome.status == "passed"
    assert [i.summary for i in outcome.issues] == ["2 message(s) in the poison queue EX01\\Poison"]


def test_a_problem_that_clears_while_watched_passes_with_an_automatic_issue(standalone: SimulatedExchange) -> None:
    run = exited(standalone)
    standalone.inject("queue-retry", "EX01", queue="db01", every=0)
    queue = next(q for q in standalone.servers["EX01"].transport.queues.values() if q.next_hop == "db01")
    sleep = run.ctx.clock.sleep

    def store_comes_back(seconds: float) -> None:  # the mailbox database answers again after the first poll
        sleep(seconds)
        queue.status, queue.stuck = "Ready", False

    run.ctx.clock.sleep = store_comes_back  # type: ignore[method-assign]
    outcome = run.step("verify.queues")
    assert (outcome.status, outcome.findings["polls"]) == ("passed", 2)
    [issue] = outcome.issues
    assert issue.automatic and issue.summary.endswith("to db01 was in Retry on an internal hop")
    assert issue.resolution == "flowing again after 15 s"


def test_shadow_redundancy_queues_of_a_dag_member_are_not_judged() -> None:
    sim = SimulatedExchange()
    sim.add_dag("DAG1", ["EX02", "EX03"])
    run = exited(sim, "EX02")
    shadow = next(q for q in sim.servers["EX02"].transport.queues.values() if q.delivery_type == "ShadowRedundancy")
    shadow.status = "Retry"  # it holds EX03's messages; EX02's own mail flows
    assert run.step("verify.queues").issues == []
