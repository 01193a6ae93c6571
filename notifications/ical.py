"""iCalendar: the invite of one window (REQUEST / CANCEL, stable UID, growing SEQUENCE) and the subscription feed."""
from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from icalendar import Calendar, Event, vCalAddress, vText

from . import conf

PRODID = "-//exmaint//Exchange maintenance windows//EN"
# VEVENT STATUS values (RFC 5545 3.8.1.11).
CONFIRMED, TENTATIVE, CANCELLED = "CONFIRMED", "TENTATIVE", "CANCELLED"


def change_uid(change_id: int) -> str:
    """Stable per change: every update or cancellation of the invite must name the same event."""
    return f"change-{change_id}@{conf.mail_domain()}"


def _calendar(method: str | None = None, name: str = "") -> Calendar:
    cal = Calendar()
    cal.add("prodid", PRODID)
    cal.add("version", "2.0")
    if method:
        cal.add("method", method)
    if name:
        cal.add("x-wr-calname", name)
    return cal


def _when(value: str | datetime) -> datetime:
    return (datetime.fromisoformat(value) if isinstance(value, str) else value).astimezone(UTC)


def invite(payload: dict[str, Any], *, organizer: str, stamp: datetime) -> bytes:
    """The invite carried by an announcement or an update (METHOD:REQUEST; STATUS:TENTATIVE while awaiting
    re-approval) or a cancellation (METHOD:CANCEL). ``stamp`` is fixed by the caller (the delivery's creation) so
    every batch and every retry carries identical bytes."""
    method = payload["method"]
    status = status_of(payload)
    cal = _calendar(method)
    event = Event()
    event.add("uid", change_uid(payload["change_id"]))
    event.add("sequence", int(payload["sequence"]))
    event.add("dtstamp", stamp.astimezone(UTC))
    event.add("dtstart", _when(payload["window_start"]))
    event.add("dtend", _when(payload["window_end"]))
    summary = f"Exchange maintenance {payload['number']}: {payload['title']}"
    # Calendar views (Outlook's among them) show the summary, not STATUS: it must say the time is unconfirmed.
    event.add("summary", f"[Awaiting re-approval] {summary}" if status == TENTATIVE else summary)
    event.add("description", _description(payload))
    event.add("location", ", ".join(payload.get("servers", [])))
    event.add("status", status)
    event.add("transp", "TRANSPARENT")  # a maintenance notice should not block the reader's own calendar
    org = vCalAddress(f"mailto:{organizer}")
    org.params["cn"] = vText("exmaint")
    event.add("organizer", org)
    cal.add_component(event)
    return cal.to_ical()


def status_of(payload: dict[str, Any]) -> str:
    """STATUS of the invite's VEVENT: CANCELLED for a CANCEL; TENTATIVE while a moved window awaits re-approval;
    CONFIRMED otherwise (the payloads of announcements queued before ``status`` existed carry none)."""
    if payload["method"] == "CANCEL":
        return CANCELLED
    return TENTATIVE if payload.get("status") == TENTATIVE else CONFIRMED


def _description(payload: dict[str, Any]) -> str:
    lines = [f"Change {payload['number']} ({payload.get('source', '')} {payload.get('external_ref', '')})",
             f"Servers: {', '.join(payload.get('servers', []))}"]
    if status_of(payload) == TENTATIVE:
        lines.append("NOT CONFIRMED: the change was edited after its approval and awaits re-approval. This is the "
                     "proposed time; a confirmation or a cancellation follows.")
    if payload.get("reason"):
        lines.append(f"Reason: {payload['reason']}")
    return "\n".join(lines)


def feed(changes: Iterable[Any], freezes: Iterable[Any], *, stamp: datetime) -> bytes:
    """Scheduled and running windows and freeze windows, for subscription (no METHOD: a published calendar)."""
    cal = _calendar(name="Exchange maintenance")
    for change in changes:
        invite_row = getattr(change, "calendar_invite", None)
        event = Event()
        event.add("uid", change_uid(change.pk))
        event.add("sequence", invite_row.sequence if invite_row is not None else 0)
        event.add("dtstamp", stamp)
        event.add("dtstart", change.window_start.astimezone(UTC))
        event.add("dtend", change.window_end.astimezone(UTC))
        event.add("summary", f"[{change.state}] {change.number}: {change.title}")
        event.add("location", ", ".join(s.name for s in change.servers.all()))
        event.add("description", f"{change.source} {change.external_ref}; requested by {change.requested_by}")
        event.add("transp", "TRANSPARENT")
        cal.add_component(event)
    for freeze in freezes:
        event = Event()
        event.add("uid", f"freeze-{freeze.pk}@{conf.mail_domain()}")
        event.add("dtstamp", stamp)
        event.add("dtstart", freeze.start.astimezone(UTC))
        event.add("dtend", freeze.end.astimezone(UTC))
        scope = ", ".join(s.name for s in freeze.servers.all()) or freeze.dag_name or "all servers"
        event.add("summary", f"Change freeze ({scope})")
        event.add("description", freeze.reason)
        event.add("transp", "TRANSPARENT")
        cal.add_component(event)
    return cal.to_ical()
