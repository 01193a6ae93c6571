"""Issue 13, "Done when": the tamper suite. An attacker with the database owner's rights (the append-only triggers
switched off) empties, forges, edits, reorders or deletes audit events, and, where it can, recomputes every hash
after the tampering and moves the head so that the chain verifies on its own (``verify_audit`` and ``--head`` with
the new head pass). ``verify_audit --anchors`` finds each one against the anchors written outside the database and
names the first event after the last good anchor. PostgreSQL: the triggers and the TRUNCATE guard are real here."""
from __future__ import annotations

from collections.abc import Callable
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, transaction

from changes import audit
from changes.models import AuditAnchor, AuditEvent, AuditHead
from tests.support.tsa import tsa  # noqa: F401 - the fixture

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]

EVENTS = 12  # anchored at #5 and #10 (every 5); #11 and #12 are after the last anchor
Row = dict[str, Any]


@pytest.fixture
def trail(settings, tmp_path: Path, tsa, django_capture_on_commit_callbacks) -> Path:  # noqa: ANN001, F811
    """Twelve events anchored every 5 into a file, stamped by the local TSA; returns the anchor file."""
    path = tmp_path / "anchors.jsonl"
    settings.EXMAINT_AUDIT_ANCHORS = {**settings.EXMAINT_AUDIT_ANCHORS, "EVERY": 5, "FILE": str(path),
                                      "SYSLOG": "", "TSA_URL": tsa.url, "TSA_ROOTS": str(tsa.ca_pem)}
    with django_capture_on_commit_callbacks(execute=True):
        for i in range(1, EVENTS + 1):
            audit.append(actor="system:test", action="test.event", object_type="thing", object_id=i,
                         changes={"n": [i - 1, i]}, reason=f"event {i}")
    assert list(AuditAnchor.objects.values_list("seq", flat=True)) == [5, 10] and tsa.requests == 2
    assert "anchors ok: 2 anchor(s)" in verify("--anchors", str(path))
    return path


def verify(*args: str) -> str:
    out = StringIO()
    call_command("verify_audit", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def as_owner(sql: str, params: list | None = None) -> None:
    """What the tables' owner (or a superuser) can do: run with the triggers off for this transaction."""
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute("SET LOCAL session_replication_role = replica")
        cur.execute(sql, params or [])


def rows() -> list[Row]:
    return list(AuditEvent.objects.order_by("seq").values(*audit._BODY_FIELDS))


def rewrite(mutate: Callable[[list[Row]], list[Row]]) -> str:
    """Rewrite the whole trail as a careful attacker would: mutate the events, renumber them, recompute every
    prev_hash and hash, and move the head to the new end. Returns the new head."""
    events = mutate(rows())
    prev = audit.GENESIS
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute("SET LOCAL session_replication_role = replica")
        cur.execute("DELETE FROM changes_auditevent")
        for seq, body in enumerate(events, 1):
            body = {**body, "seq": seq}
            digest = audit.compute_hash(prev, audit._event_body(AuditEvent(**body)))
            AuditEvent.objects.create(**body, prev_hash=prev, hash=digest)
            prev = digest
        cur.execute("UPDATE changes_audithead SET seq = %s, hash = %s WHERE id = 1", [len(events), prev])
        # The database's own anchor rows are rewritten to match too: verification does not read them.
        for anchor in AuditAnchor.objects.all():
            new = AuditEvent.objects.filter(seq=anchor.seq).values_list("hash", flat=True).first()
            if new:
                AuditAnchor.objects.filter(pk=anchor.pk).update(hash=new)
    return prev


def assert_caught(anchor_file: Path, first_untrusted: int, last_good: str) -> None:
    with pytest.raises(CommandError) as caught:
        verify("--anchors", str(anchor_file))
    message = str(caught.value)
    assert "BROKEN against its anchors" in message
    assert f"Last good anchor: {last_good}; events from #{first_untrusted} on cannot be trusted" in message


def test_truncate_is_refused_and_a_truncate_past_the_guard_is_caught(trail: Path) -> None:
    with pytest.raises(DatabaseError, match="append-only: TRUNCATE"), transaction.atomic(), \
            connection.cursor() as cur:
        cur.execute("TRUNCATE changes_auditevent, changes_audithead")
    as_owner("TRUNCATE changes_auditevent, changes_audithead")
    assert audit.verify().ok and audit.verify().events == 0  # an empty trail verifies on its own
    assert_caught(trail, 1, "none")


def test_a_forged_event_with_the_head_advanced_is_caught(trail: Path) -> None:
    def forge(events: list[Row]) -> list[Row]:
        forged = {**events[6], "actor": "user:alice", "action": "change.approved", "reason": "looks fine"}
        return [*events[:7], forged, *events[7:]]  # after #7: #8 is the forgery, the rest move up by one

    head = rewrite(forge)
    assert AuditHead.objects.get().seq == EVENTS + 1
    assert f"head {head} is on the chain" in verify("--head", head)  # the chain alone cannot tell
    assert_caught(trail, 6, "#5")  # #10 was anchored with another hash; #5 still holds


def test_an_edited_row_is_caught(trail: Path) -> None:
    def edit(events: list[Row]) -> list[Row]:
        events[2]["reason"] = "nothing to see here"
        return events

    head = rewrite(edit)
    assert f"head {head} is on the chain" in verify("--head", head)
    assert_caught(trail, 1, "none")  # #3 changed: even #5 no longer matches


def test_an_edited_row_without_rehashing_is_caught(trail: Path) -> None:
    as_owner("UPDATE changes_auditevent SET reason = 'nothing to see here' WHERE seq = 7")
    assert_caught(trail, 6, "#5")  # the chain breaks at #7; #10 still hashes as anchored but lies past the break


def test_reordered_events_are_caught(trail: Path) -> None:
    def swap(events: list[Row]) -> list[Row]:
        events[6], events[7] = events[7], events[6]
        return events

    head = rewrite(swap)
    assert f"head {head} is on the chain" in verify("--head", head)
    assert_caught(trail, 6, "#5")


def test_a_deleted_event_is_caught(trail: Path) -> None:
    head = rewrite(lambda events: events[:8] + events[9:])  # #9 goes, the rest move down
    assert AuditHead.objects.get().seq == EVENTS - 1
    assert f"head {head} is on the chain" in verify("--head", head)
    assert_caught(trail, 6, "#5")


def test_events_deleted_from_the_end_past_an_anchor_are_caught(trail: Path) -> None:
    head = rewrite(lambda events: events[:9])  # #10, the last anchored event, and what followed are gone
    assert f"head {head} is on the chain" in verify("--head", head)
    assert_caught(trail, 6, "#5")


def test_a_forged_anchor_row_in_the_database_does_not_help(trail: Path) -> None:
    """Verification reads the external file: rewriting AuditAnchor (as rewrite() does) changes nothing, and a line
    the file lacks is named as a note, not taken on trust."""
    rewrite(lambda events: events[:4] + events[5:])
    assert AuditAnchor.objects.get(seq=10).hash == AuditEvent.objects.get(seq=10).hash  # the rows now agree
    assert_caught(trail, 1, "none")
