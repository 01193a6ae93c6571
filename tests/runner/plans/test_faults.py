"""Each simulator fault → the pause, automatic resolution or refusal the plans promise."""
from __future__ import annotations

import pytest

from exchange_sim.model import SimulatedExchange
from runner.step_types import Options, Phase, StepFailed

from .harness import Run, fully_active, start


@pytest.fixture
def standalone() -> SimulatedExchange:
    sim = SimulatedExchange()
    sim.add_standalone("EX01")
    return sim


@pytest.fixture
def dag() -> SimulatedExchange:
    sim = SimulatedExchange()
    sim.add_dag("DAG1", ["EX02", "EX03", "EX04"])
    return sim


def failure(run: Run, *phases: Phase) -> StepFailed:
    result = run.phases(*phases)
    assert isinstance(result, StepFailed), run.outcomes
    return result


def failed_key(run: Run) -> str:
    return next(k for k, v in run.outcomes.items() if isinstance(v, StepFailed))


# --- the backup gate -----------------------------------------------------------------------------------------------


def test_a_stale_backup_refuses_the_window(standalone: SimulatedExchange) -> None:
    standalone.inject("backup-stale", "EX01")
    run = start(standalone, "EX01")
    refused = failure(run, Phase.PRECHECK)
    assert failed_key(run) == "precheck.backups"
    assert run.plan.step("precheck.backups").gate
    [row] = refused.findings["databases"]
    assert row["age_hours"] == pytest.approx(9 * 24, abs=1)
    assert "policy 24 h" in str(refused)


def test_a_backup_within_a_longer_policy_passes(standalone: SimulatedExchange) -> None:
    standalone.inject("backup-stale", "EX01", days=2)
    run = start(standalone, "EX01", Options(backup_max_age_hours=72))
    assert run.step("precheck.backups").status == "passed"


def test_a_backup_in_progress_refuses_the_window(standalone: SimulatedExchange) -> None:
    standalone.inject("backup-in-progress", "EX01")
    run = start(standalone, "EX01")
    refused = failure(run, Phase.PRECHECK)
    assert "backup in progress" in str(refused)
    assert refused.findings["databases"][0]["backup_in_progress"] is True


# --- server state --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["standalone", "dag"])
def test_a_server_already_in_maintenance_is_refused(variant: str, request: pytest.FixtureRequest) -> None:
    sim = request.getfixturevalue(variant)
    name = "EX01" if variant == "standalone" else "EX02"
    sim.inject("already-in-maintenance", name)
    run = start(sim, name)
    refused = failure(run, Phase.PRECHECK)
    assert failed_key(run) == "precheck.server_state"
    assert "already in maintenance" in str(refused)
    assert run.mutating() == []


def test_another_dag_member_in_maintenance_refuses_the_window(dag: SimulatedExchange) -> None:
    dag.inject("already-in-maintenance", "EX03")
    run = start(dag, "EX02")
    refused = failure(run, Phase.PRECHECK)
    assert failed_key(run) == "precheck.dag_members"
    assert "EX03" in str(refused)


# --- DAG redundancy ------------------------------------------------------------------------------------------------


def test_unhealthy_copies_on_the_peers_refuse_the_window_for_lack_of_redundancy(dag: SimulatedExchange) -> None:
    dag.inject("copy-unhealthy", "EX03")
    dag.inject("copy-unhealthy", "EX04")
    run = start(dag, "EX02")
    refused = failure(run, Phase.PRECHECK)
    assert failed_key(run) == "precheck.redundancy"
    assert str(refused).startswith("redundancy")
    bad = {row["database"] for row in refused.findings["databases"] if not row["ok"]}
    assert bad == {db.name for db in dag.databases.values() if db.active == "EX02"}
    copy = refused.findings["databases"][0]["other_copies"][0]
    assert set(copy) >= {"server", "status", "copy_queue", "replay_queue", "usable", "reason"}


def test_one_unhealthy_peer_leaves_enough_redundancy(dag: SimulatedExchange) -> None:
    dag.inject("copy-unhealthy", "EX03")
    run = start(dag, "EX02")
    assert run.step("precheck.redundancy").status == "passed"


def test_a_single_copy_database_refuses_the_window(dag: SimulatedExchange) -> None:
    db = next(d for d in dag.databases.values() if d.active == "EX02")
    for other in ("EX03", "EX04"):
        del db.copies[other]
    run = start(dag, "EX02")
    with pytest.raises(StepFailed, match="single copy"):
        run.step("precheck.redundancy")


# --- queues --------------------------------------------------------------------------------------------------------


def test_a_stuck_queue_pauses_the_drain_with_the_queues_in_the_findings(standalone: SimulatedExchange) -> None:
    standalone.inject("queue-stuck", "EX01")
    run = start(standalone, "EX01")
    stuck = failure(run, Phase.PRECHECK, Phase.ENTER)
    assert failed_key(run) == "enter.drain_queues"
    [queue] = stuck.findings["queues"]
    assert (queue["next_hop"], queue["status"], queue["message_count"]) == ("fabrikam.com", "Retry", 3)
    assert queue["last_error"].startswith("451 4.4.0")
    assert run.plan.step("enter.drain_queues").skippable


def test_after_a_skipped_stuck_queue_the_window_completes_and_reports_it(standalone: SimulatedExchange) -> None:
    standalone.inject("queue-stuck", "EX01")
    run = start(standalone, "EX01")
    failure(run, Phase.PRECHECK, Phase.ENTER)
    # The operator skips the drain with a reason; the rest of the entry and the exit run.
    for key in ("enter.serverwideoffline_inactive", "enter.final_gate"):
        run.step(key)
    assert any("still queued" in i for i in run.issues())
    run.work_done()
    assert run.phases(Phase.WORK, Phase.EXIT, Phase.VERIFY) is None
    assert fully_active(run.components())


def test_a_slow_queue_that_drains_becomes_an_automatic_issue(standalone: SimulatedExchange) -> None:
    standalone.inject("queue-slow", "EX01", polls=4)
    run = start(standalone, "EX01")
    assert run.phases(Phase.PRECHECK, Phase.ENTER) is None
    [issue] = run.outcomes["enter.drain_queues"].issues
    assert issue.automatic
    assert "no progress" in issue.summary


def test_poison_messages_are_ignored_by_the_drain_and_reported_by_the_precheck(standalone: SimulatedExchange) -> None:
    standalone.inject("poison-message", "EX01", messages=2)
    run = start(standalone, "EX01")
    assert run.phases(Phase.PRECHECK, Phase.ENTER) is None
    assert any("poison queue" in i for i in run.issues())
    assert len(standalone.servers["EX01"].transport.queues["Poison"].messages) == 2


# --- transport restart ---------------------------------------------------------------------------------------------


def test_a_failed_transport_restart_pauses_and_passes_on_retry(standalone: SimulatedExchange) -> None:
    standalone.inject("transport-restart-fails", "EX01")
    run = start(standalone, "EX01")
    failed = failure(run, Phase.PRECHECK, Phase.ENTER)
    assert failed_key(run) == "enter.restart_transport"
    assert failed.findings["status"] == "Stopped"
    assert run.step("enter.restart_transport").status == "passed"  # the operator's retry
    assert run.phases(Phase.ENTER) is None


def test_a_transport_restart_failure_is_also_retried_in_the_exit(standalone: SimulatedExchange) -> None:
    run = start(standalone, "EX01")
    assert run.phases(Phase.PRECHECK, Phase.ENTER) is None
    run.work_done()
    standalone.inject("transport-restart-fails", "EX01")
    failure(run, Phase.WORK, Phase.EXIT)
    assert failed_key(run) == "exit.restart_transport"
    assert run.step("exit.restart_transport").status == "passed"
    assert run.phases(Phase.VERIFY) is None


def test_a_suspended_submission_queue_is_resumed_on_exit(standalone: SimulatedExchange) -> None:
    run = start(standalone, "EX01")
    assert run.phases(Phase.PRECHECK, Phase.ENTER) is None
    run.work_done()
    assert run.phases(Phase.WORK, Phase.EXIT, until="exit.release_votes") is None
    # Transport comes back with Submission suspended (§5.2): the restart step resumes it.
    standalone.servers["EX01"].transport.queues["Submission"].status = "Suspended"
    mark = run.mark()
    outcome = run.step("exit.restart_transport")
    assert run.mutating(mark)[-1] == ("Resume-Queue", "Identity=EX01\\Submission")
    assert any("Suspended" in i.summary and i.automatic for i in outcome.issues)
    assert run.step("verify.queues").status == "passed"


# --- databases and the cluster -------------------------------------------------------------------------------------


def test_a_database_that_will_not_move_pauses_the_entry(dag: SimulatedExchange) -> None:
    dag.inject("db-move-refused", "EX02")
    run = start(dag, "EX02")
    refused = failure(run, Phase.PRECHECK, Phase.ENTER)
    assert failed_key(run) == "enter.databases_moved"
    assert {d["database"] for d in refused.findings["databases"]} == \
        {db.name for db in dag.databases.values() if db.active == "EX02"}
    assert "AmDbMoveMoveSuppressedBlackoutException" in " ".join(refused.findings["errors"])
    moves = [c for c in run.mutating() if c[0] == "Move-ActiveMailboxDatabase"]
    assert moves == [("Move-ActiveMailboxDatabase", "Server=EX02", "MoveComment=Maintenance")] * 2


def test_a_database_refused_once_moves_on_the_explicit_move(dag: SimulatedExchange) -> None:
    dag.inject("db-move-refused", "EX02", times=1)
    run = start(dag, "EX02")
    assert run.phases(Phase.PRECHECK, Phase.ENTER) is None
    [issue] = run.outcomes["enter.databases_moved"].issues
    assert issue.automatic and "Move-ActiveMailboxDatabase" in issue.resolution


def test_a_cluster_node_that_will_not_resume_pauses_the_exit_and_passes_on_retry(dag: SimulatedExchange) -> None:
    run = start(dag, "EX02")
    assert run.phases(Phase.PRECHECK, Phase.ENTER) is None
    run.work_done()
    dag.inject("cluster-resume-fails", "EX02")
    failed = failure(run, Phase.WORK, Phase.EXIT)
    assert failed_key(run) == "exit.resume_cluster_node"
    assert failed.findings["state"] == "Paused"
    assert run.step("exit.resume_cluster_node").status == "passed"
    assert run.phases(Phase.EXIT, Phase.VERIFY) is None
    assert dag.servers["EX02"].cluster_state == "Up"
