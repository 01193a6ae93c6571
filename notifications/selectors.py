"""Read-side queries of the notifications app."""
from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import Prefetch, Q, QuerySet
from django.utils import timezone

from changes import audit
from changes.models import Change, FreezeWindow, Server
from changes.selectors import change_list
from changes.states import HOLDS_SERVERS, WINDOW_ENDED, State

from . import conf
from .models import CalendarKey, Delivery


def delivery_list(change: Change) -> QuerySet[Delivery]:
    # The addresses themselves (thousands with affected mailboxes) are never listed; their count is.
    return Delivery.objects.filter(change=change).defer("recipients").order_by("created_at", "id")


def calendar_changes(user: Any, now: datetime | None = None) -> QuerySet[Change]:
    """The windows of the feed the user may see (changes.selectors.change_list): scheduled, running and paused ones;
    announced ones awaiting re-approval (their readers hold a tentative entry); and ended ones whose window ended
    less than CALENDAR_PAST_DAYS ago."""
    since = (now or timezone.now()) - timedelta(days=int(conf.get("CALENDAR_PAST_DAYS")))
    listed = (Q(state__in=HOLDS_SERVERS)
              | Q(state=State.AWAITING_APPROVAL, calendar_invite__isnull=False, calendar_invite__cancelled=False)
              | Q(state__in=[*WINDOW_ENDED, State.CLOSED], window_end__gte=since))
    # change_list already prefetches the servers.
    return change_list(user).filter(listed).select_related("calendar_invite", "mail_thread").order_by("window_start")


def calendar_freezes(now: datetime | None = None) -> QuerySet[FreezeWindow]:
    since = (now or timezone.now()) - timedelta(days=30)
    return FreezeWindow.objects.filter(end__gte=since).prefetch_related(
        Prefetch("servers", queryset=Server.objects.only("id", "name"))).order_by("start")


def calendar_user(key: str) -> Any:
    row = CalendarKey.objects.select_related("user").filter(key_hash=CalendarKey.hash(key)).first()
    return row.user if row is not None and row.user.is_active else None


def calendar_key_rotate(user: Any) -> str:
    """A new secret feed key for ``user`` (the old URL stops working); shown once. Audited, never the key (nor its
    hash: a feed URL grants read access to the calendar)."""
    key = secrets.token_urlsafe(32)
    with transaction.atomic():
        _, created = CalendarKey.objects.update_or_create(user=user, defaults={"key_hash": CalendarKey.hash(key)})
        audit.append(actor=user, action="calendar_key.created" if created else "calendar_key.rotated",
                     object_type="user", object_id=user.pk, changes={"calendar_key": ["***", "***"]})
    return key
