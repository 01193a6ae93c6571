"""The admin as approvers use it: the same services and rules as the API, read-only audit events."""
from __future__ import annotations

import json

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.db import connection
from django.test.utils import CaptureQueriesContext

from changes.models import AuditEvent, Change
from tests.conftest import payload

pytestmark = pytest.mark.django_db
CHANGELIST = "/admin/changes/change/"


def post_change(api, requester, **overrides) -> int:
    res = api(requester).post("/api/v1/changes/", data=json.dumps(payload(**overrides)),
                              content_type="application/json")
    assert res.status_code == 201, res.content
    return res.json()["id"]


def decide(client, change_id: int, action: str, comment: str | None):
    data = {"action": action, ACTION_CHECKBOX_NAME: [str(change_id)]}
    if comment is not None:
        data.update(apply="1", comment=comment)
    return client.post(CHANGELIST, data, follow=True)


def test_admin_approve_action_asks_for_a_comment_then_approves(client, api, requester, servers, alice) -> None:
    change_id = post_change(api, requester, risk="low")
    client.force_login(alice)
    form = decide(client, change_id, "approve_selected", None)
    assert b"comment" in form.content and b"Approve" in form.content
    assert Change.objects.get(pk=change_id).state == "awaiting_approval"
    empty = decide(client, change_id, "approve_selected", "")
    assert Change.objects.get(pk=change_id).state == "awaiting_approval"
    assert b"required" in empty.content
    done = decide(client, change_id, "approve_selected", "Looks good")
    assert b"approved" in done.content
    assert Change.objects.get(pk=change_id).state == "scheduled"
    assert AuditEvent.objects.filter(action="change.approved", actor="user:alice").exists()


def test_admin_enforces_separation_of_duties_for_superusers(client, api, requester, servers, root) -> None:
    change_id = post_change(api, requester, requested_by="root")
    client.force_login(root)
    res = decide(client, change_id, "approve_selected", "self approval")
    assert b"someone else must decide" in res.content
    assert Change.objects.get(pk=change_id).state == "awaiting_approval"


def test_admin_reject_action(client, api, requester, servers, bob) -> None:
    change_id = post_change(api, requester)
    client.force_login(bob)
    decide(client, change_id, "reject_selected", "No back-out plan")
    assert Change.objects.get(pk=change_id).state == "rejected"


def test_awaiting_my_approval_filter_hides_my_own_and_decided_ones(client, api, requester, servers, alice,
                                                                    carol) -> None:
    mine = post_change(api, requester, external_ref="A", requested_by="alice")
    other = post_change(api, requester, external_ref="B", servers=["EX05"])
    client.force_login(alice)
    page = client.get(CHANGELIST, {"awaiting": "me"}).content.decode()
    assert f"EXM-{other:06d}" in page and f"EXM-{mine:06d}" not in page
    decide(client, other, "approve_selected", "ok")
    page = client.get(CHANGELIST, {"awaiting": "me"}).content.decode()
    assert f"EXM-{other:06d}" not in page


def test_change_list_costs_a_constant_number_of_queries(client, api, requester, servers, alice) -> None:
    client.force_login(alice)
    post_change(api, requester, external_ref="A")
    with CaptureQueriesContext(connection) as one:
        assert client.get(CHANGELIST).status_code == 200
    for i in range(6):
        post_change(api, requester, external_ref=f"N{i}", servers=["EX02", "EX05"], hours=10 * (i + 1))
    with CaptureQueriesContext(connection) as seven:
        client.get(CHANGELIST)
    assert len(seven.captured_queries) == len(one.captured_queries)


def test_change_page_shows_approvals_inline(client, api, requester, servers, alice) -> None:
    change_id = post_change(api, requester)
    client.force_login(alice)
    decide(client, change_id, "approve_selected", "first approval")
    page = client.get(f"{CHANGELIST}{change_id}/change/").content.decode()
    assert "first approval" in page and "Step runs" in page


def test_nobody_can_edit_or_delete_audit_events_in_the_admin(client, root, api, requester, servers) -> None:
    post_change(api, requester)
    event = AuditEvent.objects.first()
    client.force_login(root)
    assert client.get("/admin/changes/auditevent/").status_code == 200
    before = event.hash
    client.post(f"/admin/changes/auditevent/{event.pk}/change/", {"reason": "edited"})
    assert client.get(f"/admin/changes/auditevent/{event.pk}/delete/").status_code == 403
    assert client.get("/admin/changes/auditevent/add/").status_code == 403
    event.refresh_from_db()
    assert event.hash == before and event.reason == ""


def test_server_password_is_write_only_in_the_admin(client, root) -> None:
    client.force_login(root)
    res = client.post("/admin/changes/server/add/", {
        "name": "EX09", "fqdn": "ex09.corp.example", "auth_method": "ntlm", "operation_timeout": 30,
        "connection_timeout": 30, "verify_tls": "on", "username": "CORP\\svc", "password": "Adm1n-Secret",
    })
    assert res.status_code == 302, res.content.decode()[:2000]
    from changes.models import Server

    server = Server.objects.get(name="EX09")
    page = client.get(f"/admin/changes/server/{server.pk}/change/")
    assert page.status_code == 200
    assert "Adm1n-Secret" not in page.content.decode() and server.get_password() == "Adm1n-Secret"
    assert AuditEvent.objects.filter(action="server.created", actor="user:root").exists()
