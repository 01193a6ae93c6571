"""iCalendar: the invite of one window (iTIP REQUEST / CANCEL, RFC 5546; carried by iMIP, RFC 6047) and the
subscription feed.

The model: an invite is an **announcement**, not a meeting to attend. Readers are not asked to answer:
- one ATTENDEE, a group standing for the Bcc'd recipients (``CUTYPE=GROUP;ROLE=NON-PARTICIPANT;RSVP=FALSE``, the
  organizer's own address): RFC 5546 requires an ATTENDEE in a REQUEST and in a whole-event CANCEL, while listing
  the real recipients would show every reader the whole notify list. ``RSVP=FALSE`` on every attendee is what
  makes Outlook request no response (MS-OXCICAL PidTagResponseRequested), so no Accept goes back to an ORGANIZER
  address that may bounce; ``X-MICROSOFT-DISALLOW-COUNTER`` stops "propose new time".
- ``TRANSP:TRANSPARENT`` with ``X-MICROSOFT-CDO-BUSYSTATUS:FREE`` and ``X-MICROSOFT-CDO-INTENDEDSTATUS:FREE``: the
  window is something that happens to the reader's mailbox, not time the reader spends, so it must not block the
  reader's free/busy (Outlook shows it as "Free"; a TENTATIVE status changes the words, not the free/busy).
- one UID per change, random and stored (notifications.models.MailThread), a SEQUENCE that grows with every update,
  and DTSTAMP = when the update was made (monotonic with SEQUENCE).

Every TEXT value is escaped by icalendar (comma, semicolon, backslash, newline); SUMMARY is one line.
"""
from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from icalendar import Calendar, Event, Timezone, vCalAddress, vDuration, vText

from . import conf
from .models import MailThread
from .text import one_line

PRODID = "-//exmaint//Exchange maintenance windows//EN"
# VEVENT STATUS values (RFC 5545 3.8.1.11).
CONFIRMED, TENTATIVE, CANCELLED = "CONFIRMED", "TENTATIVE", "CANCELLED"
FREE = "FREE"
# How often a subscribed client should reload the feed (RFC 7986 REFRESH-INTERVAL; X-PUBLISHED-TTL for Outlook).
REFRESH = timedelta(minutes=15)


def change_uid(change_id: int) -> str:
    """The UID invites were sent with before UIDs were stored (kept for those changes by migration 0005)."""
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


def _outlook(event: Event) -> None:
    event.add("transp", "TRANSPARENT")
    event.add("x-microsoft-cdo-busystatus", FREE)
    event.add("x-microsoft-cdo-intendedstatus", FREE)
    event.add("x-microsoft-cdo-alldayevent", "FALSE")


def invite(payload: dict[str, Any], *, uid: str, organizer: str, stamp: datetime) -> bytes:
    """The invite carried by an announcement or an update (METHOD:REQUEST; STATUS:TENTATIVE while awaiting
    re-approval) or a cancellation (METHOD:CANCEL), UTF-8. ``stamp`` is fixed by the caller (the delivery's
    creation) so every batch and every retry carries identical bytes."""
    method = payload["method"]
    status = status_of(payload)
    cal = _calendar(method)
    event = Event()
    event.add("uid", uid)
    event.add("sequence", int(payload["sequence"]))
    event.add("dtstamp", stamp.astimezone(UTC))
    event.add("dtstart", _when(payload["window_start"]))
    event.add("dtend", _when(payload["window_end"]))
    summary = one_line(f"Exchange maintenance {payload['number']}: {payload['title']}")
    # Calendar views (Outlook's among them) show the summary, not STATUS: it must say the time is unconfirmed.
    event.add("summary", f"[Awaiting re-approval] {summary}" if status == TENTATIVE else summary)
    event.add("description", _description(payload))
    event.add("location", ", ".join(payload.get("servers", [])))
    event.add("status", status)
    event.add("class", "PUBLIC")
    _outlook(event)
    event.add("x-microsoft-disallow-counter", "TRUE")
    org = vCalAddress(f"mailto:{organizer}")
    org.params["cn"] = vText("exmaint")
    event.add("organizer", org)
    attendee = vCalAddress(f"mailto:{organizer}")
    attendee.params.update({"cn": vText("Exchange maintenance notice (undisclosed recipients)"), "cutype": "GROUP",
                            "role": "NON-PARTICIPANT", "partstat": "NEEDS-ACTION", "rsvp": "FALSE"})
    event.add("attendee", attendee)
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
    if payload.get("change_id"):
        lines.append(f"Details: {conf.public_url()}/admin/changes/change/{payload['change_id']}/change/")
    return "\n".join(lines)


# --- the subscription feed ----------------------------------------------------------------------------------------

# What the feed shows of a change in each state it lists (see notifications.selectors.calendar_changes).
_FEED_STATUS = {"awaiting_approval": TENTATIVE, "scheduled": CONFIRMED, "running": CONFIRMED, "paused": CONFIRMED,
                "completed": CONFIRMED, "failed": CONFIRMED, "aborted": CONFIRMED, "closed": CONFIRMED}


def _zone() -> Timezone:
    """A VTIMEZONE of the organisation's zone: the calendar always has a component (RFC 5545 3.6 requires one),
    even when no window is listed, and clients learn the zone the windows are planned in."""
    name = getattr(settings, "EXMAINT", {}).get("BUSINESS_TIME_ZONE", "UTC") or "UTC"
    # The rules of the years the feed can show (past windows, windows planned ahead), not every year since 1970.
    today = date.today()
    return Timezone.from_tzinfo(ZoneInfo(name), first_date=today.replace(year=today.year - 2, day=1),
                                last_date=today.replace(year=today.year + 5, day=1))


def feed(changes: Iterable[Any], freezes: Iterable[Any], *, stamp: datetime) -> bytes:
    """Windows and freeze windows, for subscription (no METHOD: a published calendar): scheduled, running and
    paused windows (CONFIRMED), announced windows awaiting re-approval (TENTATIVE, as the mailed invite has them),
    and ended ones for a while (their outcome in the summary)."""
    cal = _calendar(name="Exchange maintenance")
    cal.add("refresh-interval", REFRESH, parameters={"VALUE": "DURATION"})
    cal.add("x-published-ttl", vDuration(REFRESH))
    zone = _zone()
    cal.add("x-wr-timezone", str(zone["TZID"]))
    cal.add_component(zone)
    for change in changes:
        invite_row = getattr(change, "calendar_invite", None)
        status = _FEED_STATUS.get(change.state, CONFIRMED)
        event = Event()
        event.add("uid", MailThread.for_change(change).uid)
        event.add("sequence", invite_row.sequence if invite_row is not None else 0)
        event.add("dtstamp", stamp)
        event.add("dtstart", change.window_start.astimezone(UTC))
        event.add("dtend", change.window_end.astimezone(UTC))
        label = "awaiting re-approval" if status == TENTATIVE else change.state
        event.add("summary", one_line(f"[{label}] {change.number}: {change.title}"))
        event.add("location", ", ".join(s.name for s in change.servers.all()))
        event.add("description", f"{change.source} {change.external_ref}; requested by {change.requested_by}\n"
                                 f"{conf.public_url()}/admin/changes/change/{change.pk}/change/")
        event.add("status", status)
        _outlook(event)
        cal.add_component(event)
    for freeze in freezes:
        event = Event()
        event.add("uid", f"freeze-{freeze.pk}@{conf.mail_domain()}")
        event.add("dtstamp", stamp)
        event.add("dtstart", freeze.start.astimezone(UTC))
        event.add("dtend", freeze.end.astimezone(UTC))
        scope = ", ".join(s.name for s in freeze.servers.all()) or freeze.dag_name or "all servers"
        event.add("summary", one_line(f"Change freeze ({scope})"))
        event.add("description", freeze.reason)
        event.add("status", CONFIRMED)
        _outlook(event)
        cal.add_component(event)
    return cal.to_ical()
