"""Symmetric encryption for secrets stored in the database (inventory passwords, callback secrets, …).

FIELD_ENCRYPTION_KEY is a comma-separated list of Fernet keys, newest first: new values are encrypted with the first,
stored values are read with whichever key made them (MultiFernet). To rotate: put a new key in front, run
`manage.py rotate_secrets` (re-encrypts every stored secret with it), then drop the old key.

Encrypted columns follow one convention so rotation finds them all, including those of other apps: a text field whose
name ends in ``_encrypted`` holds a token made by ``encrypt`` (or "" for none)."""
from __future__ import annotations

import base64
import hashlib
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings

ENCRYPTED_SUFFIX = "_encrypted"


def parse_keys(value: str | None) -> list[str]:
    """The configured keys in order, newest first; raises ValueError naming the position of a bad one."""
    keys = [k.strip() for k in (value or "").split(",") if k.strip()]
    for position, key in enumerate(keys, start=1):
        try:
            Fernet(key.encode())
        except ValueError:
            raise ValueError(f"key #{position} is not a Fernet key (32 url-safe base64 bytes)") from None
    return keys


@lru_cache(maxsize=4)
def _fernet(keys: str | None, secret_key: str) -> MultiFernet:
    parsed = parse_keys(keys)
    if parsed:
        return MultiFernet([Fernet(k.encode()) for k in parsed])
    # DEBUG only (settings refuse a missing key otherwise): a stable key derived from SECRET_KEY.
    derived = hashlib.sha256(b"exmaint-field-key:" + secret_key.encode()).digest()
    return MultiFernet([Fernet(base64.urlsafe_b64encode(derived))])


def _current() -> MultiFernet:
    return _fernet(settings.FIELD_ENCRYPTION_KEY, settings.SECRET_KEY)


def encrypt(plaintext: str) -> str:
    return _current().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _current().decrypt(token.encode()).decode()
    except InvalidToken:
        raise ValueError("stored secret cannot be decrypted with the configured FIELD_ENCRYPTION_KEY") from None


def rotate(token: str) -> str:
    """The same secret encrypted with the newest key. Raises ValueError if no configured key opens it."""
    try:
        return _current().rotate(token.encode()).decode()
    except InvalidToken:
        raise ValueError("stored secret cannot be decrypted with any configured FIELD_ENCRYPTION_KEY") from None
