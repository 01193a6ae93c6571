"""The outbox and the secrets notifications need. Rows are written by notifications.outbox (inside the transaction of
the state change that causes them) and moved by notifications.dispatch (compare-and-set, one short transaction each)."""
from __future__ import annotations

import hashlib
import uuid

from django.conf import settings
from django.db import models

from changes.models import ApiClient, Change


class Delivery(models.Model):
    """One notification to send: an e-mail (to one or more Bcc batches) or one signed callback to the ITSM.

    ``dedupe_key`` is unique: the same event can never create two deliveries. A worker claims a row by
    compare-and-set (status + lease); e-mail batches are recorded one by one (``batches_sent``) so a worker killed
    mid-send is resumed after the last recorded batch.
    """

    class Channel(models.TextChoices):
        EMAIL = "email"
        CALLBACK = "callback"

    class Kind(models.TextChoices):
        ANNOUNCEMENT = "announcement", "Window announced (invite)"
        CANCELLATION = "cancellation", "Window cancelled (invite cancelled)"
        REMINDER = "reminder", "Reminder before the window"
        START = "start", "Window started"
        END = "end", "Window ended"
        APPROVAL_REQUEST = "approval_request", "Approval requested"
        ALERT = "alert", "Operator alert"
        STATE_CHANGE = "state_change", "State change callback"
        AUDIT_ANCHOR = "audit_anchor", "Audit chain anchor (auditors)"

    class Status(models.TextChoices):
        PENDING = "pending"
        SENDING = "sending"
        SENT = "sent"
        FAILED = "failed"
        CANCELLED = "cancelled"

    change = models.ForeignKey(Change, on_delete=models.PROTECT, null=True, blank=True, related_name="deliveries")
    channel = models.CharField(max_length=10, choices=Channel.choices)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    dedupe_key = models.CharField(max_length=200, unique=True)
    payload = models.JSONField(default=dict, blank=True, help_text="What to send, fixed when the event happened.")
    recipients = models.JSONField(default=list, blank=True, help_text="E-mail addresses, frozen before batch 1.")
    recipients_resolved = models.BooleanField(default=False)
    recipients_count = models.PositiveIntegerField(default=0)
    batch_size = models.PositiveIntegerField(default=50)
    batches_sent = models.PositiveIntegerField(default=0)
    batch_in_flight = models.PositiveIntegerField(
        null=True, blank=True, help_text="The batch (or callback) being handed to the SMTP server or the ITSM and not "
                                         "yet recorded; found set by a new owner, it is in doubt.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    not_before = models.DateTimeField(help_text="Not sent before this time (reminders).")
    next_attempt_at = models.DateTimeField(help_text="When a worker may try (again).")
    first_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    recipients_problems = models.TextField(
        blank=True, help_text="Who could not be resolved when the recipients were frozen (an unreadable server's "
                              "affected users, the mailbox cap); also in the notification's audit events.")
    response_status = models.PositiveSmallIntegerField(null=True, blank=True, help_text="Callback: last HTTP status.")
    sent_at = models.DateTimeField(null=True, blank=True)
    message_id = models.CharField(max_length=200, blank=True)
    permanent_error = models.BooleanField(
        default=False, help_text="Failed for a reason retrying cannot fix (the message could not be built from the "
                                 "change's data, or the SMTP server refused it for good): an operator alert was "
                                 "raised, and an edit of the change sends it again, rebuilt from the edited change.")
    lease_owner = models.CharField(max_length=200, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at", "id"]
        verbose_name_plural = "deliveries"
        indexes = [models.Index(fields=["status", "next_attempt_at"])]

    def __str__(self) -> str:
        return f"{self.channel}/{self.kind} {self.dedupe_key} ({self.status})"

    @property
    def batches_total(self) -> int:
        if self.channel == self.Channel.CALLBACK:
            return 1
        size = max(1, self.batch_size)
        return (self.recipients_count + size - 1) // size if self.recipients_resolved else 0


class CalendarInvite(models.Model):
    """The invite state of one change: the UID is stable, SEQUENCE grows each time the invite is re-sent."""

    change = models.OneToOneField(Change, on_delete=models.PROTECT, related_name="calendar_invite")
    sequence = models.PositiveIntegerField(default=0)
    window_start = models.DateTimeField()
    window_end = models.DateTimeField()
    cancelled = models.BooleanField(default=False)

    def __str__(self) -> str:
        return f"invite of {self.change.number} (#{self.sequence})"


def new_uid() -> str:
    return str(uuid.uuid4())


class MailThread(models.Model):
    """The mail identity of one change: the UID of its calendar entry and the root of its mail thread
    (References, Thread-Index). Random and stored, made with the change's first event, so a second installation
    or a restored database never reuses one and it does not change with DEFAULT_FROM_EMAIL. Changes announced
    before it existed keep the UID their invites went out with (migration 0005)."""

    change = models.OneToOneField(Change, on_delete=models.PROTECT, related_name="mail_thread")
    uid = models.CharField(max_length=255, unique=True, default=new_uid)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"mail thread of {self.change.number} ({self.uid})"

    @classmethod
    def for_change(cls, change: Change) -> MailThread:
        """The change's thread, made on first use (changes created before an event reached notifications)."""
        try:
            return change.mail_thread
        except cls.DoesNotExist:
            return cls.objects.get_or_create(change=change)[0]


class CallbackSecret(models.Model):
    """The HMAC key an API client's callbacks are signed with. Stored encrypted; shown once, when made or rotated."""

    client = models.OneToOneField(ApiClient, on_delete=models.CASCADE, related_name="callback_secret")
    secret_encrypted = models.TextField()
    rotated_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"callback secret of {self.client}"


class CalendarKey(models.Model):
    """A person's secret calendar-feed URL key. Only its SHA-256 is stored; the key is shown once when made."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="calendar_key")
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"calendar key of {self.user}"

    @staticmethod
    def hash(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()
