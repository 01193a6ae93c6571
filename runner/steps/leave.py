"""Leaving maintenance, in the documented order (reference §2(a), §2(b)); every step undoes only this run's changes.

Each step is check-then-set, so the exit path also serves an ABORT from any point of the entry: what was never done
is found already in place and skipped.
"""
from __future__ import annotations

from runner.step_types import StepContext, StepOutcome

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
