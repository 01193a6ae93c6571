"""Entering maintenance: the snapshot, the component votes and the final gate.

Procedure: docs/exchange-procedure.md §1, §7.1, §7.4."""
from __future__ import annotations

from typing import Any

from runner.exchange.session import CmdletError
from runner.step_types import Issue, Poll, StepContext, StepFailed, StepOutcome

from .base import call, now_iso
from .components import (
    HUB_TRANSPORT,
    SERVER_WIDE_OFFLINE,
    STAY_ACTIVE,
    UM_CALL_ROUTER,
    enter_vote,
    holders,
    read_components,
    table,
)
from .dag import active_here, cluster_state, copies_on, read_dag, read_mailbox_server, replicated_databases, same_server
from .leave import pop_imap_status
from .transport import pending_queues

UM_DRAIN = Poll(interval=15, total_timeout=300)  # DSC Wait-ForUMToDrain: every 15 s for up to 5 min


def snapshot(ctx: StepContext) -> StepOutcome:
    """Record every component's votes (and, in a DAG, the activation settings and the cluster node) before acting.

    §7.1: snapshot first, then act; on exit restore only what changed. Taken once: a resumed or retried run keeps
    the first snapshot, which shows the server as it was before this run touched it.
    """
    if ctx.state.get("snapshot"):
        return StepOutcome("skipped", f"snapshot already taken at {ctx.state['snapshot']['taken_at']}")
    snap: dict[str, Any] = {"taken_at": now_iso(ctx), "components": table(read_components(ctx))}
    if ctx.server.dag_name:
        snap["mailbox_server"] = read_mailbox_server(ctx)
        snap["cluster_node"] = cluster_state(ctx)
    snap["pop_imap"] = pop_imap_status(ctx)  # they stop with their proxies; the exit starts again those that ran
    ctx.state["snapshot"] = snap
    findings = {k: v for k, v in snap.items() if k != "components"}
    findings["components"] = {name: c["state"] for name, c in snap["components"].items()}
    issues = []
    if ctx.server.unified_messaging is False and UM_CALL_ROUTER in snap["components"]:
        # The plan left out the UM steps on the inventory's word: calls in progress will be cut, not drained.
        issues.append(Issue(f"the inventory says {ctx.server.version!r}, but the server has a UMCallRouter component "
                            "(Exchange 2013/2016 with Unified Messaging)",
                            "UM calls are not drained by this plan; correct the inventory's version", automatic=False))
    return StepOutcome("passed", "snapshot of component votes"
                       + (" and activation settings" if ctx.server.dag_name else "") + " saved", issues=issues,
                       findings=findings)


def hubtransport_draining(ctx: StepContext) -> StepOutcome:
    """Set-ServerComponentState -Component HubTransport -State Draining -Requester Maintenance (§1 step 1)."""
    return enter_vote(ctx, HUB_TRANSPORT, "Draining", skip_when=frozenset({"Draining", "Inactive"}))


def umcallrouter_draining(ctx: StepContext) -> StepOutcome:
    """2013/2016 with Unified Messaging: UMCallRouter Draining (requester Maintenance) (§1 step 3).

    The plan has this step only when the inventory's version may have UM; the component exists only on builds with
    UM, so an unknown version that turns out to be 2019+ skips here.
    """
    if not _has_um(ctx):
        return StepOutcome("skipped", "no UMCallRouter component on this build")
    return enter_vote(ctx, UM_CALL_ROUTER, "Draining", skip_when=frozenset({"Draining", "Inactive"}))


def _has_um(ctx: StepContext) -> bool:
    """Whether the build has UMCallRouter: from the snapshot taken on entry, else read (a step run on its own)."""
    components = (ctx.state.get("snapshot") or {}).get("components")
    return UM_CALL_ROUTER in (components if components is not None else read_components(ctx))


def _um_calls(ctx: StepContext) -> list[dict[str, Any]]:
    rows = call(ctx, "Get-UMActiveCalls", {"Server": ctx.server.name}).output
    return [{"calling_number": c.get("CallingNumber"), "dialed_number": c.get("DialedNumber"),
             "call_type": c.get("CallType"), "call_state": c.get("CallState"), "dial_plan": c.get("DialPlan")}
            for c in rows]


def um_calls_drained(ctx: StepContext) -> StepOutcome:
    """Wait, bounded, until ``Get-UMActiveCalls -Server X`` returns nothing (§1 step 3, DSC Wait-ForUMToDrain).

    With UMCallRouter Draining no new call is routed here and the calls in progress end on their own; what is still
    up after 5 min pauses the window: the operator waits longer (retry) or accepts cutting those calls (skip).
    """
    if not _has_um(ctx):
        return StepOutcome("skipped", "no UMCallRouter component on this build (no Unified Messaging)")
    seen: dict[str, Any] = {"calls": []}

    def check() -> tuple[bool, Any, str]:
        seen["calls"] = _um_calls(ctx)
        return not seen["calls"], len(seen["calls"]), f"{len(seen['calls'])} active UM call(s)"

    result = ctx.poll(check, UM_DRAIN, what="UM calls")
    findings: dict[str, Any] = {"polls": result.polls, "waited_s": result.elapsed}
    if not result.done:
        raise StepFailed(f"{len(seen['calls'])} UM call(s) still active after {result.elapsed:.0f} s",
                         findings={**findings, "calls": seen["calls"]})
    if result.polls == 1:
        return StepOutcome("skipped", "no active UM calls", findings=findings)
    return StepOutcome("passed", f"UM calls ended after {result.elapsed:.0f} s", findings=findings)


def serverwideoffline_inactive(ctx: StepContext) -> StepOutcome:
    """Set-ServerComponentState -Component ServerWideOffline -State Inactive -Requester Maintenance (§1 step 5)."""
    outcome = enter_vote(ctx, SERVER_WIDE_OFFLINE, "Inactive")
    rows = read_components(ctx)
    if rows[SERVER_WIDE_OFFLINE].state != "Inactive":
        raise StepFailed("ServerWideOffline is not Inactive", findings={"components": table(rows)})
    return outcome


def _components_offline(rows: dict) -> tuple[list[str], list[Issue]]:
    """Microsoft's check after ServerWideOffline Inactive: only Monitoring and RecoveryActionsEnabled Active."""
    failures = [f"{name} is {row.state}" for name, row in rows.items()
                if name not in STAY_ACTIVE and row.state != "Inactive"]
    issues = [Issue(f"{name} is {rows[name].state} during maintenance (held by "
                    f"{', '.join(h['requester'] for h in holders(rows, name)) or 'nobody'})",
                    "noted; Managed Availability is reduced for the window", automatic=False)
              for name in sorted(STAY_ACTIVE) if name in rows and rows[name].state != "Active"]
    return failures, issues


def final_gate(ctx: StepContext) -> StepOutcome:
    """The maintenance-complete predicate (§1(b) step 7, DSC Test-TargetResource; §1(a) step 5 for standalone)."""
    rows = read_components(ctx)
    failures, issues = _components_offline(rows)
    findings: dict[str, Any] = {"components": {n: r.state for n, r in rows.items()}}
    try:
        queued = pending_queues(ctx)
    except (CmdletError, StepFailed) as exc:  # reported here, never gates: the drain step owned the queues
        queued, findings["queues_error"] = [], str(exc)
    if queued:
        # The drain step already paused on these and an operator chose to go on: record, do not pause twice.
        issues.append(Issue(f"{sum(q['message_count'] for q in queued)} message(s) still queued on entering "
                            "maintenance", "recorded; they resume after maintenance", automatic=False))
    findings["queues"] = queued
    if UM_CALL_ROUTER in rows:
        try:
            calls = _um_calls(ctx)
        except StepFailed as exc:  # reported here, never gates: the UM step owned the calls
            calls, findings["um_calls_error"] = [], str(exc)
        if calls:
            issues.append(Issue(f"{len(calls)} UM call(s) still active on entering maintenance",
                                "recorded; an operator went on past the UM drain", automatic=False))
        findings["um_calls"] = calls
    if ctx.server.dag_name:
        settings = read_mailbox_server(ctx)
        node = cluster_state(ctx)
        pam = read_dag(ctx)["primary_active_manager"]
        active = active_here(copies_on(ctx), replicated_databases(ctx))
        findings.update(activation=settings, cluster_node=node, primary_active_manager=pam, active_databases=active)
        if settings["policy"] != "Blocked":
            failures.append(f"DatabaseCopyAutoActivationPolicy is {settings['policy']}")
        if node == "Up":
            failures.append("cluster node is Up")
        if same_server(pam, ctx.server.name):
            failures.append("server is still the Primary Active Manager")
        if active:
            issues.append(Issue(f"{len(active)} replicated database(s) still active on the server",
                                "recorded; an operator went on past the database move", automatic=False))
    if failures:
        raise StepFailed("server is not fully in maintenance: " + "; ".join(failures), findings=findings)
    return StepOutcome("passed", "server is in maintenance", issues=issues, findings=findings)
