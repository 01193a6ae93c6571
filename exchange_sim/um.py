"""Unified Messaging (Exchange 2016 only; UM was removed in 2019): the calls a server is processing.

Model (simplified, deterministic): while UMCallRouter is Active a call that ends is replaced by a new one, so the
number of calls stands still. Once UMCallRouter is Draining or Inactive the router takes no new calls and the calls
in progress end at their own pace: what runbooks wait for with ``Get-UMActiveCalls`` before taking the server down
(DSC ``Wait-ForUMToDrain``). A call without an end (the ``um-call-stuck`` fault) stays up whatever the router does.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from .databases import stable_guid
from .objects import CONFIGURABLE, OBJECT, SimObject

# Microsoft.Exchange.UM.Rpc.ActiveCalls, as Get-UMActiveCalls writes it (a ConfigurableObject via UMDiagnosticObject).
ACTIVE_CALL_TYPES = ("Microsoft.Exchange.UM.Rpc.ActiveCalls", "Microsoft.Exchange.UM.Rpc.UMDiagnosticObject",
                     CONFIGURABLE, OBJECT)
# The calls a UM server is seeded with: seconds each call lasts, its type and what the caller is doing.
SEED_CALLS = ((75.0, "CallAnswering", "RecordingVoiceMessage"), (150.0, "SubscriberAccess", "ReadingEmail"))
DIAL_PLAN = "Contoso-DP"
GATEWAY = "10.0.0.50"  # the UM IP gateway's address (a SIP trunk to the PBX)


@dataclass
class UMCall:
    number: int
    call_type: str
    app_state: str
    duration: float | None  # seconds; None = the call never ends (um-call-stuck)
    ends_at: datetime | None

    @property
    def calling_number(self) -> str:
        return f"+1425555{self.number:04d}"


@dataclass
class UnifiedMessaging:
    """One server's UM call router: the calls in progress and whether the router still takes new ones."""

    calls: list[UMCall] = field(default_factory=list)
    accepting: bool = True
    next_number: int = 1

    def seed(self, now: datetime) -> None:
        for duration, call_type, app_state in SEED_CALLS:
            self.add(now, duration, call_type, app_state)

    def add(self, now: datetime, duration: float | None, call_type: str = "CallAnswering",
            app_state: str = "RecordingVoiceMessage") -> UMCall:
        call = UMCall(self.next_number, call_type, app_state, duration,
                      None if duration is None else now + timedelta(seconds=duration))
        self.next_number += 1
        self.calls.append(call)
        return call

    def router_state(self, state: str, now: datetime) -> None:
        """UMCallRouter's effective state changed (or not): stop or start taking new calls at ``now``."""
        accepting = state == "Active"
        if accepting == self.accepting:
            return
        self.active(now)  # calls that ended so far were replaced (or not) under the old state
        self.accepting = accepting
        if accepting and not self.calls:
            self.seed(now)

    def active(self, now: datetime) -> list[UMCall]:
        """The calls in progress at ``now``: replaced as they end while accepting, else gone once ended."""
        kept: list[UMCall] = []
        for call in self.calls:
            if call.ends_at is None or call.ends_at > now:
                kept.append(call)
            elif self.accepting and call.duration is not None:
                # Calls keep coming while the router is Active: the next one started when this one ended.
                ends_at = call.ends_at
                while ends_at <= now:
                    ends_at += timedelta(seconds=call.duration)
                kept.append(UMCall(self.next_number, call.call_type, call.app_state, call.duration, ends_at))
                self.next_number += 1
        self.calls = kept
        return list(kept)


def active_call_object(server_fqdn: str, call: UMCall) -> SimObject:
    """An ActiveCalls object. The property names are the class's; the values are illustrative."""
    identity = stable_guid("umcall", server_fqdn, str(call.number))
    return SimObject(
        ACTIVE_CALL_TYPES,
        {
            "GatewayId": GATEWAY,
            "ServerId": server_fqdn,
            "DialPlan": DIAL_PLAN,
            "DialedNumber": "+14255550100",  # the UM pilot number
            "CallType": call.call_type,
            "CallingNumber": call.calling_number,
            "DiversionNumber": "" if call.call_type != "CallAnswering" else "+14255550142",
            "CallState": "Connected",
            "AppState": call.app_state,
            "Identity": identity,
            "IsValid": True,
        },
        ACTIVE_CALL_TYPES[0],
    )
