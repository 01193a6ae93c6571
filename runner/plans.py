"""The maintenance plans as data: ordered steps in phases, each with its guard and verification. The exit phase
undoes the entry, step by step (check-then-set), and is also what an operator's abort runs.

``build_plan("maintenance", server, options)`` picks the variant from the inventory: ``standalone`` when the server
is in no DAG, else ``dag-member``; the Unified Messaging steps are left out when the inventory's version is 2019 or
SE (UM was removed; when the version does not say, the steps look for the UMCallRouter component at run time).
The order follows the reference (``docs/exchange-procedure.md``): §1(a)/§1(b) to enter, §2(a)/§2(b) to exit, §2.1 to
verify, §3 for the gating pre-checks. Every step function lives in ``runner.steps`` and is check-then-set, so the
exit phase doubles as the abort path from any point of the entry.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from runner.step_types import DEFAULT_STEP_TIMEOUT, Options, Phase, Plan, ServerInfo, Step
from runner.steps import dag, enter, install, leave, prechecks, reboot, transport, verify, work

STANDALONE = "standalone"
DAG_MEMBER = "dag-member"

P, E, W, X, V = Phase.PRECHECK, Phase.ENTER, Phase.WORK, Phase.EXIT, Phase.VERIFY
# Two service restarts, then up to 5 min for Get-Queue (and on the way out 5 min more for the Submission queue).
RESTART_TIMEOUT = 900.0


def _check(key: str, title: str, run: Callable, *, gate: bool = True) -> Step:
    """A read-only step: never sends a mutating command, so it is idempotent and may run in a dry run."""
    phase = P if key.startswith("precheck.") else V
    return Step(key, phase, title, run, idempotent=True, skippable=True, mutating=False, gate=gate)


def _prechecks(dag_member: bool) -> list[Step]:
    steps = [
        _check("precheck.backups", "Backups are recent and none is in progress", prechecks.backups),
        _check("precheck.server_state", "The server is fully Active (other requesters' votes reported)",
               prechecks.server_state),
        _check("precheck.transport_and_services", "Required services run and the queues answer",
               prechecks.transport_and_services),
    ]
    if dag_member:
        steps += [
            _check("precheck.dag_members", "No other DAG member is in maintenance", prechecks.dag_members),
            _check("precheck.redundancy", "Every database keeps a healthy copy on another server",
                   prechecks.redundancy),
        ]
    return steps


def _enter(dag_member: bool, um: bool, options: Options) -> list[Step]:
    steps = [
        # Read-only, but the exit depends on it: an operator may not skip it.
        Step("enter.snapshot", E, "Save component votes" + (" and activation settings" if dag_member else ""),
             enter.snapshot, mutating=False, skippable=False),
        Step("enter.hubtransport_draining", E, "Set HubTransport to Draining (requester Maintenance)",
             enter.hubtransport_draining, skippable=False),
        # Restarting twice is harmless, so a crash mid-step may replay it; skippable: the operator can restart
        # transport by hand (it then picks up Draining).
        Step("enter.restart_transport", E, "Restart MSExchangeTransport and MSExchangeFrontEndTransport; wait "
             "for Get-Queue", transport.restart_transport_enter, timeout=RESTART_TIMEOUT),
    ]
    if um:
        steps += [
            Step("enter.umcallrouter_draining", E, "Set UMCallRouter to Draining (2013/2016 with UM only)",
                 enter.umcallrouter_draining),
            # Skippable: the operator may accept cutting the calls still up after the bounded wait.
            Step("enter.um_calls_drained", E, "Wait for the active UM calls to end (Get-UMActiveCalls)",
                 enter.um_calls_drained, mutating=False),
        ]
    if dag_member:
        steps.append(Step("enter.redirect_messages", E, "Redirect queued messages to a healthy peer",
                          transport.redirect_messages))
    steps.append(Step("enter.drain_queues", E, "Wait for the local queues to drain", transport.drain_queues,
                      mutating=False, timeout=max(DEFAULT_STEP_TIMEOUT, options.queue_drain.total_timeout + 120)))
    if dag_member:
        steps += [
            Step("enter.suspend_cluster_node", E, "Pause the cluster node", dag.suspend_cluster_node),
            Step("enter.activation_move_now", E, "Set DatabaseCopyActivationDisabledAndMoveNow $true",
                 dag.activation_disabled_and_move_now, skippable=False),
            Step("enter.activation_blocked", E, "Set DatabaseCopyAutoActivationPolicy Blocked",
                 dag.activation_policy_blocked, skippable=False),
            # Skippable: the operator may accept the outage of a database that will not move (§5.4).
            Step("enter.databases_moved", E, "No replicated database stays active on the server",
                 dag.databases_moved),
            Step("enter.pam_moved", E, "The Primary Active Manager role left the server",
                 dag.primary_active_manager_moved, mutating=False),
        ]
    steps += [
        Step("enter.serverwideoffline_inactive", E, "Set ServerWideOffline Inactive (requester Maintenance)",
             enter.serverwideoffline_inactive, skippable=False),
        Step("enter.final_gate", E, "Only Monitoring and RecoveryActionsEnabled stay Active"
             + ("; activation Blocked; node paused" if dag_member else ""), enter.final_gate, mutating=False),
    ]
    return steps


def _exit(dag_member: bool, um: bool) -> list[Step]:
    # Not skippable where skipping would leave the server (or part of it) in maintenance.
    steps = [Step("exit.serverwideoffline_active", X, "Set ServerWideOffline Active (requester Maintenance)",
                  leave.serverwideoffline_active, skippable=False)]
    if um:
        steps.append(Step("exit.umcallrouter_active", X, "Set UMCallRouter Active (2013/2016 with UM only)",
                          leave.umcallrouter_active, skippable=False))
    if dag_member:
        steps += [
            Step("exit.resume_cluster_node", X, "Resume the cluster node", dag.resume_cluster_node, skippable=False),
            Step("exit.restore_move_now", X, "Restore DatabaseCopyActivationDisabledAndMoveNow",
                 dag.restore_move_now, skippable=False),
            Step("exit.restore_activation_policy", X, "Restore the saved DatabaseCopyAutoActivationPolicy",
                 dag.restore_activation_policy, skippable=False),
        ]
    steps += [
        Step("exit.hubtransport_active", X, "Set HubTransport Active (requester Maintenance)",
             leave.hubtransport_active, skippable=False),
        Step("exit.release_votes", X, "Clear this run's remaining votes; report other requesters' votes",
             leave.release_votes, skippable=False),
        Step("exit.restart_transport", X, "Restart transport; Submission queue not Suspended",
             transport.restart_transport_exit, timeout=RESTART_TIMEOUT),
        Step("exit.start_pop_imap", X, "Start POP3/IMAP4 again if they ran before the window",
             leave.start_pop_imap),
    ]
    return steps


def _verify(dag_member: bool) -> list[Step]:
    steps = [
        _check("verify.components", "All components Active (except those Inactive by design)", verify.components,
               gate=False),
        _check("verify.services", "Test-ServiceHealth is clean", verify.services, gate=False),
        _check("verify.copies", "Database copies Healthy or Mounted with low queues", verify.copies, gate=False),
    ]
    if dag_member:
        steps += [
            _check("verify.replication", "Test-ReplicationHealth all Passed", verify.replication, gate=False),
            _check("verify.cluster_and_activation", "Cluster node Up; activation settings restored",
                   verify.cluster_and_activation, gate=False),
        ]
    steps.append(_check("verify.queues", "Submission queue not Suspended; no queue Suspended, or stuck or growing in "
                        "Retry", verify.queues, gate=False))
    return steps


def _install_prechecks(options: Options) -> list[Step]:
    if options.work.get("kind") != "exchange-update":
        return []
    return [
        _check("precheck.install_target", "Role, edition and build read from the server (Edge refused; already at "
               "target skips the install); the package is there and newer; AD prepared for a CU", install.target),
        _check("precheck.install_ready", "No restart pending, no setup running or watermark left; free disk on the "
               "system and queue drives", install.ready),
        _check("precheck.install_moves", "No mailbox move running or queued to or from the server's databases",
               install.moves),
        _check("precheck.install_auth_certificate", "The Exchange Auth certificate is valid (expiring within "
               f"{install.AUTH_CERT_WARN_DAYS} days: a warning)", install.auth_certificate),
        _check("precheck.install_back_pressure", "Transport is not under back pressure (every resource Low)",
               install.back_pressure),
    ]


def _work(options: Options) -> list[Step]:
    """The work phase the change asks for (changes.work): the operator's hold, a restart, or an Exchange update."""
    kind = options.work.get("kind", "hold")
    wait = ("Wait until WinRM, the Exchange services and the Exchange endpoint answer (up to "
            f"{options.work.get('reboot_minutes', 30)} min)")
    if kind == "reboot":
        return [Step("work.restart", W, "Restart the server (Restart-Computer -Force)", reboot.restart),
                Step("work.wait_healthy", W, wait, reboot.wait_healthy, mutating=False)]
    if kind == "exchange-update":
        package = options.work["package"]
        label = "Cumulative Update" if package["kind"] == "cu" else "Security Update"
        return [
            Step("work.install_copy", W, "Copy the package to the server's local disk", install.copy_package),
            # Idempotent by its markers: a resumed worker finds the task started and does not start it again.
            Step("work.install_start", W, f"Start the {label} installer as a one-shot scheduled task (highest "
                 "privileges, install account); this run's Exchange sessions closed first", install.start,
                 skippable=False),
            Step("work.install_wait", W, f"Wait for setup (budget {options.work.get('install_minutes')} min): task, "
                 "process, setup log", install.wait, mutating=False, skippable=False),
            Step("work.install_restart", W, "Restart the server (CU: always; SU: " + str(options.work.get("reboot"))
                 + ")", install.restart),
            Step("work.install_wait_healthy", W, wait, reboot.wait_healthy, mutating=False),
            Step("work.install_verify", W, f"Prove build {options.work.get('target_build')}: ExSetup.exe, no "
                 "watermark, ConfiguredVersion", install.verify, mutating=False, skippable=False),
            Step("work.install_after", W, "Services setup left Disabled; component votes left by Functional",
                 install.after),
        ]
    return [Step("work.hold", W, "Wait for the operator's work-done report (until the window end)", work.hold,
                 mutating=False)]


def _maintenance(server: ServerInfo, options: Options) -> Plan:
    """Microsoft's maintenance procedure for one Mailbox server (options are read by the steps at run time)."""
    dag_member = server.dag_name is not None
    um = server.unified_messaging is not False
    steps = [
        *_prechecks(dag_member),
        *_install_prechecks(options),
        *_enter(dag_member, um, options),
        *_work(options),
        *_exit(dag_member, um),
        *_verify(dag_member),
    ]
    return Plan("maintenance", DAG_MEMBER if dag_member else STANDALONE, tuple(steps))


PLANS: dict[str, Callable[[ServerInfo, Options], Plan]] = {"maintenance": _maintenance}


def build_plan(name: str, server: ServerInfo, options: Options) -> Plan:
    """The plan ``name`` for ``server``. Raises ValueError for an unknown name, listing the known plans."""
    try:
        builder = PLANS[name]
    except KeyError:
        raise ValueError(f"unknown plan {name!r}; known plans: {', '.join(sorted(PLANS))}") from None
    return builder(server, options)


def describe(plan: Plan) -> list[dict[str, Any]]:
    """The plan as rows for a dry run or the API: what would run, in order, and how each step may be handled."""
    return [{"key": s.key, "phase": str(s.phase), "title": s.title, "mutating": s.mutating,
             "idempotent": s.idempotent, "skippable": s.skippable, "gate": s.gate}
            for s in plan.steps]
