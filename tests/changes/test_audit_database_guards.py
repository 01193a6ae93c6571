"""Issue 13 D1 (PostgreSQL): TRUNCATE of the audit tables is refused, and the runtime role the service connects as
cannot TRUNCATE, ALTER, DELETE or UPDATE the audit trail while it can do its work."""
from __future__ import annotations

import uuid
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction

from changes import audit
from changes.management.commands.db_runtime_role import runtime_role_sql

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]


def fill(n: int) -> None:
    for i in range(n):
        audit.append(actor="system:test", action="test.event", object_type="t", object_id=i)


@pytest.mark.parametrize("table", ["changes_auditevent", "changes_audithead"])
def test_truncate_of_an_audit_table_is_refused(table: str) -> None:
    fill(3)
    for sql in (f"TRUNCATE {table}", f"TRUNCATE {table} CASCADE", f"TRUNCATE changes_alert, {table}"):
        with pytest.raises(DatabaseError, match="append-only: TRUNCATE"), transaction.atomic(), \
                connection.cursor() as cur:
            cur.execute(sql)
    assert audit.verify().ok and audit.verify().events == 3


@pytest.fixture
def runtime_role():
    """A runtime role made with the command's own SQL, dropped afterwards (roles are cluster-wide)."""
    role = f"exmaint_rt_{uuid.uuid4().hex[:10]}"
    with connection.cursor() as cur:
        for sql in runtime_role_sql(role, database=connection.settings_dict["NAME"]):
            cur.execute(sql)
    yield role
    with connection.cursor() as cur:
        cur.execute("RESET ROLE")
        cur.execute(f"DROP OWNED BY {role}")
        cur.execute(f"DROP ROLE {role}")


def as_role(role: str, sql: str, params: list | None = None) -> None:
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute(f"SET LOCAL ROLE {role}")
        cur.execute(sql, params or [])


@pytest.mark.parametrize("sql", [
    "TRUNCATE changes_auditevent", "DELETE FROM changes_auditevent", "UPDATE changes_auditevent SET reason = 'x'",
    "ALTER TABLE changes_auditevent DISABLE TRIGGER changes_auditevent_append_only",
    "ALTER TABLE changes_auditevent DISABLE TRIGGER changes_auditevent_no_truncate",
    "DROP TRIGGER changes_auditevent_no_truncate ON changes_auditevent",
    "TRUNCATE changes_audithead", "DELETE FROM changes_audithead", "DROP TABLE changes_auditevent",
    "CREATE TABLE changes_sneaky (id int)",
])
def test_the_runtime_role_cannot_remove_or_rewrite_the_trail(runtime_role: str, sql: str) -> None:
    fill(2)
    with pytest.raises(DatabaseError, match="permission denied|must be owner|append-only"):
        as_role(runtime_role, sql)
    assert audit.verify().ok and audit.verify().events == 2


def test_the_runtime_role_can_do_the_services_work(runtime_role: str) -> None:
    """Appending events (advisory lock, insert, head update) and ordinary reads and writes."""
    fill(1)
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute(f"SET LOCAL ROLE {runtime_role}")
        audit.append(actor="system:runtime", action="test.runtime", object_type="t", object_id=1)
        cur.execute("UPDATE changes_server SET ad_site = 'x' WHERE false")
        cur.execute("DELETE FROM notifications_delivery WHERE false")
        cur.execute("SELECT count(*) FROM changes_change")
    assert audit.verify().ok and audit.verify().events == 2


def test_the_command_prints_the_grants_and_refuses_bad_names() -> None:
    out = StringIO()
    call_command("db_runtime_role", "--role", "exmaint_app", stdout=out)
    sql = out.getvalue()
    assert "REVOKE UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON changes_auditevent FROM exmaint_app" in sql
    with pytest.raises(CommandError, match="identifiers"):
        call_command("db_runtime_role", "--role", "x; DROP TABLE y", stdout=StringIO())
