"""GET /api/v1/changes/{id}/report/: who may download it, its headers, and the audit event each download writes."""
from __future__ import annotations

import hashlib

import pytest

from changes.models import AuditEvent
from reports.models import Report
from tests.changes.test_services import create
from tests.conftest import make_user

pytestmark = pytest.mark.django_db


def url(change) -> str:
    return f"/api/v1/changes/{change.pk}/report/"


@pytest.mark.parametrize("who", ["auditor", "operator", "alice"])
def test_auditors_operators_and_the_changes_approvers_download_the_pdf(who, completed, api, request) -> None:
    user = request.getfixturevalue(who)
    response = api(user).get(url(completed))
    assert response.status_code == 200
    assert response["Content-Type"] == "application/pdf"
    body = b"".join(response.streaming_content) if response.streaming else response.content
    sha = hashlib.sha256(body).hexdigest()
    assert body.startswith(b"%PDF-")
    assert response["X-Report-SHA256"] == sha == Report.objects.get(change=completed).sha256
    assert response["ETag"] == f'"{sha}"'
    assert completed.number in response["Content-Disposition"]


@pytest.mark.parametrize("who", ["requester", "outsider", "other_approver"])
def test_others_are_refused_with_a_json_error(who, completed, api, request) -> None:
    user = make_user("dave", "approver") if who == "other_approver" else request.getfixturevalue(who)
    response = api(user).get(url(completed))
    assert response.status_code == 403
    assert response["Content-Type"].startswith("application/json")
    assert set(response.json()) >= {"code", "detail"}
    assert not AuditEvent.objects.filter(action="report.downloaded").exists()


def test_every_download_writes_an_audit_event_with_the_actor(completed, api, auditor, operator) -> None:
    api(auditor).get(url(completed))
    api(auditor).get(url(completed))
    api(operator).get(url(completed))
    events = AuditEvent.objects.filter(action="report.downloaded", object_id=str(completed.pk)).order_by("seq")
    assert [e.actor for e in events] == ["user:audrey", "user:audrey", "user:olga"]
    sha = Report.objects.get(change=completed).sha256
    assert all(e.changes["sha256"] == [None, sha] for e in events)


def test_the_first_download_generates_the_report_then_serves_the_stored_one(completed, api, auditor) -> None:
    assert not Report.objects.exists()
    first = api(auditor).get(url(completed))
    second = api(auditor).get(url(completed))
    assert first["ETag"] == second["ETag"] and first.content == second.content
    assert Report.objects.count() == 1


def test_before_the_window_has_ended_the_answer_is_a_clear_404(requester, servers, api, auditor) -> None:
    change, _ = create(requester)
    response = api(auditor).get(url(change))
    assert response.status_code == 404
    assert response.json()["code"] == "report_not_ready"
    assert "once the window has ended" in response.json()["detail"]
    assert not AuditEvent.objects.filter(action="report.downloaded").exists()


def test_an_unknown_change_is_a_json_404(api, auditor) -> None:
    response = api(auditor).get("/api/v1/changes/999999/report/")
    assert response.status_code == 404 and response.json()["code"] == "not_found"


def test_the_pdf_served_verifies_against_the_chain_head_it_prints(completed, api, auditor) -> None:
    api(auditor).get(url(completed))
    report = Report.objects.get(change=completed)
    response = api(auditor).get("/api/v1/audit/verify/", {"head": report.head_hash})
    assert response.status_code == 200 and response.json()["ok"] is True


@pytest.mark.waits_for_notifications
def test_right_after_the_end_the_download_waits_for_the_last_notifications(completed, api, auditor) -> None:
    """The end-of-window mail and the final callback are still queued (nothing sends them here): 404 'being
    generated' rather than a report that would miss them."""
    response = api(auditor).get(url(completed))
    assert response.status_code == 404 and "being generated" in response.json()["detail"]
    assert not Report.objects.filter(change=completed).exists()
