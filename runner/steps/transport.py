"""Transport: restarting the services so they pick up HubTransport's state, redirecting and draining the queues.

Facts (docs/exchange-procedure.md §1(a), §1(b), §5.1, §5.2, §7.3):
- the transport service acts on a new HubTransport state only after a restart of MSExchangeTransport (MS-DAG);
  many guides restart MSExchangeFrontEndTransport too;
- after a restart ``Get-Queue`` fails until the BootLoader has loaded the queue database: DSC waits up to 5 min;
- shadow-redundancy queues and the poison queue never drain and Redirect-Message does not move them: the "empty"
  test excludes them (DSC's filter);
- a drain is a bounded wait (poll 10 s, no progress 1 min, total 5-8 min): what remains is reported, not ignored;
- on exit the Submission queue must not stay Suspended: DSC resumes it with Resume-Queue, polling 10 s for 5 min.
"""
from __future__ import annotations

from typing import Any

from runner.exchange.session import CmdletError
from runner.step_types import Issue, Poll, ServerInfo, StepContext, StepFailed, StepOutcome

from .base import DEFAULT, call, first, now_iso
from .components import HUB_TRANSPORT, holders, read_components, set_by_run

TRANSPORT_SERVICES = ("MSExchangeTransport", "MSExchangeFrontEndTransport")
BOOTLOADER_WAIT = Poll(interval=10, total_timeout=300)  # DSC: Get-Queue answers within 5 min of a restart
SUBMISSION_WAIT = Poll(interval=10, total_timeout=300)  # DSC Enable-SubmissionQueue
# DSC's Wait-EmptyQueuesCompletion filter: shadow and poison queues are not the server's own mail to deliver.
ACTIVE_QUEUE_FILTER = ("MessageCount -gt 0 -and DeliveryType -ne 'ShadowRedundancy' "
                       "-and NextHopDomain -ne 'Poison Message'")
SHADOW = "ShadowRedundancy"
POISON_HOP = "Poison Message"
STALLED_POLLS_FOR_ISSUE = 2  # a drain that stood still this many polls before finishing is worth recording

ENTER_RESTART = "transport_restarted_enter"
EXIT_RESTART = "transport_restarted_exit"


def queue_row(q: dict[str, Any]) -> dict[str, Any]:
    return {"identity": str(q.get("Identity", "")), "delivery_type": str(q.get("DeliveryType", "")),
            "next_hop": str(q.get("NextHopDomain", "")), "next_hop_category": str(q.get("NextHopCategory") or ""),
            "status": str(q.get("Status", "")), "message_count": int(q.get("MessageCount") or 0),
            "last_error": q.get("LastError")}


def is_own_mail(q: dict[str, Any]) -> bool:
    return str(q.get("DeliveryType")) != SHADOW and str(q.get("NextHopDomain")) != POISON_HOP


def pending_queues(ctx: StepContext) -> list[dict[str, Any]]:
    """Queues still holding this server's own mail. Raises CmdletError while transport cannot answer."""
    result = ctx.run("Get-Queue", {"Server": ctx.server.name, "Filter": ACTIVE_QUEUE_FILTER})
    if result.errors:
        raise StepFailed("Get-Queue reported errors", findings={"errors": [e.message for e in result.errors]})
    # Excluded server-side already; filtered again so a build that ignores part of the OPATH filter is harmless.
    return [queue_row(q) for q in result.output if is_own_mail(q) and int(q.get("MessageCount") or 0) > 0]


def _queues_answer(ctx: StepContext) -> tuple[bool, Any, str]:
    try:
        ctx.run("Get-Queue", {"Server": ctx.server.name})
    except CmdletError as exc:
        return False, None, f"Get-Queue: {exc.record.message}"
    return True, None, "Get-Queue answers"


def wait_for_queue_viewer(ctx: StepContext) -> int:
    """Poll until ``Get-Queue -Server X`` answers (the BootLoader has loaded); StepFailed after 5 min."""
    result = ctx.poll(lambda: _queues_answer(ctx), BOOTLOADER_WAIT, what="Get-Queue after the transport restart")
    if not result.done:
        raise StepFailed(f"transport did not answer Get-Queue: {result.detail}",
                         findings={"waited_s": result.elapsed, "polls": result.polls})
    return result.polls


def _service_status(ctx: StepContext, name: str) -> str:
    try:
        result = ctx.run("Get-Service", {"Name": name}, endpoint=DEFAULT)
    except CmdletError as exc:
        return f"unknown ({exc.record.message})"
    return str(result.output[0].get("Status")) if result.output else "not found"


def _restart(ctx: StepContext, marker: str, why: str) -> StepOutcome:
    if ctx.state.get(marker):
        polls = wait_for_queue_viewer(ctx)
        return StepOutcome("skipped", f"transport already restarted at {ctx.state[marker]}; Get-Queue answers",
                           findings={"polls": polls})
    ctx.state[f"{marker}_attempted"] = True  # the exit restarts transport if this attempt left it stopped
    # A restart is not check-then-set (a second one looks like none), so each one is sent at most once per attempt:
    # a "sent" marker is persisted before the command and a "done" list after it. A worker that resumes after a
    # crash skips both and verifies instead; a failure the step reports clears them, so an operator's retry restarts.
    done: list[str] = ctx.state.setdefault(f"{marker}_done", [])
    issues: list[Issue] = []
    for service in TRANSPORT_SERVICES:
        sent = f"{marker}_sent_{service}"
        if service in done or ctx.state.get(sent):
            issues.append(Issue(f"Restart-Service {service} was sent by an interrupted attempt",
                                "not sent again; service status and Get-Queue verified", automatic=True))
            status = _service_status(ctx, service)
            if status != "Running":
                _forget_restarts(ctx, marker)
                raise StepFailed(f"{service} is {status} after a restart sent by an interrupted attempt",
                                 findings={"service": service, "status": status})
            continue
        ctx.state[sent] = now_iso(ctx)
        ctx.checkpoint()
        try:
            result = ctx.run("Restart-Service", {"Name": service}, endpoint=DEFAULT)
        except CmdletError as exc:
            _forget_restarts(ctx, marker)
            raise StepFailed(f"Restart-Service {service} failed: {exc.record.message}",
                             findings={"service": service, "status": _service_status(ctx, service)}) from exc
        done.append(service)
        del ctx.state[sent]
        status = _service_status(ctx, service)
        if result.errors or status != "Running":
            _forget_restarts(ctx, marker)
            raise StepFailed(f"{service} did not restart (status {status})",
                             findings={"service": service, "status": status,
                                       "errors": [e.message for e in result.errors]})
    polls = wait_for_queue_viewer(ctx)
    _forget_restarts(ctx, marker)
    ctx.state[marker] = now_iso(ctx)
    return StepOutcome("passed", f"restarted {' and '.join(TRANSPORT_SERVICES)} {why}; Get-Queue answers",
                       issues=issues, findings={"services": list(TRANSPORT_SERVICES), "queue_viewer_polls": polls})


def _forget_restarts(ctx: StepContext, marker: str) -> None:
    ctx.state.pop(f"{marker}_done", None)
    for service in TRANSPORT_SERVICES:
        ctx.state.pop(f"{marker}_sent_{service}", None)


def restart_transport_enter(ctx: StepContext) -> StepOutcome:
    """Restart transport so it acts on HubTransport Draining, then wait until Get-Queue answers (§1 step 2)."""
    return _restart(ctx, ENTER_RESTART, "so transport picks up Draining")


def redirect_target(ctx: StepContext, peers: tuple[ServerInfo, ...]) -> tuple[ServerInfo | None, list[dict]]:
    """The first peer able to take redirected mail: HubTransport Active, not Blocked, not in maintenance (DSC)."""
    from .dag import peer_status  # dag imports this module's helpers too

    checked = []
    for peer in peers:
        status = peer_status(ctx, peer)
        checked.append(status)
        if status["redirect_ok"]:
            return peer, checked
    return None, checked


def redirect_messages(ctx: StepContext) -> StepOutcome:
    """Redirect-Message -Server X -Target <healthy peer> so queued mail leaves before the drain (§1(b) step 4)."""
    if ctx.state.get("redirected_to"):
        return StepOutcome("skipped", f"messages already redirected to {ctx.state['redirected_to']}")
    try:
        pending = pending_queues(ctx)
    except CmdletError as exc:
        raise StepFailed(f"Get-Queue failed: {exc.record.message}") from exc
    if not pending:
        return StepOutcome("skipped", "no queued messages to redirect")
    target, checked = redirect_target(ctx, ctx.server.peers)
    if target is None:
        # §5.1(4): nowhere to redirect - the local drain is all there is; residual mail is reported by the drain.
        return StepOutcome("skipped", "no healthy peer to redirect to", findings={"peers": checked},
                           issues=[Issue("no DAG peer could take redirected mail", "queues left to drain locally",
                                         automatic=True)])
    if ctx.state.get("redirect_sent_to"):
        # Sent by an interrupted attempt; redirecting again would move nothing new (the drain that follows verifies).
        ctx.state["redirected_to"] = ctx.state["redirect_sent_to"]
        return StepOutcome("skipped", f"Redirect-Message to {ctx.state['redirect_sent_to']} was sent before a worker "
                           "crash; not repeated", findings={"target": ctx.state["redirect_sent_to"]})
    ctx.state["redirect_sent_to"] = target.fqdn
    ctx.checkpoint()
    call(ctx, "Redirect-Message", {"Server": ctx.server.name, "Target": [target.fqdn], "Confirm": False})
    ctx.state["redirected_to"] = target.fqdn
    return StepOutcome("passed", f"redirected queued messages to {target.fqdn}",
                       findings={"target": target.fqdn, "queues_before": pending, "peers": checked})


def drain_queues(ctx: StepContext) -> StepOutcome:
    """Wait, bounded, until no queue holds this server's own mail (§1(a) step 4, §7.3)."""
    seen: dict[str, Any] = {"remaining": [], "stalled": 0, "worst_stall": 0, "last": None}

    def check() -> tuple[bool, Any, str]:
        try:
            queues = pending_queues(ctx)
        except CmdletError as exc:  # BootLoader still loading: not drained yet, no progress either
            return False, seen["last"], f"Get-Queue: {exc.record.message}"
        total = sum(q["message_count"] for q in queues)
        if seen["last"] is not None and total >= seen["last"]:
            seen["stalled"] += 1
            seen["worst_stall"] = max(seen["worst_stall"], seen["stalled"])
        else:
            seen["stalled"] = 0
        seen["last"], seen["remaining"] = total, queues
        return not queues, total, f"{total} message(s) in {len(queues)} queue(s)"

    result = ctx.poll(check, ctx.options.queue_drain, what="queue drain")
    findings = {"polls": result.polls, "waited_s": result.elapsed}
    if not result.done:
        raise StepFailed(f"queues did not drain: {result.detail}",
                         findings={**findings, "queues": seen["remaining"], "stalled": result.stalled})
    if result.polls == 1:
        return StepOutcome("skipped", "no queued messages left", findings=findings)
    issues = []
    if seen["worst_stall"] >= STALLED_POLLS_FOR_ISSUE:
        issues.append(Issue(f"queues made no progress for {seen['worst_stall']} polls before draining",
                            f"drained after {result.polls} polls ({result.elapsed:.0f} s)"))
    return StepOutcome("passed", f"queues drained after {result.polls} polls ({result.elapsed:.0f} s)",
                       issues=issues, findings=findings)


def _submission(ctx: StepContext) -> dict[str, Any]:
    result = call(ctx, "Get-Queue", {"Identity": f"{ctx.server.name}\\Submission"})
    return first(result, "Get-Queue Submission")


def restart_transport_exit(ctx: StepContext) -> StepOutcome:
    """Restart transport so it acts on HubTransport Active; Submission must not stay Suspended (§2 step 5, §5.2)."""
    touched = set_by_run(ctx, HUB_TRANSPORT) or ctx.state.get(f"{ENTER_RESTART}_attempted")
    if not touched:
        return StepOutcome("skipped", "this run did not touch transport")
    if not ctx.state.get(f"{EXIT_RESTART}_done"):
        # Transport reads its component state when it starts: restarted while another requester's vote (a failed
        # setup's Functional, say) still holds HubTransport, it would go on acting on Inactive after that vote is
        # cleared, and the Active that verification then reads would not be what transport does.
        rows = read_components(ctx)
        if HUB_TRANSPORT in rows and rows[HUB_TRANSPORT].state != "Active":
            held = holders(rows, HUB_TRANSPORT)
            raise StepFailed(
                "HubTransport is still " + rows[HUB_TRANSPORT].state + ", held by "
                + ", ".join(f"{h['requester']} on {h['component']}" for h in held)
                + "; transport is not restarted until it is Active (clear that vote, e.g. setup leftovers, then retry)",
                findings={"holders": held})
    outcome = _restart(ctx, EXIT_RESTART, "so transport picks up Active")
    submission = _submission(ctx)
    if str(submission.get("Status")) != "Suspended":
        outcome.findings["submission"] = str(submission.get("Status"))
        return outcome
    call(ctx, "Resume-Queue", {"Identity": f"{ctx.server.name}\\Submission", "Confirm": False})

    def resumed() -> tuple[bool, Any, str]:
        status = str(_submission(ctx).get("Status"))
        return status != "Suspended", status, f"Submission queue {status}"

    result = ctx.poll(resumed, SUBMISSION_WAIT, what="Submission queue")
    if not result.done:
        raise StepFailed(f"Submission queue stays Suspended: {result.detail}", findings={"waited_s": result.elapsed})
    outcome.issues.append(Issue("the Submission queue was Suspended after the transport restart",
                                "resumed with Resume-Queue"))
    outcome.findings["submission"] = "resumed"
    return outcome
