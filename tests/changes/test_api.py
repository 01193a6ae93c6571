"""The REST API as an ITSM integration, approvers and auditors use it."""
from __future__ import annotations

import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from changes.models import Change
from tests.conftest import payload, window

pytestmark = pytest.mark.django_db
CHANGES = "/api/v1/changes/"


def post(client, url, body, **extra):
    return client.post(url, data=json.dumps(body), content_type="application/json", **extra)


def test_create_answers_201_with_number_state_and_next_states(api, requester, servers) -> None:
    res = post(api(requester), CHANGES, payload())
    assert res.status_code == 201, res.content
    body = res.json()
    assert body["number"] == f"EXM-{body['id']:06d}"
    assert body["state"] == "awaiting_approval"
    assert body["approvals_required"] == 2
    assert body["next_states"] == ["cancelled", "rejected", "scheduled"]
    assert body["servers"] == ["EX01"]


def test_same_payload_again_returns_the_same_change_with_200(api, requester, servers) -> None:
    first = post(api(requester), CHANGES, payload())
    again = post(api(requester), CHANGES, payload())
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]


def test_different_payload_for_the_same_reference_is_a_409(api, requester, servers) -> None:
    post(api(requester), CHANGES, payload())
    res = post(api(requester), CHANGES, payload(title="Different"))
    assert res.status_code == 409
    assert res.json()["code"] == "idempotency_conflict"
    assert Change.objects.count() == 1


def test_unknown_servers_are_a_400_naming_them(api, requester, servers) -> None:
    res = post(api(requester), CHANGES, payload(servers=["EX01", "NOPE1"]))
    assert res.status_code == 400
    assert res.json() == {"code": "unknown_servers", "detail": "unknown server(s): NOPE1", "servers": ["NOPE1"]}


def test_two_approvers_schedule_a_medium_risk_change(api, requester, servers, alice, bob) -> None:
    change_id = post(api(requester), CHANGES, payload()).json()["id"]
    res = post(api(alice), f"{CHANGES}{change_id}/approve/", {"comment": "Tested in lab"})
    assert res.status_code == 200 and res.json()["state"] == "awaiting_approval"
    res = post(api(bob), f"{CHANGES}{change_id}/approve/", {"comment": "OK"})
    assert res.json()["state"] == "scheduled"
    assert [a["approver"] for a in res.json()["approvals"]] == ["alice", "bob"]


def test_approver_named_as_requester_gets_a_403(api, requester, servers, carol) -> None:
    change_id = post(api(requester), CHANGES, payload()).json()["id"]
    res = post(api(carol), f"{CHANGES}{change_id}/approve/", {"comment": "mine"})
    assert res.status_code == 403
    assert res.json()["code"] == "separation_of_duties"


def test_impossible_transition_answers_409_with_allowed_states(api, requester, servers, alice) -> None:
    change_id = post(api(requester), CHANGES, payload()).json()["id"]
    post(api(alice), f"{CHANGES}{change_id}/reject/", {"comment": "no"})
    res = post(api(alice), f"{CHANGES}{change_id}/approve/", {"comment": "yes"})
    assert res.status_code == 409
    assert res.json()["code"] == "transition_not_allowed"
    assert res.json()["allowed"] == []


def test_cancelling_a_running_change_is_409_with_allowed_states(api, requester, servers) -> None:
    from changes import services
    from changes.states import State

    change_id = post(api(requester), CHANGES, payload(change_type="standard")).json()["id"]
    services.change_transition(change_id, State.RUNNING, actor="system:runner")
    res = post(api(requester), f"{CHANGES}{change_id}/cancel/", {"reason": "too late"})
    assert res.status_code == 409
    assert res.json()["allowed"] == ["aborted", "completed", "paused"]


def test_cancel_requires_a_reason(api, requester, servers) -> None:
    change_id = post(api(requester), CHANGES, payload()).json()["id"]
    assert post(api(requester), f"{CHANGES}{change_id}/cancel/", {}).status_code == 400
    res = post(api(requester), f"{CHANGES}{change_id}/cancel/", {"reason": "CAB declined the date"})
    assert res.json()["state"] == "cancelled"


def test_patch_of_the_window_voids_approvals(api, requester, servers, alice) -> None:
    change_id = post(api(requester), CHANGES, payload(risk="low")).json()["id"]
    post(api(alice), f"{CHANGES}{change_id}/approve/", {"comment": "ok"})
    start, end = window(24)
    res = api(requester).patch(f"{CHANGES}{change_id}/", data=json.dumps(
        {"window_start": start.isoformat(), "window_end": end.isoformat(), "reason": "moved"}),
        content_type="application/json")
    assert res.status_code == 200, res.content
    assert res.json()["state"] == "awaiting_approval"
    assert res.json()["approvals"][0]["valid"] is False


def test_patch_cannot_change_the_external_reference(api, requester, servers) -> None:
    change_id = post(api(requester), CHANGES, payload()).json()["id"]
    res = api(requester).patch(f"{CHANGES}{change_id}/", data=json.dumps({"external_ref": "CHG9"}),
                               content_type="application/json")
    assert res.status_code == 400
    assert "external_ref" in res.json()["detail"]


def test_dag_overlap_is_a_409_naming_the_conflicting_change(api, requester, servers) -> None:
    first = post(api(requester), CHANGES, payload(servers=["EX02"], change_type="standard", external_ref="A")).json()
    res = post(api(requester), CHANGES, payload(servers=["EX04"], change_type="standard", external_ref="B"))
    assert res.status_code == 409
    assert res.json()["conflicting_change"] == first["number"]
    assert first["number"] in res.json()["detail"]


def test_list_filters_by_state_server_and_window(api, requester, servers, auditor) -> None:
    post(api(requester), CHANGES, payload(external_ref="A", change_type="standard"))
    post(api(requester), CHANGES, payload(external_ref="B", servers=["EX05"]))
    client = api(auditor)
    assert [c["external_ref"] for c in client.get(CHANGES, {"state": "scheduled"}).json()["results"]] == ["A"]
    assert [c["external_ref"] for c in client.get(CHANGES, {"server": "ex05"}).json()["results"]] == ["B"]
    assert client.get(CHANGES, {"external_ref": "B", "source": "servicenow"}).json()["count"] == 1
    start, end = window(100)
    assert client.get(CHANGES, {"window_after": start.isoformat()}).json()["count"] == 0
    listing = client.get(CHANGES, {"limit": 1}).json()
    assert listing["count"] == 2 and len(listing["results"]) == 1 and listing["next"]


def test_list_costs_a_constant_number_of_queries(api, requester, servers, auditor) -> None:
    client = api(auditor)
    post(api(requester), CHANGES, payload(external_ref="A"))
    with CaptureQueriesContext(connection) as one:
        client.get(CHANGES)
    for i in range(5):
        res = post(api(requester), CHANGES, payload(external_ref=f"N{i}", servers=["EX02", "EX05"], hours=10 * i))
        assert res.status_code == 201, res.content
    with CaptureQueriesContext(connection) as six:
        client.get(CHANGES)
    assert len(six.captured_queries) == len(one.captured_queries)


def test_requesters_see_only_their_source(api, requester, servers) -> None:
    from tests.conftest import make_user

    jira = make_user("jira", "requester", client=True, source="jira")
    post(api(requester), CHANGES, payload())
    assert api(jira).get(CHANGES).json()["count"] == 0
    assert api(requester).get(CHANGES).json()["count"] == 1


def test_auditor_reads_but_cannot_change(api, requester, servers, auditor) -> None:
    change_id = post(api(requester), CHANGES, payload()).json()["id"]
    assert api(auditor).get(f"{CHANGES}{change_id}/").status_code == 200
    assert post(api(auditor), CHANGES, payload(external_ref="X")).status_code == 403
    assert post(api(auditor), f"{CHANGES}{change_id}/approve/", {"comment": "x"}).status_code == 403
    assert post(api(auditor), "/api/v1/servers/", {"name": "EX9", "fqdn": "x"}).status_code == 403


def test_unauthenticated_and_roleless_callers_are_refused(api, requester, servers, outsider) -> None:
    assert api(None).get(CHANGES).status_code == 401
    assert api(outsider).get(CHANGES).status_code == 403
    assert api(None).get(CHANGES, HTTP_AUTHORIZATION="Token nope").status_code == 401


def test_bearer_tokens_are_accepted(api, requester, servers) -> None:
    from rest_framework.test import APIClient

    from tests.support.tokens import api_key

    assert APIClient().get(CHANGES, HTTP_AUTHORIZATION=f"Bearer {api_key(requester)}").status_code == 200


def test_steps_and_audit_of_a_change(api, requester, servers, auditor) -> None:
    change_id = post(api(requester), CHANGES, payload()).json()["id"]
    assert api(auditor).get(f"{CHANGES}{change_id}/steps/").json() == []
    events = api(auditor).get(f"{CHANGES}{change_id}/audit/").json()["results"]
    assert [e["action"] for e in events] == ["change.created"]
    assert events[0]["actor"] == "client:servicenow"


def test_request_id_is_echoed_and_stored_on_audit_events(api, requester, servers, auditor) -> None:
    res = post(api(requester), CHANGES, payload(), HTTP_X_REQUEST_ID="itsm-req-42")
    assert res["X-Request-ID"] == "itsm-req-42"
    events = api(auditor).get(f"{CHANGES}{res.json()['id']}/audit/").json()["results"]
    assert events[0]["request_id"] == "itsm-req-42"
    generated = api(auditor).get(CHANGES)["X-Request-ID"]
    assert len(generated) == 32


def test_audit_verify_reports_the_head(api, requester, servers, auditor) -> None:
    post(api(requester), CHANGES, payload())
    body = api(auditor).get("/api/v1/audit/verify/").json()
    assert body["ok"] is True and body["events"] >= 1 and len(body["head"]) == 64


def test_server_passwords_are_write_only(api, operator, auditor) -> None:
    res = post(api(operator), "/api/v1/servers/", {"name": "EX09", "fqdn": "ex09.corp.example",
                                                   "auth_method": "ntlm", "username": "CORP\\svc",
                                                   "password": "Hunter2!"})
    assert res.status_code == 201, res.content
    assert "password" not in res.json() and res.json()["has_password"] is True
    listing = api(auditor).get("/api/v1/servers/").content.decode()
    assert "Hunter2" not in listing
    assert res.json()["effective_endpoint_url"] == "http://ex09.corp.example/PowerShell/"


def test_each_remoting_endpoint_of_a_server_has_its_own_settings(api, operator) -> None:
    res = post(api(operator), "/api/v1/servers/", {
        "name": "EX09", "fqdn": "ex09.corp.example", "auth_method": "kerberos", "operation_timeout": 45,
        "winrm_url": "https://ex09.corp.example:5986/wsman", "winrm_auth_method": "ntlm", "winrm_verify_tls": False,
        "winrm_connection_timeout": 10,
    })
    assert res.status_code == 201, res.content
    body = res.json()
    assert (body["auth_method"], body["verify_tls"], body["connection_timeout"], body["operation_timeout"]) == (
        "kerberos", True, 30, 45)
    assert (body["winrm_auth_method"], body["winrm_verify_tls"], body["winrm_connection_timeout"]) == (
        "ntlm", False, 10)
    assert body["winrm_operation_timeout"] is None  # inherits operation_timeout


@pytest.mark.parametrize("field,value", [("operation_timeout", 0), ("winrm_operation_timeout", 86400),
                                         ("winrm_auth_method", "digest"), ("connection_timeout", -1)])
def test_out_of_range_endpoint_settings_are_a_400_naming_the_field(api, operator, field, value) -> None:
    res = post(api(operator), "/api/v1/servers/", {"name": "EX09", "fqdn": "ex09.corp.example", field: value})
    assert res.status_code == 400, res.content
    assert field in res.content.decode()


def test_duplicate_server_name_is_a_409(api, operator, servers) -> None:
    res = post(api(operator), "/api/v1/servers/", {"name": "EX01", "fqdn": "dup.corp.example"})
    assert res.status_code == 409


def test_freeze_windows_over_the_api(api, operator, requester, servers) -> None:
    start, _ = window(-1)
    end, _ = window(5)
    res = post(api(operator), "/api/v1/freeze-windows/", {"start": start.isoformat(), "end": end.isoformat(),
                                                          "servers": ["EX01"], "reason": "Quarter end"})
    assert res.status_code == 201, res.content
    assert res.json()["servers"] == ["EX01"]
    refused = post(api(requester), CHANGES, payload())
    assert refused.status_code == 409 and refused.json()["code"] == "freeze_window"


def test_openapi_schema_generates_without_warnings(api, auditor, tmp_path) -> None:
    from django.core.management import call_command

    # --fail-on-warn turns any drf-spectacular warning or error into a failure; --validate checks OpenAPI 3.
    call_command("spectacular", "--fail-on-warn", "--validate", "--file", str(tmp_path / "schema.yaml"))
    assert "/api/v1/changes/{id}/approve/:" in (tmp_path / "schema.yaml").read_text()
    assert api(auditor).get("/api/v1/schema/").status_code == 200


def test_healthz_reports_database_and_broker(client, db) -> None:
    res = client.get("/healthz")
    assert res.status_code == 200
    assert res.json()["database"] == "ok" and res.json()["broker"] == "ok"
