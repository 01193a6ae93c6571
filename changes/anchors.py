"""Anchors of the audit chain outside PostgreSQL, and the check of the chain against them.

The hash chain (changes/audit.py) shows any edit, insertion, reordering or deletion to someone who knows a hash
from before it. Inside the database nobody does: an attacker with the tables' owner rights can rewrite the events
and recompute every hash after the forgery, and the chain verifies. So the head is also written where that attacker
cannot reach: every ``EXMAINT_AUDIT_ANCHOR_EVERY`` events, at every window's end and for every report, the event's
seq, hash and time are appended to the configured sinks (a JSON-lines file, fsync'd, and/or syslog; the auditors'
e-mail through the notifications outbox, which listens to ``events.AUDIT_ANCHORED``) and, with ``EXMAINT_TSA_URL``,
stamped by an RFC 3161 time-stamping authority (the token's message imprint is the event's SHA-256 hash itself, so
``openssl ts -verify -digest <hash>`` checks it too).

``verify_anchors`` reads those external lines, never the ``AuditAnchor`` rows: each anchored seq must be on the
intact chain with that hash, and each token must verify against the auditors' trust roots. On failure it names the
first event after the last good anchor: everything from there on can no longer be trusted.

Public: ``after_append`` (the hook audit.append calls), ``anchor_event``, ``anchors_covering`` (the report),
``read_anchor_file``, ``verify_anchors``.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import logging.handlers
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from . import events
from .models import AuditAnchor, AuditEvent
from .states import WINDOW_ENDED

if TYPE_CHECKING:
    from .audit import VerifyResult

log = logging.getLogger(__name__)

RECORD_TYPE = "exmaint.audit-anchor"  # every line names what it is, so a shared syslog stream can be filtered


def _conf() -> dict[str, Any]:
    return settings.EXMAINT_AUDIT_ANCHORS


# --- writing anchors ------------------------------------------------------------------------------------------------


def after_append(ev: AuditEvent) -> None:
    """Called by ``audit.append`` inside its transaction: anchor this event once it commits, if it is due.

    Due: every N-th event, and the transition that ends a window (completed, aborted). The anchor is written after
    the commit (an anchor of an event that rolled back would be a false alarm later) and its failure is logged, never
    raised into the caller whose work has committed."""
    reason = ""
    state = (ev.changes or {}).get("state") if ev.action == "change.transition" else None
    new_state = state[1] if isinstance(state, list) and len(state) == 2 and isinstance(state[1], str) else ""
    if ev.seq % _conf()["EVERY"] == 0:
        reason = f"every {_conf()['EVERY']} events"
    elif new_state in WINDOW_ENDED:
        reason = f"window end: {ev.object_type} {ev.object_id} {new_state}"
    if reason:
        transaction.on_commit(partial(_anchor_logged, ev.seq, ev.hash, ev.created_at, reason), robust=True)


def _anchor_logged(seq: int, digest: str, event_created_at: datetime, reason: str) -> None:
    try:
        write_anchor(seq, digest, event_created_at, reason)
    except Exception:  # noqa: BLE001 - an anchor that could not be written must not fail the committed work
        log.exception("audit anchor #%s (%s) could not be written", seq, reason)


def anchor_event(seq: int, reason: str) -> AuditAnchor | None:
    """Anchor the event ``seq`` now unless it is anchored already (the report anchors the head it is built from).

    Returns the anchor, or None when there is no such event (an empty chain)."""
    existing = AuditAnchor.objects.filter(seq=seq).first()
    if existing is not None:
        return existing
    ev = AuditEvent.objects.filter(seq=seq).only("seq", "hash", "created_at").first()
    if ev is None:
        return None
    return write_anchor(ev.seq, ev.hash, ev.created_at, reason)


def write_anchor(seq: int, digest: str, event_created_at: datetime, reason: str) -> AuditAnchor:
    """Stamp (when a TSA is configured), append the line to every sink, record the row. Idempotent per seq.

    A TSA that does not answer leaves the anchor without a token (logged): the sinks matter more than the stamp."""
    existing = AuditAnchor.objects.filter(seq=seq).first()
    if existing is not None:
        return existing
    token, tsa_time = b"", None
    if _conf()["TSA_URL"]:
        try:
            token = request_timestamp(digest)
            tsa_time = token_time(token)
        except Exception:  # noqa: BLE001 - any TSA failure (network, refusal, a bad reply): anchor without a token
            log.exception("the TSA %s did not stamp audit anchor #%s; written without a token", _conf()["TSA_URL"],
                          seq)
            token = b""
    now = timezone.now().astimezone(UTC)
    line = _line(seq, digest, event_created_at, now, reason, token)
    sinks = []
    for name, sink in (("file", _write_file), ("syslog", _write_syslog)):
        try:
            if sink(line):
                sinks.append(name)
        except OSError:
            log.exception("audit anchor #%s could not be written to the %s sink", seq, name)
    try:
        with transaction.atomic():
            # Other copies (the auditors' e-mail, through the notifications outbox) commit with the row.
            sinks += events.emit(events.AUDIT_ANCHORED, seq=seq, hash=digest, line=line)
            if not sinks:
                log.error("audit anchor #%s reached no sink outside the database (EXMAINT_AUDIT_ANCHOR_FILE/_SYSLOG,"
                          " auditors' e-mail)", seq)
            return AuditAnchor.objects.create(
                seq=seq, hash=digest, event_created_at=event_created_at, created_at=now, reason=reason[:120],
                sinks=sinks, tsa_token=token, tsa_time=tsa_time)
    except IntegrityError:  # another process anchored the same event meanwhile: one row, both lines are equal
        return AuditAnchor.objects.get(seq=seq)


def _line(seq: int, digest: str, event_created_at: datetime, anchored_at: datetime, reason: str,
          token: bytes) -> str:
    record = {"type": RECORD_TYPE, "seq": seq, "hash": digest,
              "event_created_at": event_created_at.astimezone(UTC).isoformat(),
              "anchored_at": anchored_at.isoformat(), "reason": reason,
              "tsa_token": base64.b64encode(token).decode() if token else None}
    # One line whatever the reason says: json.dumps escapes control characters.
    return json.dumps(record, sort_keys=True, separators=(",", ":"))


def _write_file(line: str) -> bool:
    path = _conf()["FILE"]
    if not path:
        return False
    created = not os.path.exists(path)
    # O_APPEND and one write() per line: each line lands whole at the end whatever other processes append; fsync
    # before the anchor counts as written.
    data = (line + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        if os.write(fd, data) != len(data):
            raise OSError(f"{path}: short write (disk full?)")
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:  # the new directory entry must survive a crash too
        dir_fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return True


class _SysLog(logging.handlers.SysLogHandler):
    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's naming
        raise  # the stock handler prints and carries on; an anchor must know it was not sent


def _write_syslog(line: str) -> bool:
    target = _conf()["SYSLOG"]
    if not target:
        return False
    host, _, port = target.rpartition(":")
    address: str | tuple[str, int] = (host, int(port)) if host and port.isdigit() else target
    handler = _SysLog(address=address, facility=logging.handlers.SysLogHandler.LOG_AUTH)
    try:
        handler.emit(logging.LogRecord("exmaint.audit", logging.INFO, __file__, 0, "exmaint-audit: %s", (line,),
                                       None))
    finally:
        handler.close()
    return True


# --- RFC 3161 ---------------------------------------------------------------------------------------------------------


def request_timestamp(digest: str) -> bytes:
    """Ask the configured TSA to stamp a chain hash; return the DER TimeStampToken.

    The message imprint is the event's SHA-256 hash (already a digest of everything up to that event). pyHanko
    builds the request with a nonce and checks the reply's status and nonce."""
    from pyhanko.sign.timestamps.requests_client import RequestsHTTPTimeStamper

    stamper = RequestsHTTPTimeStamper(_conf()["TSA_URL"], timeout=_conf()["TSA_TIMEOUT_SECONDS"])
    token = asyncio.run(stamper.async_timestamp(bytes.fromhex(digest), "sha256"))
    return token.dump()


def token_time(token: bytes) -> datetime:
    """The TSA's genTime of a DER TimeStampToken."""
    from asn1crypto import cms

    info = cms.ContentInfo.load(token)["content"]["encap_content_info"]["content"].parsed
    return info["gen_time"].native


def load_trust_roots(path: str | Path) -> list[bytes]:
    """The DER certificates of a PEM file (the TSA's roots an auditor trusts). Raises ValueError if there are none."""
    from asn1crypto import pem

    data = Path(path).read_bytes()
    roots = [der for kind, _, der in pem.unarmor(data, multiple=True) if kind == "CERTIFICATE"] \
        if pem.detect(data) else [data]
    if not roots:
        raise ValueError(f"{path}: no certificate")
    return roots


class TokenChecker:
    """Checks RFC 3161 tokens against trust roots: does a token stamp the given hash, signed intact by a TSA
    certificate that chains to a root with the timeStamping usage? One validation context and one event loop serve
    every token (validating a thousand anchors' tokens takes seconds, not tens of seconds)."""

    def __init__(self, roots: list[bytes]) -> None:
        from asn1crypto import x509
        from pyhanko_certvalidator import ValidationContext

        self._context = ValidationContext(trust_roots=[x509.Certificate.load(der) for der in roots])
        self._runner = asyncio.Runner()

    def check(self, token: bytes, digest: str) -> tuple[bool, str]:
        """(ok, what is wrong or the TSA's time)."""
        from asn1crypto import cms
        from pyhanko.sign.validation.generic_cms import validate_tst_signed_data
        from pyhanko.sign.validation.status import TimestampSignatureStatus

        try:
            signed_data = cms.ContentInfo.load(token)["content"]
            kwargs = self._runner.run(validate_tst_signed_data(signed_data, self._context,
                                                               lambda _algo: bytes.fromhex(digest)))
            status = TimestampSignatureStatus(**kwargs)
        except Exception as exc:  # noqa: BLE001 - a malformed token is a failed check, with its reason
            return False, f"the TSA token cannot be read: {type(exc).__name__}: {exc}"
        if not status.intact:
            return False, "the TSA token does not stamp this hash"
        if not status.valid:
            return False, "the TSA token's signature is invalid"
        if not status.trusted:
            return False, "the TSA token's certificate does not chain to the given trust roots"
        return True, status.timestamp.isoformat()

    def close(self) -> None:
        self._runner.close()


def check_token(token: bytes, digest: str, roots: list[bytes]) -> tuple[bool, str]:
    """One token: see TokenChecker."""
    checker = TokenChecker(roots)
    try:
        return checker.check(token, digest)
    finally:
        checker.close()


# --- reading and checking ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AnchorLine:
    """One anchor as read from an external sink."""

    seq: int
    hash: str
    event_created_at: str
    anchored_at: str
    reason: str
    tsa_token: bytes
    where: str  # file:line, for messages


def read_anchor_file(path: str | Path) -> list[AnchorLine]:
    """Parse a JSON-lines anchor file (lines of other kinds, as in a syslog extract, are skipped).

    Raises ValueError naming the line that is not a well-formed anchor."""
    anchors = []
    with open(path, encoding="utf-8") as fh:
        for number, raw in enumerate(fh, 1):
            text = raw.strip()
            start = text.find("{")
            if start < 0 or RECORD_TYPE not in text:
                continue
            where = f"{path}:{number}"
            try:
                record = json.loads(text[start:])
                seq, digest = record["seq"], record["hash"]
                if not isinstance(seq, int) or seq < 1 or not isinstance(digest, str) or len(digest) != 64:
                    raise ValueError("seq or hash out of shape")
                bytes.fromhex(digest)
                token = base64.b64decode(record.get("tsa_token") or "", validate=True)
            except (ValueError, KeyError, TypeError, binascii.Error) as exc:
                raise ValueError(f"{where}: not a well-formed audit anchor ({exc})") from None
            anchors.append(AnchorLine(seq, digest.lower(), str(record.get("event_created_at", "")),
                                      str(record.get("anchored_at", "")), str(record.get("reason", "")), token,
                                      where))
    return anchors


@dataclass
class AnchorsResult:
    """The chain checked against external anchors."""

    ok: bool
    events: int  # events on the intact chain
    anchors: int  # distinct anchored events read
    last_good_seq: int = 0  # the newest anchor that checked out (0: none)
    first_bad_seq: int | None = None  # the first event after the last good anchor, on failure
    problem: str = ""
    tokens_checked: int = 0
    tokens_unchecked: int = 0  # tokens present but no trust roots given
    unanchored: int = 0  # events after the last good anchor (protected only by the database until the next one)
    notes: list[str] = field(default_factory=list)


def verify_anchors(anchors: Iterable[AnchorLine], *, trust_roots: list[bytes] | None = None) -> AnchorsResult:
    """Check the database's chain against anchors read from outside it.

    The chain must be intact (``audit.verify``) and every anchored seq must be on it with the anchored hash (an
    intact chain and one matching hash prove every event up to it); with ``trust_roots`` each TSA token must stamp
    that hash and chain to a root. Reads the events and the chain from one snapshot."""
    from . import audit

    by_seq: dict[int, AnchorLine] = {}
    conflicts: list[str] = []
    for line in anchors:
        seen = by_seq.setdefault(line.seq, line)
        if seen.hash != line.hash:
            conflicts.append(f"#{line.seq} is anchored with two hashes ({seen.where}, {line.where})")
    ordered = [by_seq[s] for s in sorted(by_seq)]
    with audit._snapshot():  # one view of the chain and the anchored rows
        chain = audit.verify()
        stored = dict(AuditEvent.objects.filter(seq__in=list(by_seq)).values_list("seq", "hash"))
        db_anchored = set(AuditAnchor.objects.values_list("seq", flat=True))

    result = AnchorsResult(ok=True, events=chain.events, anchors=len(ordered))
    problem = "; ".join(conflicts)
    if not problem:
        checker = TokenChecker(trust_roots) if trust_roots else None
        try:
            problem = _walk(ordered, chain, stored, checker, result)
        finally:
            if checker is not None:
                checker.close()
    if not problem and not chain.ok:
        problem = f"the chain itself is broken at event #{chain.first_bad_seq}: {chain.problem}"
    if not problem and not ordered:
        problem = "no anchor to check against"
    if problem:
        result.ok = False
        result.problem = problem
        result.first_bad_seq = result.last_good_seq + 1
    result.unanchored = max(chain.events - result.last_good_seq, 0)
    missing = sorted(db_anchored - set(by_seq))
    if missing:
        result.notes.append(f"{len(missing)} anchor(s) the database records are not in this sink (first: "
                            f"#{missing[0]}): check the other sinks")
    return result


def _walk(ordered: list[AnchorLine], chain: VerifyResult, stored: dict[int, str], checker: TokenChecker | None,
          result: AnchorsResult) -> str:
    """Check the anchors in seq order, moving ``result.last_good_seq`` on; return the first problem ('' if none)."""
    for line in ordered:
        if not chain.ok and line.seq >= (chain.first_bad_seq or 0):
            return ""  # past the chain's own break: that is the failure
        if line.seq > chain.events or line.seq not in stored:
            return f"anchored event #{line.seq} ({line.where}) is missing from the database's chain (it has " \
                   f"{chain.events} events): events were removed or the trail was emptied"
        if stored[line.seq] != line.hash:
            return f"event #{line.seq} hashes to {stored[line.seq]} in the database but was anchored as " \
                   f"{line.hash} ({line.where}): events up to #{line.seq} were rewritten, inserted, reordered or " \
                   "removed"
        if line.tsa_token and checker is not None:
            good, detail = checker.check(line.tsa_token, line.hash)
            if not good:
                return f"anchor #{line.seq} ({line.where}): {detail}"
            result.tokens_checked += 1
        elif line.tsa_token:
            result.tokens_unchecked += 1
        result.last_good_seq = line.seq
    return ""


# --- the report -------------------------------------------------------------------------------------------------------


def anchors_covering(seq: int, *, upto: int | None = None) -> list[AuditAnchor]:
    """The anchors whose event is ``seq`` or later (so their hash covers event ``seq``), nearest first; ``upto``
    leaves out anchors past a report's head, so a regenerated report shows the same one."""
    anchors = AuditAnchor.objects.filter(seq__gte=seq)
    if upto is not None:
        anchors = anchors.filter(seq__lte=upto)
    return list(anchors.order_by("seq"))
