"""Business rules that need no database: approval counts, the approval fingerprint, window checks."""
from __future__ import annotations

import hashlib
import json
import zoneinfo
from collections.abc import Iterable
from datetime import datetime, timedelta

from django.conf import settings

from .errors import WindowInvalid


def approvals_required(change_type: str, risk: str) -> int:
    """How many distinct approvers a change needs. Standard changes are pre-approved (changes.catalogue checks that
    they fit their template), except at high risk, which is never standard: counted as a normal change."""
    policy = settings.EXMAINT
    if change_type == "standard" and risk != "high":
        return 0
    if change_type == "emergency":
        return policy["APPROVALS_EMERGENCY"]
    return {
        "low": policy["APPROVALS_NORMAL_LOW"],
        "medium": policy["APPROVALS_NORMAL_MEDIUM"],
        "high": policy["APPROVALS_NORMAL_HIGH"],
    }[risk]


def approval_fingerprint(server_names: Iterable[str], plan: str, window_start: datetime, window_end: datetime,
                         *, work: dict | None = None) -> str:
    """SHA-256 over what an approver approves: which servers, which plan and work, when. Any change voids the
    approval. The default work (hold) is left out, so approvals given before work kinds existed still count."""
    body = {
        "servers": sorted(n.upper() for n in server_names),
        "plan": plan,
        "window_start": window_start.timestamp(),
        "window_end": window_end.timestamp(),
    }
    if work and work.get("kind", "hold") != "hold":
        body["work"] = work
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def check_window_shape(window_start: datetime, window_end: datetime) -> None:
    """The window must be ordered and no longer than the configured maximum."""
    if window_start.tzinfo is None or window_end.tzinfo is None:
        raise WindowInvalid("window_start and window_end must carry a UTC offset")
    if window_end <= window_start:
        raise WindowInvalid("window_end must be after window_start")
    maximum = timedelta(minutes=settings.EXMAINT["MAX_WINDOW_MINUTES"])
    if window_end - window_start > maximum:
        hours = maximum.total_seconds() / 3600
        raise WindowInvalid(f"the window is longer than the maximum of {hours:g} h")


def touches_business_hours(window_start: datetime, window_end: datetime) -> bool:
    """True when any part of the window falls in business hours on a business day (business time zone)."""
    policy = settings.EXMAINT
    tz = zoneinfo.ZoneInfo(policy["BUSINESS_TIME_ZONE"])
    start, end = window_start.astimezone(tz), window_end.astimezone(tz)
    day = start.date()
    while day <= end.date():
        if day.isoweekday() in policy["BUSINESS_DAYS"]:
            open_ = datetime.combine(day, policy["BUSINESS_HOURS_START"], tz)
            close = datetime.combine(day, policy["BUSINESS_HOURS_END"], tz)
            if start < close and end > open_:
                return True
        day += timedelta(days=1)
    return False
