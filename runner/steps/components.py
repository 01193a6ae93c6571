"""Server component states: reading the votes, snapshotting them, setting and clearing this run's votes.

Facts this module relies on (docs/exchange-procedure.md §0.1, §0.2, §5.3):
- each requester's vote is stored separately (registry = LocalStates, AD = RemoteStates); Inactive wins;
- a vote can only be cleared by the requester that set it (KB2958835), so this run only ever clears ``Maintenance``
  votes it recorded in ``ctx.state["votes_set"]`` (plus setup's ``Functional`` leftovers when the operator opted in);
- ServerWideOffline Inactive takes every component down except Monitoring and RecoveryActionsEnabled;
- ForwardSyncDaemon and ProvisioningRps are Inactive by design on-premises and are never expected Active.
"""
from __future__ import annotations

from typing import Any

from runner.exchange.parsing import ComponentState, component_states
from runner.step_types import Issue, StepContext, StepFailed, StepOutcome

from .base import call, iso, now_iso, state_list

MAINTENANCE = "Maintenance"
FUNCTIONAL = "Functional"
SERVER_WIDE_OFFLINE = "ServerWideOffline"
HUB_TRANSPORT = "HubTransport"
UM_CALL_ROUTER = "UMCallRouter"
INACTIVE_BY_DESIGN = frozenset({"ForwardSyncDaemon", "ProvisioningRps"})
STAY_ACTIVE = frozenset({"Monitoring", "RecoveryActionsEnabled"})
# What a failed or aborted CU leaves behind with requester Functional (MS-DAG, TIMMCMIC).
SETUP_COMPONENTS = ("ServerWideOffline", "Monitoring", "RecoveryActionsEnabled")
VOTES_SET = "votes_set"  # ctx.state: [[component, requester], ...] this run set non-Active


def read_components(ctx: StepContext, identity: str | None = None, component: str | None = None) \
        -> dict[str, ComponentState]:
    """Get-ServerComponentState for the target (or ``identity``), keyed by component name."""
    params: dict[str, Any] = {"Identity": identity or ctx.server.name}
    if component:
        params["Component"] = component
    result = call(ctx, "Get-ServerComponentState", params)
    return {row.component: row for row in component_states(result.output)}


def read_component(ctx: StepContext, component: str, identity: str | None = None) -> ComponentState:
    rows = read_components(ctx, identity, component)
    if component not in rows:
        raise StepFailed(f"Get-ServerComponentState returned no {component} row",
                         findings={"component": component, "server": identity or ctx.server.name})
    return rows[component]


def votes(row: ComponentState) -> dict[str, str]:
    """Per requester, its newest vote across LocalStates and RemoteStates (what HealthChecker compares)."""
    newest: dict[str, tuple[Any, str]] = {}
    for vote in (*row.local_states, *row.remote_states):
        stamp = vote.timestamp.timestamp() if vote.timestamp else 0.0
        if vote.requester not in newest or stamp >= newest[vote.requester][0]:
            newest[vote.requester] = (stamp, vote.state)
    return {requester: state for requester, (_, state) in newest.items()}


def non_active_votes(row: ComponentState) -> dict[str, str]:
    return {r: s for r, s in votes(row).items() if s != "Active"}


def expected_inactive(component: str) -> bool:
    return component in INACTIVE_BY_DESIGN


def holders(rows: dict[str, ComponentState], component: str) -> list[dict[str, str]]:
    """Who keeps ``component`` from being Active: its own non-Active votes, then ServerWideOffline's (§5.3)."""
    found = [{"component": component, "requester": r, "state": s}
             for r, s in non_active_votes(rows[component]).items()]
    swo = rows.get(SERVER_WIDE_OFFLINE)
    if component not in (SERVER_WIDE_OFFLINE, *STAY_ACTIVE) and swo is not None and swo.state != "Active":
        found += [{"component": SERVER_WIDE_OFFLINE, "requester": r, "state": s}
                  for r, s in non_active_votes(swo).items()]
    return found


def not_active(rows: dict[str, ComponentState]) -> list[str]:
    """Components that should be Active and are not."""
    return [name for name, row in rows.items() if row.state != "Active" and not expected_inactive(name)]


def table(rows: dict[str, ComponentState]) -> dict[str, dict[str, Any]]:
    """Component states and votes as JSON for ``ctx.state`` and the report (timestamps as ISO strings)."""
    def listing(states: Any) -> list[dict[str, Any]]:
        return [{"requester": v.requester, "state": v.state, "timestamp": iso(v.timestamp)} for v in states]

    return {name: {"state": row.state, "votes": votes(row), "local": listing(row.local_states),
                   "remote": listing(row.remote_states)} for name, row in rows.items()}


def classify(rows: dict[str, ComponentState]) -> dict[str, list[dict[str, str]]]:
    """Sort every non-Active vote: ours (Maintenance), setup leftovers (Functional on §0.2's three), others."""
    out: dict[str, list[dict[str, str]]] = {"maintenance": [], "setup_leftover": [], "other": []}
    for name, row in rows.items():
        for requester, state in non_active_votes(row).items():
            vote = {"component": name, "requester": requester, "state": state}
            if requester == MAINTENANCE:
                out["maintenance"].append(vote)
            elif requester == FUNCTIONAL and name in SETUP_COMPONENTS:
                out["setup_leftover"].append(vote)
            else:
                out["other"].append(vote)
    return out


def foreign_vote_issues(votes_: list[dict[str, str]], resolution: str) -> list[Issue]:
    return [Issue(f"{v['component']} is held {v['state']} by requester {v['requester']} (held-by-other-requester)",
                  resolution, automatic=False) for v in votes_]


# --- this run's votes --------------------------------------------------------------------------------------------


def snapshot_vote(ctx: StepContext, component: str, requester: str = MAINTENANCE) -> str | None:
    snap = ctx.state.get("snapshot") or {}
    return ((snap.get("components") or {}).get(component) or {}).get("votes", {}).get(requester)


def votes_set(ctx: StepContext) -> list[list[str]]:
    return state_list(ctx, VOTES_SET)


def remember_vote(ctx: StepContext, component: str, requester: str = MAINTENANCE) -> None:
    entry = [component, requester]
    if entry not in votes_set(ctx):
        votes_set(ctx).append(entry)


def set_by_run(ctx: StepContext, component: str, requester: str = MAINTENANCE) -> bool:
    return [component, requester] in votes_set(ctx)


def _set_vote(ctx: StepContext, component: str, state: str, requester: str) -> None:
    call(ctx, "Set-ServerComponentState",
         {"Identity": ctx.server.name, "Component": component, "State": state, "Requester": requester})


def enter_vote(ctx: StepContext, component: str, state: str, *, skip_when: frozenset[str] = frozenset()) \
        -> StepOutcome:
    """Cast this run's ``Maintenance`` vote ``state`` on ``component`` unless the server is already there.

    Skips when our vote already says ``state`` or the effective state is in ``skip_when`` (DSC does not set
    Draining when HubTransport is already Inactive, §7.2). A vote found in place that the pre-run snapshot did not
    show is this run's own (a crash after the Set, before the state was saved): it is claimed so the exit clears it.
    """
    row = read_component(ctx, component)
    mine = votes(row).get(MAINTENANCE)
    if mine == state or row.state in skip_when:
        claimed = mine not in (None, "Active") and snapshot_vote(ctx, component) in (None, "Active")
        if claimed:
            remember_vote(ctx, component)
        return StepOutcome("skipped", f"{component} is already {row.state}"
                           + (" (by this run's earlier attempt)" if claimed else ""),
                           findings={"component": component, "state": row.state, "votes": votes(row)})
    remember_vote(ctx, component)  # before sending: a crash after the Set must still leave it ours to clear
    _set_vote(ctx, component, state, MAINTENANCE)
    after = read_component(ctx, component)
    if votes(after).get(MAINTENANCE) != state:
        raise StepFailed(f"{component} vote did not change to {state}",
                         findings={"component": component, "state": after.state, "votes": votes(after)})
    return StepOutcome("passed", f"{component} set {state} (requester Maintenance); now {after.state}",
                       findings={"component": component, "state": after.state, "votes": votes(after),
                                 "at": now_iso(ctx)})


def release_vote(ctx: StepContext, component: str) -> StepOutcome:
    """Set ``component`` Active with requester Maintenance, only if this run set that vote (§2, §5.3)."""
    row = read_component(ctx, component)
    mine = votes(row).get(MAINTENANCE)
    if not set_by_run(ctx, component):
        issues = []
        if mine not in (None, "Active"):
            issues.append(Issue(f"{component} is held {mine} by a Maintenance vote this run did not set",
                                "left in place; not cleared (not set by this run)", automatic=False))
        return StepOutcome("skipped", f"this run did not set a vote on {component}", issues=issues,
                           findings={"component": component, "state": row.state, "votes": votes(row)})
    if mine in (None, "Active"):
        return StepOutcome("skipped", f"{component}: this run's vote is already Active ({row.state})",
                           findings={"component": component, "state": row.state, "votes": votes(row)},
                           issues=_still_held(ctx, component, row))
    _set_vote(ctx, component, "Active", MAINTENANCE)
    after = read_component(ctx, component)
    if votes(after).get(MAINTENANCE) != "Active":
        raise StepFailed(f"{component} Maintenance vote is still {votes(after).get(MAINTENANCE)}",
                         findings={"component": component, "state": after.state, "votes": votes(after)})
    return StepOutcome("passed", f"{component} set Active (requester Maintenance); now {after.state}",
                       findings={"component": component, "state": after.state, "votes": votes(after)},
                       issues=_still_held(ctx, component, after))


def _still_held(ctx: StepContext, component: str, row: ComponentState) -> list[Issue]:
    """After our vote is Active the component may still be down: name who holds it, never clear it (§5.3)."""
    if row.state == "Active":
        return []
    others = [{"component": component, "requester": r, "state": s} for r, s in non_active_votes(row).items()]
    return foreign_vote_issues(others, "left in place; reported for the operator")


def release_remaining(ctx: StepContext) -> StepOutcome:
    """Clear any other vote this run set, setup leftovers if opted in, and report every vote still held.

    Votes of other requesters (HealthApi, Sidelined, Deployment...) are someone else's hold: reported, never cleared
    silently (§5.3, DSC's SetInactiveComponentsFromAnyRequesterToActive defaults to false).
    """
    rows = read_components(ctx)
    cleared: list[dict[str, str]] = []
    issues: list[Issue] = []
    for component, requester in [tuple(v) for v in votes_set(ctx)]:
        if component in rows and votes(rows[component]).get(requester) not in (None, "Active"):
            _set_vote(ctx, component, "Active", requester)
            cleared.append({"component": component, "requester": requester})
    if ctx.options.clear_setup_leftovers:
        for component in SETUP_COMPONENTS:
            if component in rows and votes(rows[component]).get(FUNCTIONAL) not in (None, "Active"):
                # Microsoft's fix for a failed CU: the same requester, Functional, sets them Active (MS-DAG).
                _set_vote(ctx, component, "Active", FUNCTIONAL)
                cleared.append({"component": component, "requester": FUNCTIONAL})
                issues.append(Issue(f"setup leftover: {component} was held Inactive by requester Functional",
                                    "cleared (operator opted in to clear setup leftovers)"))
    if cleared:
        rows = read_components(ctx)
    remaining = classify(rows)
    issues += foreign_vote_issues(remaining["other"], "left in place; reported, not cleared")
    issues += [Issue(f"setup leftover: {v['component']} is held {v['state']} by requester Functional",
                     "not cleared: clearing setup leftovers was not opted in", automatic=False)
               for v in remaining["setup_leftover"]]
    issues += [Issue(f"{v['component']} is still held {v['state']} by requester Maintenance",
                     "not cleared: this run did not set it", automatic=False) for v in remaining["maintenance"]]
    status = "passed" if cleared else "skipped"
    summary = f"cleared {len(cleared)} vote(s)" if cleared else "no vote of this run left to clear"
    return StepOutcome(status, summary, issues=issues,
                       findings={"cleared": cleared, "not_active": not_active(rows), "held": remaining})
