"""The change's own chain: each event of a change links to the same change's previous event, the link is hashed,
and the whole-chain verifier accepts events from before the link existed."""
from __future__ import annotations

import pytest

from changes import audit
from changes.models import AuditEvent

pytestmark = pytest.mark.django_db


def test_events_of_a_change_link_to_that_changes_previous_event() -> None:
    first = audit.append(actor="system:test", action="change.created", object_type="change", object_id=7)
    other = audit.append(actor="system:test", action="change.created", object_type="change", object_id=8)
    server = audit.append(actor="system:test", action="server.created", object_type="server", object_id=7)
    second = audit.append(actor="system:test", action="change.transition", object_type="change", object_id=7)
    assert first.change_prev_hash == audit.GENESIS and other.change_prev_hash == audit.GENESIS
    assert server.change_prev_hash is None  # not a change's event
    assert second.change_prev_hash == first.hash  # skips the other change's and the server's events
    assert second.prev_hash == server.hash  # the whole chain is unchanged
    assert audit.verify().ok


def test_the_link_is_hashed() -> None:
    ev = audit.append(actor="system:test", action="change.created", object_type="change", object_id=7)
    audit.append(actor="system:test", action="change.transition", object_type="change", object_id=7)
    body = audit._event_body(ev)
    assert body["change_prev_hash"] == audit.GENESIS
    assert audit.compute_hash(ev.prev_hash, body) == ev.hash
    body["change_prev_hash"] = "1" * 64
    assert audit.compute_hash(ev.prev_hash, body) != ev.hash


def test_events_written_before_the_link_still_verify() -> None:
    """A chain written before the column existed (no link, hashed without it) verifies as it always did."""
    legacy = AuditEvent(seq=1, created_at=audit.timezone.now(), actor="system:test", action="change.created",
                        object_type="change", object_id="7", changes={}, reason="", prev_hash=audit.GENESIS)
    legacy.hash = audit.compute_hash(legacy.prev_hash, audit._event_body(legacy))
    legacy.save(force_insert=True)
    assert "change_prev_hash" not in audit._event_body(legacy)
    audit.AuditHead.objects.update_or_create(id=1, defaults={"seq": 1, "hash": legacy.hash})
    after = audit.append(actor="system:test", action="change.transition", object_type="change", object_id=7)
    assert after.change_prev_hash == legacy.hash
    assert audit.verify().ok
