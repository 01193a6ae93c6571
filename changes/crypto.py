"""Symmetric encryption for secrets stored in the database (inventory passwords). Key from the environment."""
from __future__ import annotations

import base64
import hashlib
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings


@lru_cache(maxsize=4)
def _fernet(key: str | None, secret_key: str) -> Fernet:
    if key:
        return Fernet(key.encode())
    # DEBUG only (settings refuse a missing key otherwise): a stable key derived from SECRET_KEY.
    derived = hashlib.sha256(b"exmaint-field-key:" + secret_key.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(derived))


def encrypt(plaintext: str) -> str:
    return _fernet(settings.FIELD_ENCRYPTION_KEY, settings.SECRET_KEY).encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _fernet(settings.FIELD_ENCRYPTION_KEY, settings.SECRET_KEY).decrypt(token.encode()).decode()
    except InvalidToken:
        raise ValueError("stored secret cannot be decrypted with the configured FIELD_ENCRYPTION_KEY") from None
