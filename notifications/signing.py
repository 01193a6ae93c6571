"""Callback signatures: ``X-Exmaint-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>``.

The timestamp is signed with the body, so a receiver that refuses stale timestamps (say older than 5 minutes) also
refuses replays; ``X-Exmaint-Delivery`` stays the same across retries, for receivers that de-duplicate.
"""
from __future__ import annotations

import hashlib
import hmac
import time

TIMESTAMP_HEADER = "X-Exmaint-Timestamp"
SIGNATURE_HEADER = "X-Exmaint-Signature"
DELIVERY_HEADER = "X-Exmaint-Delivery"


def signature(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def sign(secret: str, body: bytes, *, now: float | None = None) -> dict[str, str]:
    """The headers of one request (timestamp: Unix seconds)."""
    timestamp = str(int(now if now is not None else time.time()))
    return {TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: signature(secret, timestamp, body)}


def verify(secret: str, headers: dict[str, str], body: bytes, *, tolerance: int = 300,
           now: float | None = None) -> bool:
    """What a receiver does (also used by the tests): constant-time compare, refuse stale timestamps."""
    timestamp = headers.get(TIMESTAMP_HEADER, "")
    if not timestamp.isdigit():
        return False
    if abs((now if now is not None else time.time()) - int(timestamp)) > tolerance:
        return False
    return hmac.compare_digest(signature(secret, timestamp, body), headers.get(SIGNATURE_HEADER, ""))
