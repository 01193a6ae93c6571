"""Leaving maintenance, in the documented order; every step undoes only this run's changes.

Procedure: docs/exchange-procedure.md §2(a), §2(b).

Each step is check-then-set, so the exit path also serves an ABORT from any point of the entry: what was never done
is found already in place and skipped.
"""
from __future__ import annotations

from runner.step_types import StepContext, StepFailed, StepOutcome

from .base import DEFAULT, call
from .components import HUB_TRANSPORT, SERVER_WIDE_OFFLINE, UM_CALL_ROUTER, release_remaining, release_vote, set_by_run


def serverwideoffline_active(ctx: StepContext) -> StepOutcome:
    """Set-ServerComponentState -Component ServerWideOffline -State Active -Requester Maintenance (§2 step 1)."""
    return release_vote(ctx, SERVER_WIDE_OFFLINE)


def umcallrouter_active(ctx: StepContext) -> StepOutcome:
    """2013/2016: Set-ServerComponentState -Component UMCallRouter -State Active -Requester Maintenance (§2 step 2)."""
    if not set_by_run(ctx, UM_CALL_ROUTER):
        # Also the case on 2019+, where asking for the component would throw (it does not exist there, §6).
        return StepOutcome("skipped", "this run did not set a vote on UMCallRouter")
    return release_vote(ctx, UM_CALL_ROUTER)


def hubtransport_active(ctx: StepContext) -> StepOutcome:
    """Set-ServerComponentState -Component HubTransport -State Active -Requester Maintenance (§2(a) step 4)."""
    return release_vote(ctx, HUB_TRANSPORT)


def release_votes(ctx: StepContext) -> StepOutcome:
    """Clear what is left of this run's votes (and opted-in setup leftovers); report every foreign hold (§5.3)."""
    return release_remaining(ctx)


# POP3/IMAP4 (front end and back end) stop by design when PopProxy/ImapProxy go Inactive and do not always come
# back (§2 step 6, §5.7): start again the ones that ran before the window.
POP_IMAP_SERVICES = ("MSExchangePOP3", "MSExchangePOP3BE", "MSExchangeIMAP4", "MSExchangeIMAP4BE")


def pop_imap_status(ctx: StepContext) -> dict[str, str]:
    """Status of the POP/IMAP services on the server's own WinRM endpoint (read-only)."""
    result = call(ctx, "Get-Service", {"Name": list(POP_IMAP_SERVICES)}, endpoint=DEFAULT)
    return {str(s.get("Name")): str(s.get("Status")) for s in result.output}


def start_pop_imap(ctx: StepContext) -> StepOutcome:
    """Start-Service for each POP/IMAP service that ran before the window and is stopped now; verify it runs."""
    before = ctx.state.get("snapshot", {}).get("pop_imap") or {}
    used = [name for name, status in before.items() if status == "Running"]
    if not used:
        return StepOutcome("skipped", "POP3/IMAP4 were not running before the window")
    now = pop_imap_status(ctx)
    stopped = [name for name in used if now.get(name) != "Running"]
    for name in stopped:
        call(ctx, "Start-Service", {"Name": name}, endpoint=DEFAULT)
    after = pop_imap_status(ctx) if stopped else now
    still = [name for name in used if after.get(name) != "Running"]
    if still:
        raise StepFailed(f"{', '.join(still)} did not start", findings={"before": before, "after": after})
    if not stopped:
        return StepOutcome("skipped", f"{', '.join(used)} already running", findings={"after": after})
    return StepOutcome("passed", f"started {', '.join(stopped)} (stopped with their proxy components)",
                       findings={"before": before, "after": after})
