"""The tamper-evident audit trail: serialized appends to a SHA-256 hash chain, and its verification.

Each event's hash covers the previous event's hash and a canonical JSON of the event, so altering, deleting,
inserting or reordering any row breaks the chain from that row on.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
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


def _change_links(pending: list[AuditEvent]) -> dict[str, str]:
    """The per-change link for a batch: each change's latest event hash on the chain (absent: its first event is
    GENESIS-linked). Read under the chain lock, so nobody appends in between. A change whose first event in the
    batch is its creation has nothing before it: no query (the create path's statement budget)."""
    first_action: dict[str, str] = {}
    for ev in pending:
        if ev.object_type == "change":
            first_action.setdefault(ev.object_id, ev.action)
    links: dict[str, str] = {}
    for object_id, action in first_action.items():
        if action == "change.created":
            continue
        last = (AuditEvent.objects.filter(object_type="change", object_id=object_id).order_by("-seq")
                .values_list("hash", flat=True).first())
        if last:
            links[object_id] = last
    return links


def compute_hash(prev_hash: str, body: dict[str, Any]) -> str:
    return hashlib.sha256(prev_hash.encode() + b"\n" + canonical(body)).hexdigest()


def _lock_chain() -> None:
    # PostgreSQL: a transaction-scoped advisory lock serializes appends across processes. SQLite: settings open
    # every transaction with BEGIN IMMEDIATE, which already takes the database's single write lock.
    if connection.vendor == "postgresql":
        with connection.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", [_PG_LOCK_KEY])


# The events of the innermost batch() block, written when it ends (None: outside any batch, appends write at once).
_batched: ContextVar[list[AuditEvent] | None] = ContextVar("exmaint_audit_batch", default=None)


@contextmanager
def batch() -> Iterator[None]:
    """Hold the appends made inside the block and write them together, in order, when it ends.

    The chain's lock is held from the write until the transaction commits: a service that opens the batch right
    inside its ``transaction.atomic()`` takes it at the end of its work, once, instead of at its first event. An
    exception inside the block writes nothing (the transaction rolls back anyway). Nested blocks join the outer one.
    Events appended inside are written with their seq, hash and time at the end of the block."""
    if _batched.get() is not None:
        yield
        return
    pending: list[AuditEvent] = []
    token = _batched.set(pending)
    try:
        yield
    finally:
        _batched.reset(token)
    if pending:
        _write(pending)


def flush() -> None:
    """Write the events the enclosing batch() holds now (nothing outside a batch): from here the chain is locked
    until the transaction ends, and readers of the chain in this transaction (a callback's audit head) see them."""
    pending = _batched.get()
    if pending:
        _write(list(pending))
        pending.clear()


def _chain_head() -> tuple[int, str]:
    """Lock the chain and read its newest (seq, hash). The head anchor's row lock serializes appends: under READ
    COMMITTED a ``FOR UPDATE`` that waited returns the row as the previous appender committed it, so locking and
    reading are one statement. A database without the anchor yet makes it under the advisory lock first."""
    row = AuditHead.objects.select_for_update().filter(id=1).values_list("seq", "hash").first()
    if row is not None:
        return row
    _lock_chain()
    last = AuditEvent.objects.order_by("-seq").values_list("seq", "hash").first() or (0, GENESIS)
    AuditHead.objects.bulk_create([AuditHead(id=1, seq=last[0], hash=last[1])], ignore_conflicts=True)
    return AuditHead.objects.select_for_update().filter(id=1).values_list("seq", "hash").get()


def _write(pending: list[AuditEvent]) -> None:
    """Chain and insert the events in one statement, then move the head anchor. Joins the caller's transaction."""
    with transaction.atomic(savepoint=False):
        seq, prev = _chain_head()
        # Microseconds survive both PostgreSQL and SQLite, so the stored time re-hashes identically.
        now = timezone.now().astimezone(UTC)
        links = _change_links(pending)
        for ev in pending:
            seq += 1
            ev.seq, ev.created_at, ev.prev_hash = seq, now, prev
            if ev.object_type == "change":
                ev.change_prev_hash = links.get(ev.object_id, GENESIS)
            ev.hash = prev = compute_hash(prev, _event_body(ev))
            if ev.object_type == "change":
                links[ev.object_id] = ev.hash
        if connection.vendor == "postgresql":
            _insert_moving_head(pending)
        else:
            AuditEvent.objects.bulk_create(pending)
            AuditHead.objects.filter(id=1).update(seq=seq, hash=prev)
        for ev in pending:
            anchors.after_append(ev)  # every N events and at a window's end: the head goes outside the database


_INSERT_COLUMNS = ("seq", "created_at", "actor", "request_id", "action", "object_type", "object_id", "changes",
                   "reason", "change_prev_hash", "prev_hash", "hash")


def _insert_moving_head(pending: list[AuditEvent]) -> None:
    """PostgreSQL: the events and the head anchor's move in one statement (a data-modifying WITH)."""
    row = "(" + ", ".join("%s::jsonb" if c == "changes" else "%s" for c in _INSERT_COLUMNS) + ")"
    params: list[Any] = [pending[-1].seq, pending[-1].hash]
    for ev in pending:
        params += [json.dumps(ev.changes) if c == "changes" else getattr(ev, c) for c in _INSERT_COLUMNS]
    with connection.cursor() as cur:
        cur.execute(
            "WITH head AS (UPDATE changes_audithead SET seq = %s, hash = %s WHERE id = 1) "  # noqa: S608 - constants
            f"INSERT INTO changes_auditevent ({', '.join(_INSERT_COLUMNS)}) VALUES {', '.join([row] * len(pending))} "
            "RETURNING id", params)
        for ev, (pk,) in zip(pending, cur.fetchall(), strict=True):
            ev.pk, ev._state.adding, ev._state.db = pk, False, connection.alias


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
    """Append one event to the chain. Joins the caller's transaction so the event commits with the change it records.
    Inside a batch() block the event is written (and gets its seq and hash) when the block ends."""
    if obj is not None:
        object_type = object_type or obj._meta.model_name
        object_id = object_id or obj.pk
    ev = AuditEvent(
        actor=actor_label(actor),
        request_id=(request_id or current_request_id())[:64],
        action=action,
        object_type=object_type,
        object_id=str(object_id),
        changes=_jsonable(changes or {}),
        reason=reason,
    )
    pending = _batched.get()
    if pending is not None:
        pending.append(ev)
    else:
        _write([ev])
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
        anchor = AuditHead.objects.filter(id=1).values_list("seq", "hash").first()
        if connection.vendor == "postgresql":
            return _verify_rows(_pg_rows(), anchor, expected_head)
        return _verify_rows(_orm_rows(), anchor, expected_head)


# PostgreSQL hands over the time already in the text the canonical JSON holds (datetime.isoformat() of the UTC
# time: microseconds only when there are some) and the changes as JSON text: nothing to parse per row but that.
_PG_SELECT = """
    SELECT seq, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS')
              || CASE WHEN extract(microseconds FROM created_at)::bigint % 1000000 = 0 THEN ''
                      ELSE to_char(created_at AT TIME ZONE 'UTC', '.US') END || '+00:00',
           actor, request_id, action, object_type, object_id, changes::text, reason, change_prev_hash, prev_hash,
           hash
    FROM changes_auditevent ORDER BY seq"""


def _orm_rows() -> Iterator[tuple[Any, ...]]:
    rows = AuditEvent.objects.order_by("seq").values_list(
        *_BODY_FIELDS, "change_prev_hash", "prev_hash", "hash").iterator(chunk_size=5000)
    for seq, created_at, actor, request_id, action, object_type, object_id, changes, reason, change_prev, prev_hash, \
            digest in rows:
        yield (seq, _jsonable(created_at), actor, request_id, action, object_type, object_id, json.dumps(changes),
               reason, change_prev, prev_hash, digest)


def _pg_rows() -> Iterator[tuple[Any, ...]]:
    # A server-side cursor in the snapshot's transaction, fetched in large batches: memory stays flat.
    with connection.connection.cursor(name="exmaint_verify_audit") as cur:
        cur.itersize = 20000
        cur.execute(_PG_SELECT)
        yield from cur


def _verify_rows(rows: Iterable[tuple[Any, ...]], anchor: tuple[int, str] | None,
                 expected_head: str | None) -> VerifyResult:
    """``rows``: (seq, created_at as its canonical text, actor, request_id, action, object_type, object_id, changes
    as JSON text, reason, change_prev_hash or None, prev_hash, hash), in seq order."""
    prev = GENESIS
    count = 0
    head_found = None if expected_head is None else False
    sha256, text = hashlib.sha256, _json_string
    changes_json = _ChangesCache()
    for seq, created_at, actor, request_id, action, object_type, object_id, changes, reason, change_prev, \
            prev_hash, digest in rows:
        count += 1
        if seq != count:
            problem = "missing or inserted event(s)" if seq > count else "duplicate sequence number"
            return VerifyResult(False, count - 1, prev, seq, f"expected seq {count}, found {seq}: {problem}")
        if prev_hash != prev:
            return VerifyResult(False, count - 1, prev, seq, "prev_hash does not match the previous event's hash")
        # canonical() of the event body, written out: its keys in sorted order, each value as the encoder puts it
        # (change_prev_hash sorts between actor and changes; events from before the per-change link lack it).
        link = "" if change_prev is None else f'"change_prev_hash":{text(change_prev)},'
        line = (f'{{"action":{text(action)},"actor":{text(actor)},{link}"changes":{changes_json[changes]},'
                f'"created_at":"{created_at}","object_id":{text(object_id)},"object_type":{text(object_type)},'
                f'"reason":{text(reason)},"request_id":{text(request_id)},"seq":{seq}}}')
        if sha256(f"{prev}\n{line}".encode()).hexdigest() != digest:
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


# How the canonical encoder writes a string (ensure_ascii off): the same C function json uses for it.
_json_string = json.encoder.encode_basestring


class _ChangesCache(dict):
    """changes as JSON text → its canonical JSON. Events repeat the same few changes (state transitions, step
    results), so a text seen recently is not parsed again; bounded, so memory stays flat."""

    LIMIT = 4096

    def __missing__(self, changes: str) -> str:
        if len(self) >= self.LIMIT:
            self.clear()
        self[changes] = encoded = _canonical_encoder.encode(json.loads(changes))
        return encoded


def head() -> str:
    last = AuditEvent.objects.order_by("-seq").only("hash").first()
    return last.hash if last else GENESIS
