"""API tokens: issued with a recognisable prefix, shown once, stored as their SHA-256 only, valid until they expire
(EXMAINT_API_TOKEN_DAYS, default 90) and replaced by rotation, which invalidates the old key at once.

A SHA-256 (not a slow password hash) is enough: the keys are 256 random bits, so there is nothing to guess, and the
lookup by digest stays one indexed query per request."""
from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from . import audit
from .aggregates import Joined, split
from .models import ApiToken
from .roles import remember_roles

PREFIX = "exm_"
# What the admin and the audit trail show of a key: the marker and 8 random characters (48 of its 256 bits).
SHOWN_CHARACTERS = len(PREFIX) + 8


class TokenRefused(Exception):
    """The key is unknown, or ``expired`` (then ``expires_at`` says when)."""

    def __init__(self, detail: str, *, expired: bool = False) -> None:
        super().__init__(detail)
        self.detail = detail
        self.expired = expired


@dataclass(frozen=True)
class Issued:
    """A key just issued: ``key`` is shown to its owner once and never stored."""

    key: str
    token: ApiToken


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def token_issue(user: Any, *, actor: Any, days: int | None = None) -> Issued:
    """Issue the user's API token, replacing (rotating) any previous one, which stops working at once. Valid for
    ``days`` (default EXMAINT_API_TOKEN_DAYS). Audited with the shown prefix and the expiry, never the key."""
    days = days or settings.EXMAINT["API_TOKEN_DAYS"]
    key = new_key()
    now = timezone.now()
    with transaction.atomic():
        previous = ApiToken.objects.select_for_update().filter(user=user).first()
        before = [previous.prefix, previous.expires_at] if previous else None
        token, _ = ApiToken.objects.update_or_create(user=user, defaults={
            "prefix": key[:SHOWN_CHARACTERS], "digest": digest(key), "created_at": now,
            "expires_at": now + timedelta(days=days)})
        audit.append(actor=actor, action="api_token.rotated" if previous else "api_token.issued",
                     object_type="user", object_id=user.pk, reason=f"API token of {user.get_username()}",
                     changes={"token": [before, [token.prefix, token.expires_at]]})
    return Issued(key, token)


def token_user(key: str, *, now: datetime | None = None) -> tuple[Any, ApiToken]:
    """The active user a key belongs to. Raises TokenRefused: unknown key, expired key, inactive user.

    One query reads the token, its user, the user's API client (its source) and roles, which every request reads
    next (changes.roles)."""
    token = (ApiToken.objects.select_related("user", "user__api_client")
             .annotate(role_names=Joined("user__groups__name")).filter(digest=digest(key)).first())
    if token is None or not token.user.is_active:
        raise TokenRefused("invalid token")
    remember_roles(token.user, split(token.role_names))
    if token.expires_at <= (now or timezone.now()):
        raise TokenRefused(f"the token {token.prefix}… expired on {token.expires_at:%Y-%m-%d %H:%M} UTC; ask for a "
                           "new one (manage.py rotate_api_token, or the admin's API tokens page)", expired=True)
    return token.user, token


def token_revoke(token: ApiToken, *, actor: Any) -> None:
    """Delete a token: its key stops working at once. Audited with the shown prefix."""
    with transaction.atomic():
        audit.append(actor=actor, action="api_token.revoked", object_type="user", object_id=token.user_id,
                     reason=f"API token of {token.user.get_username()}",
                     changes={"token": [[token.prefix, token.expires_at], None]})
        token.delete()
