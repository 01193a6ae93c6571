"""The plan registry, variant choice and the dry-run description."""
from __future__ import annotations

import pytest

from runner.plans import PLANS, build_plan, describe
from runner.step_types import Options, Phase, ServerInfo

STANDALONE = ServerInfo("EX01", "EX01.contoso.com")
DAG_MEMBER = ServerInfo("EX02", "EX02.contoso.com", "DAG1", (ServerInfo("EX03", "EX03.contoso.com", "DAG1"),))


def test_maintenance_is_a_known_plan() -> None:
    assert "maintenance" in PLANS


def test_a_server_outside_any_dag_gets_the_standalone_variant() -> None:
    plan = build_plan("maintenance", STANDALONE, Options())
    assert (plan.name, plan.variant) == ("maintenance", "standalone")
    assert not any("cluster" in s.key or "redirect" in s.key or "activation" in s.key for s in plan.steps)


def test_a_dag_member_gets_the_dag_member_variant() -> None:
    plan = build_plan("maintenance", DAG_MEMBER, Options())
    assert plan.variant == "dag-member"
    keys = [s.key for s in plan.steps]
    assert keys.index("enter.redirect_messages") < keys.index("enter.drain_queues") \
        < keys.index("enter.suspend_cluster_node") < keys.index("enter.activation_move_now") \
        < keys.index("enter.activation_blocked") < keys.index("enter.serverwideoffline_inactive")


def test_an_unknown_plan_name_is_refused_with_the_known_names() -> None:
    with pytest.raises(ValueError, match="maintenance"):
        build_plan("reboot", STANDALONE, Options())


@pytest.mark.parametrize("server", [STANDALONE, DAG_MEMBER], ids=["standalone", "dag-member"])
def test_steps_come_in_phase_order_with_unique_keys(server: ServerInfo) -> None:
    plan = build_plan("maintenance", server, Options())
    order = list(Phase)
    phases = [order.index(s.phase) for s in plan.steps]
    assert phases == sorted(phases)
    assert len({s.key for s in plan.steps}) == len(plan.steps)
    assert all(s.key.startswith(str(s.phase) + ".") for s in plan.steps)


@pytest.mark.parametrize("server", [STANDALONE, DAG_MEMBER], ids=["standalone", "dag-member"])
def test_prechecks_are_read_only_gates_and_verification_is_read_only(server: ServerInfo) -> None:
    plan = build_plan("maintenance", server, Options())
    assert all(s.gate and not s.mutating for s in plan.phase(Phase.PRECHECK))
    assert all(not s.mutating and not s.gate for s in plan.phase(Phase.VERIFY))


@pytest.mark.parametrize("server", [STANDALONE, DAG_MEMBER], ids=["standalone", "dag-member"])
def test_exit_steps_that_would_leave_the_server_in_maintenance_cannot_be_skipped(server: ServerInfo) -> None:
    plan = build_plan("maintenance", server, Options())
    skippable = {s.key for s in plan.phase(Phase.EXIT) if s.skippable}
    assert skippable == {"exit.restart_transport", "exit.start_pop_imap"}  # neither leaves it in maintenance
    assert all(s.idempotent for s in plan.phase(Phase.EXIT))


def test_describe_lists_each_step_for_a_dry_run() -> None:
    rows = describe(build_plan("maintenance", STANDALONE, Options()))
    assert rows[0] == {"key": "precheck.backups", "phase": "precheck", "title": rows[0]["title"], "mutating": False,
                       "idempotent": True, "skippable": True, "gate": True}
    assert [r["key"] for r in rows if r["phase"] == "work"] == ["work.hold"]


UM_STEPS = {"enter.umcallrouter_draining", "enter.um_calls_drained", "exit.umcallrouter_active"}


@pytest.mark.parametrize("version", ["2019", "Exchange Server 2019 CU14", "SE", "15.2.1544.4"])
def test_exchange_2019_and_se_have_no_unified_messaging_steps(version: str) -> None:
    plan = build_plan("maintenance", ServerInfo("EX01", "EX01.contoso.com", version=version), Options())
    assert not UM_STEPS & {s.key for s in plan.steps}


@pytest.mark.parametrize("version", ["2016", "Exchange Server 2016 CU23", "Exchange 2013 CU23", "15.1.2507.6", ""])
def test_um_builds_and_unknown_versions_drain_um_calls_after_the_transport_restart(version: str) -> None:
    plan = build_plan("maintenance", ServerInfo("EX01", "EX01.contoso.com", version=version), Options())
    keys = [s.key for s in plan.steps]
    assert UM_STEPS <= set(keys)
    assert keys.index("enter.restart_transport") < keys.index("enter.umcallrouter_draining") \
        < keys.index("enter.um_calls_drained") < keys.index("enter.drain_queues")
    wait = plan.step("enter.um_calls_drained")
    assert (wait.mutating, wait.skippable) == (False, True)  # the operator may accept cutting calls still up


def test_a_dag_member_checks_the_primary_active_manager_after_moving_its_databases() -> None:
    plan = build_plan("maintenance", DAG_MEMBER, Options())
    keys = [s.key for s in plan.steps]
    assert keys.index("enter.suspend_cluster_node") < keys.index("enter.databases_moved") \
        < keys.index("enter.pam_moved") < keys.index("enter.serverwideoffline_inactive")
    assert not plan.step("enter.pam_moved").mutating
    assert "enter.pam_moved" not in {s.key for s in build_plan("maintenance", STANDALONE, Options()).steps}
