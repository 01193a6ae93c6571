"""DAG-member steps: peers, the cluster node, activation settings and moving the active databases off.

Facts (docs/exchange-procedure.md §1(b), §2(a), §3.1, §5.4, §5.5):
- record ``DatabaseCopyAutoActivationPolicy`` and ``DatabaseCopyActivationDisabledAndMoveNow`` first and restore the
  saved values on exit, not blindly Unrestricted (§1(b) row 0, §7.1);
- ``Suspend-ClusterNode``/``Resume-ClusterNode``/``Get-ClusterNode`` are FailoverClusters cmdlets: default endpoint;
- MoveNow moves mounted databases only "if copies exist and are healthy" and never onto Blocked servers; if some did
  not move, ``Move-ActiveMailboxDatabase -Server X -MoveComment Maintenance -Confirm:$false`` (§1(b) 5d);
- done when ``Get-MailboxDatabaseCopyStatus -Server X`` shows no replicated database ActiveCopy or Mount*/Dismount*;
- ``Get-DatabaseAvailabilityGroup -Status`` asks the cluster: ``Servers`` are the members (AD), ``OperationalServers``
  the nodes Up or Paused, ``ServersInMaintenance`` the Paused ones, ``PrimaryActiveManager`` the owner of the cluster
  group; a paused node gives up the PAM role, and DSC counts a server still PAM as not in maintenance (§1(b) 5e).
"""
from __future__ import annotations

from typing import Any

from runner.exchange.parsing import mailbox_server
from runner.exchange.session import CmdletError
from runner.step_types import Issue, Poll, ServerInfo, StepContext, StepFailed, StepOutcome

from .base import DEFAULT, call, first
from .components import HUB_TRANSPORT, SERVER_WIDE_OFFLINE, read_component

CLUSTER_WAIT = Poll(interval=5, total_timeout=120)
PAM_WAIT = Poll(interval=5, total_timeout=60)  # the cluster group moves within seconds of the pause
MOVE_WAIT = Poll(interval=10, total_timeout=100)  # PExMM-style scripts poll ~100 s; SDSM retries after 1 min
MOVE_ATTEMPTS = 2  # SDSM: at most 2 tries, 1 min apart
MOVE_RETRY_DELAY = 60.0


def read_mailbox_server(ctx: StepContext, identity: str | None = None) -> dict[str, Any]:
    row = first(call(ctx, "Get-MailboxServer", {"Identity": identity or ctx.server.name}), "Get-MailboxServer")
    settings = mailbox_server(row)
    return {"policy": settings.auto_activation_policy, "move_now": settings.activation_disabled_and_move_now}


def _names(value: Any) -> list[str]:
    """Server names from an ADObjectId list (dicts with ``Name``, or ToString strings) or a single ADObjectId."""
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    return [str(i.get("Name") if isinstance(i, dict) else i) for i in items if i]


def read_dag(ctx: StepContext) -> dict[str, Any]:
    """Get-DatabaseAvailabilityGroup -Identity <DAG> -Status: the members and their live state, as the DAG says."""
    try:
        result = ctx.run("Get-DatabaseAvailabilityGroup", {"Identity": ctx.server.dag_name, "Status": True})
        errors = [e.message for e in result.errors] or ([] if result.output else ["no object returned"])
    except CmdletError as exc:
        result, errors = None, [exc.record.message]
    if errors or result is None:
        raise StepFailed(f"the inventory's DAG {ctx.server.dag_name} could not be read: {'; '.join(errors)}",
                         findings={"dag": ctx.server.dag_name, "errors": errors})
    dag = result.output[0]
    pam = _names(dag.get("PrimaryActiveManager"))

    def live(name: str) -> list[str] | None:
        # Blank when the task could not ask the cluster, or absent (ServersInMaintenance is not documented by
        # Microsoft): None - unknown, not "nobody".
        return None if dag.get(name) is None else _names(dag[name])

    return {"servers": _names(dag.get("Servers")), "operational": live("OperationalServers"),
            "in_maintenance": live("ServersInMaintenance"), "primary_active_manager": pam[0] if pam else ""}


def same_server(a: str, b: str) -> bool:
    return a.split(".")[0].lower() == b.split(".")[0].lower()


def cluster_state(ctx: StepContext) -> str:
    result = call(ctx, "Get-ClusterNode", {"Name": ctx.server.name}, endpoint=DEFAULT)
    return str(first(result, "Get-ClusterNode").get("State"))


def peer_status(ctx: StepContext, peer: ServerInfo) -> dict[str, Any]:
    """Is ``peer`` in maintenance, and can it take redirected mail? (§3.1, DSC Get-ExclusionsForMessageRedirection)"""
    swo = read_component(ctx, SERVER_WIDE_OFFLINE, peer.name).state
    hub = read_component(ctx, HUB_TRANSPORT, peer.name).state
    settings = read_mailbox_server(ctx, peer.name)
    in_maintenance = swo != "Active" or hub != "Active" or settings["policy"] == "Blocked" or settings["move_now"]
    return {"server": peer.name, "fqdn": peer.fqdn, "ServerWideOffline": swo, "HubTransport": hub,
            "policy": settings["policy"], "move_now": settings["move_now"], "in_maintenance": in_maintenance,
            "redirect_ok": not in_maintenance}


def copies_on(ctx: StepContext, identity: str | None = None) -> list[dict[str, Any]]:
    return call(ctx, "Get-MailboxDatabaseCopyStatus", {"Server": identity or ctx.server.name}).output


def replicated_databases(ctx: StepContext) -> set[str]:
    """Databases with more than one copy; a non-replicated database on a DAG member cannot move (§5.4)."""
    rows = call(ctx, "Get-MailboxDatabase", {"Server": ctx.server.name}).output
    return {str(r.get("Name")) for r in rows if str(r.get("ReplicationType")) != "None"}


def active_here(copies: list[dict[str, Any]], replicated: set[str]) -> list[dict[str, Any]]:
    """DSC Get-ActiveDBCount: replicated copies that are active, mounting or dismounting on this server."""
    out = []
    for c in copies:
        status = str(c.get("Status"))
        if str(c.get("DatabaseName")) in replicated and (c.get("ActiveCopy") or status.startswith(("Mount",
                                                                                                  "Dismount"))):
            out.append({"database": str(c.get("DatabaseName")), "status": status,
                        "error": c.get("ErrorMessage")})
    return out


# --- enter ---------------------------------------------------------------------------------------------------------


def suspend_cluster_node(ctx: StepContext) -> StepOutcome:
    """Suspend-ClusterNode -Name X; done when Get-ClusterNode shows Paused (§1(b) 5a)."""
    state = cluster_state(ctx)
    if state == "Paused":
        return StepOutcome("skipped", "cluster node already Paused")
    if state != "Up":
        raise StepFailed(f"cluster node is {state}; cannot pause it", findings={"state": state})
    ctx.state["cluster_paused_by_run"] = True
    call(ctx, "Suspend-ClusterNode", {"Name": ctx.server.name}, endpoint=DEFAULT)
    result = ctx.poll(lambda: ((s := cluster_state(ctx)) == "Paused", s, f"node {s}"), CLUSTER_WAIT,
                      what="cluster node pause")
    if not result.done:
        raise StepFailed(f"cluster node not Paused: {result.detail}")
    return StepOutcome("passed", "cluster node Paused", findings={"state": "Paused"})


def primary_active_manager_moved(ctx: StepContext) -> StepOutcome:
    """The PAM role left the server with its paused node (§1(b) 5e): polled briefly, then the window pauses."""
    seen: dict[str, Any] = {}

    def check() -> tuple[bool, Any, str]:
        pam = read_dag(ctx)["primary_active_manager"]
        seen["pam"] = pam
        return bool(pam) and not same_server(pam, ctx.server.name), pam, f"Primary Active Manager: {pam or 'unknown'}"

    result = ctx.poll(check, PAM_WAIT, what="Primary Active Manager")
    findings = {"primary_active_manager": seen["pam"], "polls": result.polls, "waited_s": result.elapsed}
    if not result.done and not seen["pam"]:
        raise StepFailed(f"Get-DatabaseAvailabilityGroup -Status named no Primary Active Manager for "
                         f"{result.elapsed:.0f} s after {ctx.server.name}'s cluster node was paused: the DAG's status "
                         "could not be read (cluster service, network); check it, then retry", findings=findings)
    if not result.done:
        raise StepFailed(f"{ctx.server.name} still holds the Primary Active Manager role {result.elapsed:.0f} s after "
                         f"its cluster node was paused ({result.detail}); move the cluster group to another member "
                         "(Move-ClusterGroup 'Cluster Group' -Node <member>), then retry", findings=findings)
    if result.polls == 1:
        return StepOutcome("skipped", f"{seen['pam']} holds the Primary Active Manager role", findings=findings)
    return StepOutcome("passed", f"the Primary Active Manager role moved to {seen['pam']}", findings=findings,
                       issues=[Issue(f"{ctx.server.name} kept the Primary Active Manager role after its node was "
                                     "paused", f"moved to {seen['pam']} after {result.elapsed:.0f} s")])


def _set_mailbox_server(ctx: StepContext, parameter: str, value: Any, key: str, label: str) -> StepOutcome:
    current = read_mailbox_server(ctx)
    if current[key] == value:
        return StepOutcome("skipped", f"{label} already {value}", findings=current)
    result = call(ctx, "Set-MailboxServer", {"Identity": ctx.server.name, parameter: value})
    after = read_mailbox_server(ctx)
    if after[key] != value:
        raise StepFailed(f"{label} is {after[key]}, expected {value}", findings=after)
    return StepOutcome("passed", f"{label} set to {value}", findings={**after, "warnings": result.warnings})


def activation_disabled_and_move_now(ctx: StepContext) -> StepOutcome:
    """Set-MailboxServer -DatabaseCopyActivationDisabledAndMoveNow $true (§1(b) 5b)."""
    return _set_mailbox_server(ctx, "DatabaseCopyActivationDisabledAndMoveNow", True, "move_now",
                               "DatabaseCopyActivationDisabledAndMoveNow")


def activation_policy_blocked(ctx: StepContext) -> StepOutcome:
    """Set-MailboxServer -DatabaseCopyAutoActivationPolicy Blocked (§1(b) 5c)."""
    return _set_mailbox_server(ctx, "DatabaseCopyAutoActivationPolicy", "Blocked", "policy",
                               "DatabaseCopyAutoActivationPolicy")


def databases_moved(ctx: StepContext) -> StepOutcome:
    """No replicated database may stay active here; move the stragglers explicitly, twice at most (§1(b) 5d)."""
    replicated = replicated_databases(ctx)
    remaining = active_here(copies_on(ctx), replicated)
    if not remaining:
        return StepOutcome("skipped", "no replicated database is active on this server")
    # Active Manager may still be switching over what MoveNow asked for: give it a moment first.
    waited = ctx.poll(lambda: (not (r := active_here(copies_on(ctx), replicated)), len(r), f"{len(r)} active"),
                      MOVE_WAIT, what="database moves")
    if waited.done:
        return StepOutcome("passed", f"databases moved off after {waited.elapsed:.0f} s")
    errors: list[str] = []
    for attempt in range(1, MOVE_ATTEMPTS + 1):
        if attempt > 1:
            ctx.clock.sleep(MOVE_RETRY_DELAY)
        try:
            result = ctx.run("Move-ActiveMailboxDatabase", {"Server": ctx.server.name, "MoveComment": "Maintenance",
                                                            "Confirm": False})
            errors += [e.message for e in result.errors]
        except CmdletError as exc:
            errors.append(exc.record.message)
        remaining = active_here(copies_on(ctx), replicated)
        if not remaining:
            return StepOutcome("passed", f"databases moved with Move-ActiveMailboxDatabase (attempt {attempt})",
                               issues=[Issue("MoveNow left databases active on the server",
                                             f"moved with Move-ActiveMailboxDatabase, attempt {attempt}")],
                               findings={"errors": errors})
    raise StepFailed(f"{len(remaining)} database(s) did not move off the server",
                     findings={"databases": remaining, "errors": errors})


# --- exit ----------------------------------------------------------------------------------------------------------


def resume_cluster_node(ctx: StepContext) -> StepOutcome:
    """Resume-ClusterNode -Name X; done when Get-ClusterNode shows Up (§2(a) step 3). Only a pause this run made."""
    state = cluster_state(ctx)
    if state == "Up":
        return StepOutcome("skipped", "cluster node is Up")
    snapshot = (ctx.state.get("snapshot") or {}).get("cluster_node")
    if not ctx.state.get("cluster_paused_by_run") and snapshot != "Up":
        return StepOutcome("skipped", f"cluster node is {state}, but this run did not pause it",
                           issues=[Issue(f"cluster node is {state} and was not paused by this run",
                                         "left as found; reported", automatic=False)])
    try:
        ctx.run("Resume-ClusterNode", {"Name": ctx.server.name}, endpoint=DEFAULT)
    except CmdletError as exc:
        # §5.5: 5058 (node not paused) means it was already resumed - re-read before failing.
        if cluster_state(ctx) != "Up":
            raise StepFailed(f"Resume-ClusterNode failed: {exc.record.message}",
                             findings={"state": cluster_state(ctx), "error": exc.record.message}) from exc
    result = ctx.poll(lambda: ((s := cluster_state(ctx)) == "Up", s, f"node {s}"), CLUSTER_WAIT,
                      what="cluster node resume")
    if not result.done:
        raise StepFailed(f"cluster node not Up: {result.detail}")
    return StepOutcome("passed", "cluster node Up")


def _saved(ctx: StepContext) -> dict[str, Any] | None:
    return (ctx.state.get("snapshot") or {}).get("mailbox_server")


def restore_move_now(ctx: StepContext) -> StepOutcome:
    """Set-MailboxServer -DatabaseCopyActivationDisabledAndMoveNow <saved, normally $false> (§2(a) step 3)."""
    saved = _saved(ctx)
    if saved is None:
        return StepOutcome("skipped", "no saved activation settings: this run changed none")
    return _set_mailbox_server(ctx, "DatabaseCopyActivationDisabledAndMoveNow", bool(saved["move_now"]),
                               "move_now", "DatabaseCopyActivationDisabledAndMoveNow")


def restore_activation_policy(ctx: StepContext) -> StepOutcome:
    """Set-MailboxServer -DatabaseCopyAutoActivationPolicy <the value saved before entering> (§1(b) row 0)."""
    saved = _saved(ctx)
    if saved is None:
        return StepOutcome("skipped", "no saved activation settings: this run changed none")
    return _set_mailbox_server(ctx, "DatabaseCopyAutoActivationPolicy", saved["policy"], "policy",
                               "DatabaseCopyAutoActivationPolicy")
