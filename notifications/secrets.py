"""Per-client callback secrets: created with the client, rotatable, stored encrypted (changes.crypto)."""
from __future__ import annotations

import secrets as _secrets
from typing import Any

from django.db import transaction
from django.utils import timezone

from changes import audit, crypto, events
from changes.models import ApiClient

from .models import CallbackSecret


def callback_secret_rotate(client: ApiClient, *, actor: object) -> str:
    """Make (or replace) the client's secret and return it: the only time it is shown. Audited, never its value."""
    secret = _secrets.token_urlsafe(32)
    with transaction.atomic():
        existed = CallbackSecret.objects.filter(client=client).exists()
        CallbackSecret.objects.update_or_create(client=client, defaults={
            "secret_encrypted": crypto.encrypt(secret), "rotated_at": timezone.now()})
        audit.append(actor=actor, action="callback_secret.rotated" if existed else "callback_secret.created",
                     object_type="user", object_id=client.user_id, changes={"callback_secret": ["***", "***"]})
    return secret


def callback_secret_for(client_id: int | None) -> str:
    """The plain secret for signing; '' when the client has none (the sender then refuses to send unsigned)."""
    if client_id is None:
        return ""
    row = CallbackSecret.objects.filter(client_id=client_id).first()
    return crypto.decrypt(row.secret_encrypted) if row else ""


def on_client_created(event: str, **data: Any) -> str | None:
    """The events handler for a new API client: its callback secret, made in the creating transaction and returned
    as the line the creating command shows once."""
    if event != events.API_CLIENT_CREATED:
        return None
    secret = callback_secret_rotate(data["client"], actor=data["actor"])
    return f"Callback signing secret (X-Exmaint-Signature): {secret}"
