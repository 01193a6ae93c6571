"""API keys for the test personas. The database keeps only a key's hash, so the keys issued here are remembered (by
hash) for the test run: a persona's second client uses the same key, as with the plaintext tokens before."""
from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.utils import timezone

from changes import tokens
from changes.models import ApiToken

_KEYS: dict[str, str] = {}


def api_key(user: Any) -> str:
    """The user's API key: its current one if issued here, else a new one (not audited, like the fixtures' rows)."""
    token = ApiToken.objects.filter(user=user).first()
    if token is not None and token.digest in _KEYS and token.expires_at > timezone.now():
        return _KEYS[token.digest]
    key = tokens.new_key()
    now = timezone.now()
    ApiToken.objects.update_or_create(user=user, defaults={
        "prefix": key[:tokens.SHOWN_CHARACTERS], "digest": tokens.digest(key), "created_at": now,
        "expires_at": now + timedelta(days=90)})
    _KEYS[tokens.digest(key)] = key
    return key
