"""A change request costs a fixed, small number of SQL statements (issue 19): the servers are read and locked once,
the rows are inserted without reading them back, and the audit events of the request are written in one go."""
from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from changes.models import AuditEvent, Change
from tests.conftest import payload

# The statements of one create, transaction control (BEGIN, COMMIT, savepoints) aside: the lockout check, the token
# with its user, API client and roles, the replay lookup, the servers (locked), the conflicts and freezes, the
# change, its server links, the mail thread, the approvers, the approval request, the chain's head (locked) and the
# events with the head's move (one statement on PostgreSQL; two on SQLite, which has no data-modifying WITH).
MAX_STATEMENTS = 12
_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE SAVEPOINT")


def statements(captured: CaptureQueriesContext) -> list[str]:
    return [q["sql"] for q in captured.captured_queries if not q["sql"].upper().startswith(_CONTROL)]


@pytest.mark.parametrize("servers_named", [["EX01"], ["EX02", "EX03", "EX04", "EX05"]])
def test_a_create_costs_at_most_twelve_statements_on_postgresql(api, requester, servers, alice, bob,
                                                                servers_named) -> None:
    client = api(requester)
    assert client.post("/api/v1/changes/", payload(external_ref="WARM"), format="json").status_code == 201
    with CaptureQueriesContext(connection) as captured:
        response = client.post("/api/v1/changes/", payload(external_ref="CHG1", servers=servers_named, hours=8),
                               format="json")
    assert response.status_code == 201, response.content
    sql = statements(captured)
    assert len(sql) <= MAX_STATEMENTS + (connection.vendor == "sqlite"), "\n".join(sql)
    # What was skipped was not lost: the answer, the links, the approval request and the chain are all there.
    change = Change.objects.get(external_ref="CHG1")
    assert response.json()["servers"] == servers_named == [s.name for s in change.servers.order_by("name")]
    assert response.json()["approvals"] == [] and response.json()["current_step"] is None
    assert change.deliveries.filter(kind="approval_request").count() == 1
    assert list(AuditEvent.objects.filter(object_type="change").order_by("seq").values_list("action", flat=True)) \
        == ["change.created"] * 2
