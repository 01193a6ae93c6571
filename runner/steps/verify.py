"""Post-exit verification, read-only (docs/exchange-procedure.md §2.1 and the out-of-maintenance predicate, §7.5)."""
from __future__ import annotations

from typing import Any

from runner.exchange.parsing import service_health
from runner.exchange.session import CmdletError
from runner.step_types import Issue, Poll, StepContext, StepFailed, StepOutcome

from .base import call
from .components import SERVER_WIDE_OFFLINE, holders, not_active, read_components, snapshot_vote, votes
from .dag import cluster_state, copies_on, read_mailbox_server
from .prechecks import MAX_COPY_QUEUE, MAX_REPLAY_QUEUE
from .transport import POISON_HOP, is_own_mail, queue_row

# Copies pass through Initializing after service starts and monitors need minutes: poll rather than judge once.
SETTLE = Poll(interval=15, total_timeout=300)
# One look at the queues cannot tell one that grows from one that holds still: they are watched.
QUEUE_WATCH = Poll(interval=15, total_timeout=300)
GROWTH_WATCH = 60.0  # s a Retry queue to an external hop is watched before it counts as holding still
# Hops outside the organisation: Retry there is the remote end refusing, and the queue resumes by itself.
EXTERNAL_DELIVERY = frozenset({"DnsConnectorDelivery", "SmartHostConnectorDelivery", "NonSmtpGatewayDelivery",
                               "DeliveryAgent", "SmtpRelayToRemoteForest"})


def components(ctx: StepContext) -> StepOutcome:
    """Every component Active except ForwardSyncDaemon and ProvisioningRps; otherwise name who holds it (§5.3).

    A component held only by another requester's vote that the pre-run snapshot already showed was reported
    before the window and is left alone: an issue, not a failure. ServerWideOffline not Active always fails.
    """
    rows = read_components(ctx)
    down = not_active(rows)
    # Every component's state after the window, for the report's before/after table.
    findings: dict[str, Any] = {"not_active": {n: holders(rows, n) for n in down},
                                "components": {n: row.state for n, row in rows.items()}}
    failures, issues = [], []
    for name in down:
        held = holders(rows, name)
        pre_existing = held and all(h["requester"] != "Maintenance"
                                    and snapshot_vote(ctx, h["component"], h["requester"]) == h["state"]
                                    for h in held)
        label = ", ".join(f"{h['requester']} on {h['component']}" for h in held) or "no vote (unknown cause)"
        if pre_existing and name != SERVER_WIDE_OFFLINE and rows[SERVER_WIDE_OFFLINE].state == "Active":
            issues.append(Issue(f"{name} is {rows[name].state}, held by {label} since before the window",
                                "left in place; reported (held-by-other-requester)", automatic=False))
        else:
            failures.append(f"{name} is {rows[name].state} (held by {label})")
    if failures:
        findings["votes"] = {n: votes(rows[n]) for n in down}
        raise StepFailed("components not Active: " + "; ".join(failures), findings=findings)
    return StepOutcome("passed", "all components Active (except those Inactive by design)", issues=issues,
                       findings=findings)


def services(ctx: StepContext) -> StepOutcome:
    """Test-ServiceHealth -Server X: every role has RequiredServicesRunning and nothing in ServicesNotRunning."""
    def check() -> tuple[bool, Any, str]:
        health = service_health(call(ctx, "Test-ServiceHealth", {"Server": ctx.server.name}).output)
        missing = sorted({s for h in health for s in h.services_not_running}
                         | {h.role for h in health if not h.required_services_running and not h.services_not_running})
        return not missing, tuple(missing), "not running: " + (", ".join(missing) or "none")

    result = ctx.poll(check, SETTLE, what="Test-ServiceHealth")
    if not result.done:
        raise StepFailed(f"required services not running: {result.detail}")
    return StepOutcome("passed", "required services running", findings={"polls": result.polls})


def _copy_problem(copy: dict[str, Any]) -> str:
    status = str(copy.get("Status"))
    if status not in ("Healthy", "Mounted"):
        return f"status {status}"
    if int(copy.get("CopyQueueLength") or 0) > MAX_COPY_QUEUE:
        return f"copy queue {copy.get('CopyQueueLength')}"
    lagged = "enabled:true" in str(copy.get("ReplayLagStatus") or "").replace(" ", "").lower()
    if not lagged and int(copy.get("ReplayQueueLength") or 0) > MAX_REPLAY_QUEUE:
        return f"replay queue {copy.get('ReplayQueueLength')}"
    if str(copy.get("ContentIndexState") or "Healthy") not in ("Healthy", "NotApplicable"):
        return f"content index {copy.get('ContentIndexState')}"
    return ""


def copies(ctx: StepContext) -> StepOutcome:
    """Get-MailboxDatabaseCopyStatus -Server X: Healthy or Mounted, low queues, content index Healthy."""
    seen: dict[str, Any] = {}

    def check() -> tuple[bool, Any, str]:
        problems = {str(c.get("Name")): p for c in copies_on(ctx) if (p := _copy_problem(c))}
        seen["problems"] = problems
        return not problems, tuple(sorted(problems.items())), f"{len(problems)} unhealthy copies"

    result = ctx.poll(check, SETTLE, what="database copies")
    if not result.done:
        raise StepFailed(f"database copies not healthy: {result.detail}", findings={"copies": seen["problems"]})
    return StepOutcome("passed", "database copies healthy")


def replication(ctx: StepContext) -> StepOutcome:
    """Test-ReplicationHealth -Identity X: every check Passed."""
    seen: dict[str, Any] = {}

    def check() -> tuple[bool, Any, str]:
        rows = call(ctx, "Test-ReplicationHealth", {"Identity": ctx.server.name}).output
        failed = {str(r.get("Check")): f"{r.get('Result')}: {r.get('Error')}" for r in rows
                  if str(r.get("Result")) != "Passed"}
        seen["failed"] = failed
        return not failed, tuple(sorted(failed)), f"{len(failed)} check(s) not Passed"

    result = ctx.poll(check, SETTLE, what="Test-ReplicationHealth")
    if not result.done:
        raise StepFailed(f"replication health: {result.detail}", findings={"checks": seen["failed"]})
    return StepOutcome("passed", "all replication checks Passed")


def cluster_and_activation(ctx: StepContext) -> StepOutcome:
    """Get-ClusterNode Up; Get-MailboxServer MoveNow False and the policy restored to the saved value (§2.1)."""
    node = cluster_state(ctx)
    settings = read_mailbox_server(ctx)
    saved = (ctx.state.get("snapshot") or {}).get("mailbox_server") or {"policy": "Unrestricted", "move_now": False}
    findings = {"cluster_node": node, "activation": settings, "saved": saved}
    problems = []
    if node != "Up":
        problems.append(f"cluster node is {node}")
    if settings["move_now"]:
        problems.append("DatabaseCopyActivationDisabledAndMoveNow is True")
    if settings["policy"] != saved["policy"]:
        problems.append(f"DatabaseCopyAutoActivationPolicy is {settings['policy']}, saved {saved['policy']}")
    if problems:
        raise StepFailed("; ".join(problems), findings=findings)
    return StepOutcome("passed", f"cluster node Up; activation policy {settings['policy']}", findings=findings)


def _external(q: dict[str, Any]) -> bool:
    return q["next_hop_category"] == "External" or q["delivery_type"] in EXTERNAL_DELIVERY


def queues(ctx: StepContext) -> StepOutcome:
    """Mail flows again (§2 step 5, §2.1 "Queues", §5.1, §5.2). Over the server's own queues (shadow-redundancy
    queues hold other servers' mail and are ignored):

    - fails: the Submission queue Suspended or missing; any queue Suspended (only an admin resumes it); any queue in
      Retry whose message count grows; a queue to an internal hop (mailbox delivery, DAG or site relay) still in
      Retry - the organisation's own paths must work;
    - reported: a queue to an external hop in Retry that holds still (the remote end refuses; it resumes by itself,
      §1(a) step 4); a non-empty poison queue (never retried); a problem that cleared while watched.

    Watched every 15 s for up to 5 min; a Retry queue to an external hop for 1 min at least, to see whether it grows.
    """
    first_seen: dict[str, tuple[Any, int]] = {}
    seen: dict[str, Any] = {"rows": [], "problems": {}, "ever": {}}

    def check() -> tuple[bool, Any, str]:
        try:
            result = ctx.run("Get-Queue", {"Server": ctx.server.name})
            error = "; ".join(e.message for e in result.errors)
        except CmdletError as exc:
            result, error = None, exc.record.message
        if result is None or error:
            # Transport's BootLoader still loading after a (re)start (§5.1(2)): not flowing yet, within the watch.
            seen["problems"] = {"Get-Queue": error}
            seen["ever"]["Get-Queue"] = "not answering (transport starting)"
            return False, ("unanswered",), f"Get-Queue: {error}"
        rows = [queue_row(q) | {"own": is_own_mail(q)} for q in result.output]
        now = ctx.clock.now()
        problems: dict[str, str] = {}
        watching = False
        if not any(r["identity"].lower().endswith("\\submission") for r in rows):
            problems[f"{ctx.server.name}\\Submission"] = "not listed by Get-Queue"
        for r in rows:
            since, before = first_seen.setdefault(r["identity"], (now, r["message_count"]))
            r["first_count"] = before
            if not r["own"]:
                continue
            where = f"{r['identity']} to {r['next_hop']}"
            if r["status"] == "Suspended":
                problems[where] = "Suspended"
            elif r["status"] == "Retry":
                if r["message_count"] > before:
                    problems[where] = (f"in Retry and growing ({before} -> {r['message_count']} messages in "
                                       f"{(now - since).total_seconds():.0f} s)")
                elif not _external(r):
                    problems[where] = "in Retry on an internal hop"
                elif (now - since).total_seconds() < GROWTH_WATCH:
                    watching = True
        seen.update(rows=rows, problems=problems)
        seen["ever"].update(problems)
        detail = "; ".join(f"{q}: {p}" for q, p in problems.items()) or (
            "watching queues in Retry" if watching else "queues flowing")
        return not problems and not watching, tuple(sorted(problems.items())), detail

    result = ctx.poll(check, QUEUE_WATCH, what="queues")
    rows = seen["rows"]
    findings: dict[str, Any] = {"queues": [r for r in rows if r["message_count"] or r["status"] not in ("Ready",
                                                                                                        "Active")],
                                "polls": result.polls, "watched_s": result.elapsed}
    if not result.done:
        findings["problems"] = seen["problems"]
        raise StepFailed(f"queues not flowing after {result.elapsed:.0f} s: "
                         + "; ".join(f"{q}: {p}" for q, p in seen["problems"].items()), findings=findings)
    issues = [Issue(f"{q} was {p}", f"flowing again after {result.elapsed:.0f} s") for q, p in seen["ever"].items()]
    for r in rows:
        if r["own"] and r["status"] == "Retry":
            issues.append(Issue(f"queue {r['identity']} to {r['next_hop']} is in Retry with {r['message_count']} "
                                f"message(s), not growing over {result.elapsed:.0f} s: {r['last_error']}",
                                "reported; the remote end refuses and transport retries it", automatic=False))
        elif r["next_hop"] == POISON_HOP and r["message_count"]:
            issues.append(Issue(f"{r['message_count']} message(s) in the poison queue {r['identity']}",
                                "reported; poison messages are never retried (export or remove them deliberately)",
                                automatic=False))
    summary = "Submission queue flowing; no queue Suspended, or growing or stuck in Retry on an internal hop"
    reported = sum(1 for i in issues if not i.automatic)
    if reported:
        summary += f"; {reported} queue(s) reported for the review (see the issues)"
    return StepOutcome("passed", summary, issues=issues, findings=findings)
