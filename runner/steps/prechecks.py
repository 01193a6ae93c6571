"""Read-only pre-checks that gate the window (docs/exchange-procedure.md §3.1).

A failure raises ``StepFailed`` with findings; the
window does not start unless an operator overrides with a reason. Everything found goes into the findings for the
report and the dry run."""
from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from runner.exchange.parsing import service_health
from runner.exchange.session import CmdletError
from runner.step_types import Issue, ServerInfo, StepContext, StepFailed, StepOutcome

from .base import DEFAULT, call, iso
from .components import classify, foreign_vote_issues, holders, not_active, read_components
from .dag import cluster_state, peer_status, read_dag, read_mailbox_server, same_server
from .transport import is_own_mail, queue_row

BACKUP_FIELDS = ("LastFullBackup", "LastIncrementalBackup", "LastDifferentialBackup")
# Active Manager refuses a lossless switchover to a copy further behind than this (the simulator mirrors it).
MAX_COPY_QUEUE = 10
MAX_REPLAY_QUEUE = 100
HEALTHY_COPY = frozenset({"Healthy", "Mounted"})
LARGE_QUEUE = 500
_LAG_ENABLED = re.compile(r"Enabled:\s*True", re.IGNORECASE)


def backups(ctx: StepContext) -> StepOutcome:
    """Get-MailboxDatabase -Server X -Status: refuse on BackupInProgress or a newest backup older than the policy."""
    rows = call(ctx, "Get-MailboxDatabase", {"Server": ctx.server.name, "Status": True}).output
    now = ctx.clock.now()
    limit = ctx.options.backup_max_age_hours
    table, problems = [], []
    for row in rows:
        stamps = [row.get(f) for f in BACKUP_FIELDS if isinstance(row.get(f), datetime)]
        newest = max(stamps) if stamps else None
        age = (now - newest).total_seconds() / 3600 if newest else None
        entry = {"database": str(row.get("Name")), "newest_backup": iso(newest),
                 "age_hours": round(age, 1) if age is not None else None,
                 "backup_in_progress": bool(row.get("BackupInProgress")),
                 **{f: iso(row.get(f)) for f in BACKUP_FIELDS}}
        table.append(entry)
        if entry["backup_in_progress"]:
            problems.append(f"{entry['database']}: backup in progress")
        if age is None:
            problems.append(f"{entry['database']}: never backed up")
        elif age > limit:
            problems.append(f"{entry['database']}: newest backup {age:.0f} h old (policy {limit} h)")
    findings = {"databases": table, "max_age_hours": limit}
    if problems:
        raise StepFailed("backup check failed: " + "; ".join(problems), findings=findings)
    return StepOutcome("passed", f"{len(table)} database(s) backed up within {limit} h", findings=findings)


def _resuming(ctx: StepContext) -> bool:
    """This run already entered maintenance (a resume after a crash, or a re-run): its own votes are expected."""
    return bool(ctx.state.get("votes_set"))


def server_state(ctx: StepContext) -> StepOutcome:
    """The server is fully Active (all but ForwardSyncDaemon/ProvisioningRps), or this is a resume of this run.

    Maintenance votes from elsewhere mean it is already in maintenance: refused. Other requesters' votes are
    reported (never cleared later); setup's Functional leftovers are noted (cleared at exit only if opted in).
    """
    rows = read_components(ctx)
    found = classify(rows)
    down = not_active(rows)
    findings: dict[str, Any] = {"components": {n: r.state for n, r in rows.items()},
                                "not_active": {n: holders(rows, n) for n in down}, "votes": found}
    problems: list[str] = []
    issues = foreign_vote_issues(found["other"], "reported; will not be cleared by this run")
    leftover_fix = ("will be cleared at exit (opted in)" if ctx.options.clear_setup_leftovers
                    else "will not be cleared: clearing setup leftovers is not opted in")
    issues += [Issue(f"setup leftover: {v['component']} held {v['state']} by requester Functional", leftover_fix,
                     automatic=False) for v in found["setup_leftover"]]
    resuming = _resuming(ctx)
    if found["maintenance"] and not resuming:
        problems.append("already in maintenance: " + ", ".join(f"{v['component']} {v['state']}"
                                                                 for v in found["maintenance"]))
    if ctx.server.dag_name:
        settings = read_mailbox_server(ctx)
        node = cluster_state(ctx)
        findings.update(activation=settings, cluster_node=node)
        if not resuming and (settings["move_now"] or node != "Up"):
            problems.append(f"already in maintenance: MoveNow {settings['move_now']}, cluster node {node}")
        if settings["policy"] == "Blocked" and not resuming:
            issues.append(Issue("DatabaseCopyAutoActivationPolicy is already Blocked",
                                "noted; it is restored to Blocked at exit", automatic=False))
    if problems:
        raise StepFailed("; ".join(problems), findings=findings)
    summary = "resume of this run: its own votes are in place" if resuming else (
        "server fully Active" if not down else f"{len(down)} component(s) held by other requesters")
    return StepOutcome("passed", summary, issues=issues, findings=findings)


def transport_and_services(ctx: StepContext) -> StepOutcome:
    """Test-ServiceHealth clean and Get-Queue answering; large, Retry or poison queues are reported (§3.1)."""
    health = service_health(call(ctx, "Test-ServiceHealth", {"Server": ctx.server.name}).output)
    findings: dict[str, Any] = {"services": [{"role": h.role, "required_running": h.required_services_running,
                                              "not_running": list(h.services_not_running)} for h in health]}
    problems = [f"{h.role}: {', '.join(h.services_not_running) or 'required services not running'}"
                for h in health if not h.required_services_running or h.services_not_running]
    try:
        queues = [queue_row(q) | {"own": is_own_mail(q)}
                  for q in call(ctx, "Get-Queue", {"Server": ctx.server.name}).output]
    except StepFailed as exc:
        queues = []
        problems.append(f"Get-Queue does not answer: {exc}")
    findings["queues"] = [q for q in queues if q["message_count"] or q["status"] not in ("Ready", "Active")]
    issues = []
    for q in queues:
        if q["next_hop"] == "Poison Message" and q["message_count"]:
            issues.append(Issue(f"{q['message_count']} message(s) in the poison queue {q['identity']}",
                                "reported; the drain ignores them (export or remove them deliberately)",
                                automatic=False))
        elif q["status"] in ("Retry", "Suspended") and q["own"]:
            issues.append(Issue(f"queue {q['identity']} to {q['next_hop']} is {q['status']}: {q['last_error']}",
                                "reported; it may not drain", automatic=False))
        elif q["message_count"] > LARGE_QUEUE:
            issues.append(Issue(f"queue {q['identity']} holds {q['message_count']} messages",
                                "reported; the drain may be slow", automatic=False))
    if problems:
        raise StepFailed("services or queues unhealthy: " + "; ".join(problems), findings=findings)
    return StepOutcome("passed", "required services running; Get-Queue answers", issues=issues, findings=findings)


def dag_members(ctx: StepContext) -> StepOutcome:
    """No other DAG member may be in maintenance at the same time (§3.1, §7.6).

    The members are the DAG's own (``Get-DatabaseAvailabilityGroup -Status``), not only the inventory's: a member
    the inventory does not know could be in maintenance unseen, so any difference between the two refuses the window.
    """
    dag = read_dag(ctx)
    known = [ctx.server, *ctx.server.peers]
    unknown = [m for m in dag["servers"] if not any(same_server(m, k.name) for k in known)]
    missing = [k.name for k in known if not any(same_server(k.name, m) for m in dag["servers"])]
    members = [p for p in ctx.server.peers if p.name not in missing] + [ServerInfo(m, "") for m in unknown]
    peers = [peer_status(ctx, p) for p in members]
    try:
        nodes = {str(n.get("Name")): str(n.get("State"))
                 for n in ctx.run("Get-ClusterNode", endpoint=DEFAULT).output}
    except CmdletError as exc:
        nodes = {"error": exc.record.message}
    paused = dag["in_maintenance"] or []
    for p in peers:
        p["cluster_node"] = nodes.get(p["server"], "unknown")
        p["in_inventory"] = p["server"] not in unknown
        p["operational"] = None if dag["operational"] is None else any(same_server(p["server"], m)
                                                                        for m in dag["operational"])
    busy = [p["server"] for p in peers if p["in_maintenance"] or p["cluster_node"] not in ("Up", "unknown")
            or p["operational"] is False or any(same_server(p["server"], m) for m in paused)]
    findings = {"dag": {"name": ctx.server.dag_name, **dag}, "inventory": [k.name for k in known], "peers": peers}
    problems = []
    if unknown or missing:
        differences = ([f"members missing from the inventory: {', '.join(unknown)}"] if unknown else []) + (
            [f"in the inventory but not members: {', '.join(missing)}"] if missing else [])
        problems.append(f"{ctx.server.dag_name} membership differs from the inventory ({'; '.join(differences)})")
    if busy:
        problems.append(f"another DAG member is in maintenance or not operational: {', '.join(busy)}")
    if not any(p["redirect_ok"] and p["in_inventory"] for p in peers):
        problems.append("no DAG member can take over mail and databases")
    if problems:
        raise StepFailed("; ".join(problems), findings=findings)
    return StepOutcome("passed", f"{len(peers)} other member(s) of {ctx.server.dag_name}, as in the inventory, none in "
                       f"maintenance; Primary Active Manager {dag['primary_active_manager']}", findings=findings)


def _copy_health(copy: dict[str, Any], in_maintenance: bool) -> str:
    """Why a copy could not take over (empty = it could). Active Manager's own conditions, §5.4."""
    status = str(copy.get("Status"))
    if in_maintenance:
        return "server in maintenance"
    if status not in HEALTHY_COPY:
        return f"status {status}"
    if _LAG_ENABLED.search(str(copy.get("ReplayLagStatus") or "")):
        return "lagged copy"
    if int(copy.get("CopyQueueLength") or 0) > MAX_COPY_QUEUE:
        return f"copy queue {copy.get('CopyQueueLength')}"
    if int(copy.get("ReplayQueueLength") or 0) > MAX_REPLAY_QUEUE:
        return f"replay queue {copy.get('ReplayQueueLength')}"
    if str(copy.get("ContentIndexState") or "Healthy") not in ("Healthy", "NotApplicable"):
        return f"content index {copy.get('ContentIndexState')}"
    return ""


def redundancy(ctx: StepContext) -> StepOutcome:
    """Every database with a copy here keeps one other healthy, non-lagged copy on a server not in maintenance."""
    me = ctx.server.name.lower()
    databases = sorted({str(c.get("DatabaseName"))
                        for c in call(ctx, "Get-MailboxDatabaseCopyStatus", {"Server": ctx.server.name}).output})
    peers = {p.name.lower(): p for p in ctx.server.peers}
    maintenance: dict[str, bool] = {}
    rows, refused = [], []
    for db in databases:
        copies = call(ctx, "Get-MailboxDatabaseCopyStatus", {"Identity": f"{db}\\*"}).output
        others = []
        for copy in copies:
            server = str(copy.get("MailboxServer"))
            if server.lower() == me:
                continue
            if server.lower() not in maintenance:
                peer = peers.get(server.lower())
                maintenance[server.lower()] = peer_status(ctx, peer)["in_maintenance"] if peer else True
            reason = _copy_health(copy, maintenance[server.lower()])
            others.append({"server": server, "status": str(copy.get("Status")),
                           "copy_queue": copy.get("CopyQueueLength"), "replay_queue": copy.get("ReplayQueueLength"),
                           "content_index": str(copy.get("ContentIndexState")), "usable": not reason,
                           "reason": reason})
        ok = any(o["usable"] for o in others)
        rows.append({"database": db, "other_copies": others, "ok": ok})
        if not ok:
            refused.append(db if others else f"{db} (single copy)")
    findings = {"databases": rows}
    if refused:
        raise StepFailed(f"redundancy: no other healthy copy for {', '.join(refused)}", findings=findings)
    return StepOutcome("passed", f"{len(rows)} database(s) keep a healthy copy elsewhere", findings=findings)
