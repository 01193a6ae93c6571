"""The tamper-evident audit trail: serialized appends to a SHA-256 hash chain, and its verification.

Each event's hash covers the previous event's hash and a canonical JSON of the event, so altering, deleting,
inserting or reordering any row breaks the chain from that row on.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from . import anchors
from .models import AuditEvent, AuditHead
from .request_context import current_request_id

GENESIS = "0" * 64
# Any constant works; it only has to be the same for every writer of the chain.
_PG_LOCK_KEY = 0x65786D61696E74  # "exmaint"


def actor_label(user: Any) -> str:
    """How an actor is named on the chain: API clients, users and system components are told apart."""
    if user is None:
        return "system:exmaint"
    if isinstance(user, str):
        return user
    if hasattr(user, "api_client"):
        return f"client:{user.username}"
    return f"user:{user.username}"


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [_jsonable(v) for v in value]
        return sorted(items, key=str) if isinstance(value, set | frozenset) else items
    return value


# The one canonical encoder: the appender and the verifier hash the same bytes.
_canonical_encoder = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical(event: dict[str, Any]) -> bytes:
    return _canonical_encoder.encode(event).encode()


def _event_body(ev: AuditEvent) -> dict[str, Any]:
    body = {
        "seq": ev.seq,
        "created_at": ev.created_at.astimezone(UTC).isoformat(),
        "actor": ev.actor,
        "request_id": ev.request_id,
        "action": ev.action,
        "object_type": ev.object_type,
        "object_id": ev.object_id,
        "changes": ev.changes,
        "reason": ev.reason,
    }
    if ev.change_prev_hash is not None:  # events from before the per-change link hash as they always did
        body["change_prev_hash"] = ev.change_prev_hash
    return body


def _change_prev_hash(object_type: str, object_id: str) -> str | None:
    """The per-change link of a new event: the hash of the same change's previous event (GENESIS for its first).
    Read under the chain lock, so it is the change's latest event. None for events of other objects."""
    if object_type != "change":
        return None
    last = (AuditEvent.objects.filter(object_type="change", object_id=object_id).order_by("-seq")
            .values_list("hash", flat=True).first())
    return last or GENESIS


def compute_hash(prev_hash: str, body: dict[str, Any]) -> str:
    return hashlib.sha256(prev_hash.encode() + b"\n" + canonical(body)).hexdigest()


def _lock_chain() -> None:
    # PostgreSQL: a transaction-scoped advisory lock serializes appends across processes. SQLite: settings open
    # every transaction with BEGIN IMMEDIATE, which already takes the database's single write lock.
    if connection.vendor == "postgresql":
        with connection.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", [_PG_LOCK_KEY])


def append(
    *,
    actor: Any,
    action: str,
    obj: Any = None,
    object_type: str = "",
    object_id: str | int = "",
    changes: dict[str, Any] | None = None,
    reason: str = "",
    request_id: str = "",
) -> AuditEvent:
    """Append one event to the chain. Joins the caller's transaction so the event commits with the change it records."""
    if obj is not None:
        object_type = object_type or obj._meta.model_name
        object_id = object_id or obj.pk
    request_id = request_id or current_request_id()
    with transaction.atomic():
        _lock_chain()
        last = AuditEvent.objects.order_by("-seq").only("seq", "hash").first()
        ev = AuditEvent(
            seq=(last.seq + 1) if last else 1,
            # Microseconds survive both PostgreSQL and SQLite, so the stored time re-hashes identically.
            created_at=timezone.now().astimezone(UTC),
            actor=actor_label(actor),
            request_id=request_id[:64],
            action=action,
            object_type=object_type,
            object_id=str(object_id),
            changes=_jsonable(changes or {}),
            reason=reason,
            prev_hash=last.hash if last else GENESIS,
            change_prev_hash=_change_prev_hash(object_type, str(object_id)),
        )
        ev.hash = compute_hash(ev.prev_hash, _event_body(ev))
        ev.save(force_insert=True)
        AuditHead.objects.update_or_create(id=1, defaults={"seq": ev.seq, "hash": ev.hash})
        anchors.after_append(ev)  # every N events and at a window's end: the head goes outside the database
    return ev


@dataclass
class VerifyResult:
    ok: bool
    events: int
    head: str
    first_bad_seq: int | None = None
    problem: str = ""
    head_found: bool | None = None


# The hashed fields, in the order verify() reads them (then change_prev_hash when set, prev_hash and hash);
# _event_body() names the same.
_BODY_FIELDS = ("seq", "created_at", "actor", "request_id", "action", "object_type", "object_id", "changes", "reason")


@contextmanager
def _snapshot() -> Iterator[None]:
    """One consistent view of the chain and its head anchor while appends go on.

    PostgreSQL: a read-only REPEATABLE READ transaction, so the events and the anchor come from one snapshot (read
    in autocommit, an event appended between the walk and the anchor read looked like events removed from the end)
    and the rows stream through a server-side cursor. SQLite: the settings begin every transaction IMMEDIATE, which
    holds the single write lock, so appends wait until the walk is done."""
    outermost = not connection.in_atomic_block  # inside a caller's transaction, its isolation level holds
    with transaction.atomic():
        if connection.vendor == "postgresql" and outermost:
            with connection.cursor() as cur:
                cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        yield


def verify(expected_head: str | None = None) -> VerifyResult:
    """Walk the whole chain in sequence order; name the first event that does not fit.

    With ``expected_head``, also require that this hash is on the intact chain (an auditor checking a report).
    Streams plain rows (no model instances) from one snapshot; memory stays flat however long the chain.
    """
    with _snapshot():
        return _verify_rows(
            AuditEvent.objects.order_by("seq").values_list(*_BODY_FIELDS, "change_prev_hash", "prev_hash", "hash")
            .iterator(chunk_size=5000),
            AuditHead.objects.filter(id=1).values_list("seq", "hash").first(), expected_head)


def _verify_rows(rows: Iterable[tuple[Any, ...]], anchor: tuple[int, str] | None,
                 expected_head: str | None) -> VerifyResult:
    prev = GENESIS
    count = 0
    head_found = None if expected_head is None else False
    sha256, dumps = hashlib.sha256, _canonical_encoder.encode
    for seq, created_at, actor, request_id, action, object_type, object_id, changes, reason, change_prev, \
            prev_hash, digest in rows:
        count += 1
        if seq != count:
            problem = "missing or inserted event(s)" if seq > count else "duplicate sequence number"
            return VerifyResult(False, count - 1, prev, seq, f"expected seq {count}, found {seq}: {problem}")
        if prev_hash != prev:
            return VerifyResult(False, count - 1, prev, seq, "prev_hash does not match the previous event's hash")
        body = {"seq": seq, "created_at": created_at.astimezone(UTC).isoformat(), "actor": actor,
                "request_id": request_id, "action": action, "object_type": object_type, "object_id": object_id,
                "changes": changes, "reason": reason}
        if change_prev is not None:
            body["change_prev_hash"] = change_prev
        if sha256(prev.encode() + b"\n" + dumps(body).encode()).hexdigest() != digest:
            return VerifyResult(False, count - 1, prev, seq, "content does not match its hash (altered)")
        prev = digest
        if digest == expected_head:
            head_found = True
    if anchor is not None and (anchor[0] != count or anchor[1] != prev):
        return VerifyResult(False, count, prev, count + 1 if anchor[0] > count else anchor[0],
                            f"the chain ends at #{count} but its head anchor says #{anchor[0]}: events were removed "
                            "from the end or the anchor was altered")
    result = VerifyResult(True, count, prev, head_found=head_found)
    if expected_head is not None and not head_found:
        result.ok = False
        result.problem = f"head {expected_head} is not on the chain"
    return result


def head() -> str:
    last = AuditEvent.objects.order_by("-seq").only("hash").first()
    return last.hash if last else GENESIS
