"""The audit trail is an unbroken hash chain; any tampering is found and named."""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, connections, transaction
from django.db.utils import InternalError, ProgrammingError

from changes import audit
from changes.models import AuditEvent


def fill(n: int = 5) -> list[AuditEvent]:
    return [audit.append(actor="system:test", action="test.event", object_type="thing", object_id=i,
                         changes={"n": [i, i + 1]}, reason=f"event {i}") for i in range(n)]


@contextmanager
def trigger_disabled():
    """Tampering needs the append-only trigger out of the way, as an attacker with DDL rights would do."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cur:
            cur.execute("ALTER TABLE changes_auditevent DISABLE TRIGGER changes_auditevent_append_only")
        try:
            yield
        finally:
            with connection.cursor() as cur:
                cur.execute("ALTER TABLE changes_auditevent ENABLE TRIGGER changes_auditevent_append_only")
    else:
        yield


def raw(sql: str, params: list) -> None:
    with trigger_disabled(), connection.cursor() as cur:
        cur.execute(sql, params)


@pytest.mark.django_db
def test_events_chain_from_genesis() -> None:
    events = fill(3)
    assert events[0].prev_hash == audit.GENESIS
    assert events[1].prev_hash == events[0].hash and events[2].prev_hash == events[1].hash
    result = audit.verify()
    assert (result.ok, result.events, result.head) == (True, 3, events[-1].hash)


@pytest.mark.django_db
def test_an_altered_row_is_named() -> None:
    fill(5)
    raw("UPDATE changes_auditevent SET reason = %s WHERE seq = %s", ["nothing to see", 3])
    result = audit.verify()
    assert not result.ok and result.first_bad_seq == 3 and "altered" in result.problem


@pytest.mark.django_db
def test_a_deleted_row_is_named() -> None:
    fill(5)
    raw("DELETE FROM changes_auditevent WHERE seq = %s", [2])
    result = audit.verify()
    assert not result.ok and result.first_bad_seq == 3


@pytest.mark.django_db
def test_an_inserted_row_is_named() -> None:
    events = fill(3)
    # A forged event appended with a plausible seq but a hash the forger cannot chain correctly.
    raw("UPDATE changes_auditevent SET seq = seq + 1 WHERE seq = %s", [3])
    raw("INSERT INTO changes_auditevent (seq, created_at, actor, request_id, action, object_type, object_id, changes, "
        "reason, prev_hash, hash) VALUES (3, %s, 'user:mallory', '', 'change.approved', 'change', '1', '{}', '', %s, "
        "%s)", [events[2].created_at, events[1].hash, "f" * 64])
    result = audit.verify()
    assert not result.ok and result.first_bad_seq == 3


@pytest.mark.django_db
def test_reordered_rows_are_named() -> None:
    fill(4)
    raw("UPDATE changes_auditevent SET seq = 100 WHERE seq = 2", [])
    raw("UPDATE changes_auditevent SET seq = 2 WHERE seq = 3", [])
    raw("UPDATE changes_auditevent SET seq = 3 WHERE seq = 100", [])
    result = audit.verify()
    assert not result.ok and result.first_bad_seq == 2


@pytest.mark.django_db
def test_events_deleted_from_the_end_are_found() -> None:
    fill(5)
    raw("DELETE FROM changes_auditevent WHERE seq >= %s", [4])
    result = audit.verify()
    assert not result.ok and "removed from the end" in result.problem


@pytest.mark.django_db
def test_verify_audit_command_fails_and_names_the_event_after_tampering() -> None:
    fill(4)
    call_command("verify_audit")
    raw("UPDATE changes_auditevent SET actor = 'user:someone-else' WHERE seq = 2", [])
    with pytest.raises(CommandError, match="event #2"):
        call_command("verify_audit")


@pytest.mark.django_db
def test_verify_audit_checks_a_reported_head() -> None:
    events = fill(3)
    call_command("verify_audit", "--head", events[1].hash)
    with pytest.raises(CommandError, match="not on the chain"):
        call_command("verify_audit", "--head", "0" * 63 + "1")


@pytest.mark.django_db
def test_audit_verify_api_reports_tampering(api, auditor) -> None:
    fill(3)
    raw("UPDATE changes_auditevent SET action = 'x' WHERE seq = 1", [])
    res = api(auditor).get("/api/v1/audit/verify/")
    assert res.status_code == 409
    assert res.json()["ok"] is False and res.json()["first_bad_seq"] == 1


@pytest.mark.postgres
@pytest.mark.django_db
def test_postgres_trigger_refuses_update_and_delete() -> None:
    fill(1)
    for sql in ("UPDATE changes_auditevent SET reason = 'x'", "DELETE FROM changes_auditevent"):
        with pytest.raises((InternalError, ProgrammingError), match="append-only"), transaction.atomic(), \
                connection.cursor() as cur:
            cur.execute(sql)
    assert audit.verify().ok


@pytest.mark.postgres
@pytest.mark.django_db
def test_postgres_trigger_keeps_the_head_anchor_moving_forward() -> None:
    fill(3)
    for sql in ("UPDATE changes_audithead SET seq = 1", "DELETE FROM changes_audithead"):
        with pytest.raises((InternalError, ProgrammingError), match="append-only"), transaction.atomic(), \
                connection.cursor() as cur:
            cur.execute(sql)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_appends_from_many_threads_keep_one_unbroken_chain() -> None:
    threads, per_thread, errors = 8, 25, []
    barrier = threading.Barrier(threads)

    def writer(n: int) -> None:
        try:
            barrier.wait()
            for i in range(per_thread):
                with transaction.atomic():
                    audit.append(actor=f"system:writer-{n}", action="test.concurrent", object_type="t",
                                 object_id=f"{n}-{i}")
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    pool = [threading.Thread(target=writer, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert errors == []
    result = audit.verify()
    assert result.ok, result.problem
    assert result.events == threads * per_thread


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_appends_from_several_processes_keep_one_unbroken_chain() -> None:
    import subprocess
    import sys

    code = (
        "import django, os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'config.test_settings'); django.setup()\n"
        "from django.db import connection\n"
        "from django.conf import settings\n"
        "from changes import audit\n"
        f"settings.DATABASES['default']['NAME'] = {connection.settings_dict['NAME']!r}\n"
        "connection.settings_dict['NAME'] = settings.DATABASES['default']['NAME']\n"
        "for i in range(30): audit.append(actor='system:proc', action='test.proc', object_type='t', object_id=i)\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(4)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
    result = audit.verify()
    assert result.ok, result.problem
    assert result.events == 120


@pytest.mark.django_db(transaction=True)
def test_verify_while_others_append_never_raises_a_false_alarm() -> None:
    """GET /audit/verify/ during busy hours: writers append while an auditor verifies again and again. Each verify
    reads the events and the head anchor from one snapshot, so none may report a broken chain (read one after the
    other, an append in between looked like events removed from the end)."""
    fill(300)  # a walk long enough for appends to land while it runs
    writers, per_writer, errors = 3, 60, []

    def writer(n: int) -> None:
        try:
            for i in range(per_writer):
                audit.append(actor=f"system:writer-{n}", action="test.busy", object_type="t", object_id=f"{n}-{i}")
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    pool = [threading.Thread(target=writer, args=(n,)) for n in range(writers)]
    for t in pool:
        t.start()
    results = []
    while any(t.is_alive() for t in pool) or not results:
        results.append(audit.verify())
        # SQLite's write lock is not fair: a verify loop with no gap can starve the writers' busy handler past its
        # timeout on a loaded machine. An auditor never verifies back to back within milliseconds.
        time.sleep(0.01)
    for t in pool:
        t.join()
    assert errors == []
    assert [r.problem for r in results if not r.ok] == []
    assert len({r.events for r in results}) > 1 or len(results) == 1  # verified while the chain grew
    final = audit.verify()
    assert final.ok and final.events == 300 + writers * per_writer


@pytest.mark.django_db
@pytest.mark.parametrize("microsecond", [0, 7, 999999])
def test_verify_rebuilds_the_canonical_bytes_of_awkward_events(monkeypatch, microsecond) -> None:
    """verify() writes each event's canonical JSON by hand (issue 19); it must give the very bytes canonical() gives:
    times on the whole second (isoformat drops the microseconds), quotes, backslashes, control characters,
    non-ASCII, nested and numeric changes, empty strings."""
    from datetime import UTC, datetime

    at = datetime(2030, 1, 5, 22, 0, 0, microsecond, tzinfo=UTC)
    monkeypatch.setattr(audit.timezone, "now", lambda: at)
    awkward = 'quote " backslash \\ tab \t newline \n bell \x07 del \x7f é 中 \u2028 😀'
    with transaction.atomic(), audit.batch():
        audit.append(actor=awkward, action="test.awkward", object_type="t", object_id=awkward, reason=awkward,
                     request_id="req-\"1\"", changes={"z": [None, awkward], "a": {"n": [1, 2.5, 10**20]},
                                                      "é": [True, False], "": [[], {}]})
        audit.append(actor="system:exmaint", action="test.empty", object_type="", object_id="", reason="")
    assert [ev.created_at for ev in AuditEvent.objects.all()] == [at, at]
    result = audit.verify()
    assert result.ok, result.problem
    assert result.events == 2
    assert result.head == audit.head()
