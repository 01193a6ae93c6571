"""The notification settings, read from ``settings.EXMAINT_NOTIFICATIONS`` (filled from the environment in
config/settings.py) with the defaults below, so the app works before every variable is set."""
from __future__ import annotations

from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    "PUBLIC_URL": "http://localhost:8000",  # how links in mails and callbacks reach this service
    "BATCH_SIZE": 50,  # Bcc recipients per message
    "REMINDER_MINUTES": [24 * 60, 60],  # reminders before window_start
    "EMAIL_RETRY_HOURS": 24,  # keep retrying an e-mail this long, then failed
    "CALLBACK_RETRY_HOURS": 24,
    "BACKOFF_SECONDS": 30,  # first retry delay; doubles each attempt
    "BACKOFF_MAX_SECONDS": 3600,
    "LEASE_SECONDS": 300,  # a claimed delivery is the worker's for this long (renewed per batch)
    "CALLBACK_TIMEOUT_SECONDS": 10,
    "CALLBACK_ALLOWED_NETWORKS": [],  # CIDRs a callback may reach although private/loopback, e.g. 127.0.0.1/32
    "MAILBOX_LIMIT": 5000,  # affected mailboxes read per server at most (more: the first ones, and a note)
    "MAILBOX_PAGE_SIZE": 200,  # -ResultSize of each Get-Mailbox page (mailbox objects are large over PSRP)
    "CALENDAR_PAST_DAYS": 30,  # ended windows stay in the calendar feed this long
}


def get(name: str) -> Any:
    return getattr(settings, "EXMAINT_NOTIFICATIONS", {}).get(name, DEFAULTS[name])


def public_url() -> str:
    return str(get("PUBLIC_URL")).rstrip("/")


def mail_domain() -> str:
    """The domain of Message-IDs and calendar UIDs: the sender's, so they stay stable across hosts."""
    sender = str(getattr(settings, "DEFAULT_FROM_EMAIL", "") or "")
    domain = sender.rsplit("@", 1)[-1].strip(" >") if "@" in sender else ""
    return domain or "exmaint.invalid"
