"""Bad input: every one gets a 4xx JSON answer with a code and a detail, and nothing is stored. Never a 500."""
from __future__ import annotations

import json

import pytest

from changes.models import AuditEvent, Change
from tests.conftest import payload

pytestmark = pytest.mark.django_db
CHANGES = "/api/v1/changes/"


def send(client, body, *, raw: bool = False, url: str = CHANGES, method: str = "post"):
    data = body if raw else json.dumps(body)
    return getattr(client, method)(url, data=data, content_type="application/json")


@pytest.mark.parametrize(("body", "field"), [
    (payload(servers="EX01"), "servers"),
    (payload(servers=[]), "servers"),
    (payload(servers=[{"name": "EX01"}]), "servers"),
    (payload(servers=["EX01; Remove-Mailbox"]), "servers"),
    (payload(change_type="yolo"), "change_type"),
    (payload(risk=3), "risk"),
    (payload(title="x" * 100_000), "title"),
    (payload(window_start="next tuesday"), "window_start"),
    (payload(window_start="2030-01-05T22:00:00"), "window_start"),
    (payload(window_start=1735689600), "window_start"),
    (payload(window_end="2030-02-30T01:00:00Z"), "window_end"),
    (payload(window_start="9999-12-31T20:00:00-05:00"), "window_start"),
    (payload(window_start="0001-01-01T00:30:00+01:00"), "window_start"),
    (payload(notify=["not-an-email"]), "notify"),
    (payload(callback_url="ftp://itsm.example/cb"), "callback_url"),
    (payload(callback_url="javascript:alert(1)"), "callback_url"),
    (payload(surprise=True), "surprise"),
    (payload(state="scheduled"), "state"),
    ({k: v for k, v in payload().items() if k != "requested_by"}, "requested_by"),
    (payload(source="Service Now!"), "source"),
])
def test_malformed_payloads_are_400_naming_the_field(api, requester, servers, body, field) -> None:
    res = send(api(requester), body)
    assert res.status_code == 400, res.content
    assert res.json()["code"] == "invalid"
    assert field in res.json()["errors"] or field in res.json()["detail"]
    assert Change.objects.count() == 0


@pytest.mark.parametrize("raw", ["{not json", "", "[]", "null", '"a string"', "1e999999", "\xff\xfe"])
def test_bad_json_is_a_400(api, requester, servers, raw) -> None:
    res = send(api(requester), raw, raw=True)
    assert res.status_code == 400
    assert set(res.json()) >= {"code", "detail"}


def test_window_rules_are_422(api, requester, servers) -> None:
    body = payload(window_start="2030-01-05T22:00:00+00:00", window_end="2030-01-05T21:00:00+00:00")
    res = send(api(requester), body)
    assert res.status_code == 422
    assert res.json()["code"] == "window_invalid"
    assert not AuditEvent.objects.filter(object_type="change").exists()  # users are audited; no change was


def test_huge_body_is_refused_without_a_500(api, requester, servers) -> None:
    res = send(api(requester), payload(description="x" * 3_000_000))
    assert 400 <= res.status_code < 500


def test_wrong_content_type_is_415(api, requester, servers) -> None:
    res = api(requester).post(CHANGES, data="a=b", content_type="application/x-www-form-urlencoded")
    assert res.status_code == 415


@pytest.mark.parametrize("query", [
    {"state": "bogus"}, {"window_after": "yesterday"}, {"window_after": "2030-01-01T00:00:00"},
    {"window_before": "9999-12-31T23:59:59-05:00"},
])
def test_bad_filters_are_400(api, auditor, query) -> None:
    res = api(auditor).get(CHANGES, query)
    assert res.status_code == 400, res.content
    assert res.json()["code"] == "invalid"


@pytest.mark.parametrize("query", [{"limit": "-1"}, {"offset": "abc"}, {"limit": "x" * 5000}, {"server": "\x00"}])
def test_odd_paging_and_search_values_never_500(api, auditor, query) -> None:
    res = api(auditor).get(CHANGES, query)
    assert res.status_code in (200, 400), res.content


@pytest.mark.parametrize("url", [f"{CHANGES}abc/", f"{CHANGES}999999/", f"{CHANGES}99999999999999999999999/",
                                 "/api/v1/no-such-thing/"])
def test_bad_ids_are_404(api, auditor, url) -> None:
    res = api(auditor).get(url)
    assert res.status_code == 404
    assert res.json()["code"] == "not_found"


def test_bad_headers_never_500(api, requester, servers) -> None:
    client = api(requester)
    res = client.post(CHANGES, data=json.dumps(payload()), content_type="application/json",
                      HTTP_X_REQUEST_ID="<script>" + "x" * 500)
    assert res.status_code == 201
    assert res["X-Request-ID"] != "<script>"
    anonymous = api(None)
    for header in ("Token", "Bearer a b c", "Token \u00e9t\u00e9", "Basic Zm9vOmJhcg=="):
        assert anonymous.get(CHANGES, HTTP_AUTHORIZATION=header).status_code == 401, header


def test_approve_with_wrong_types_is_400(api, requester, servers, alice) -> None:
    change_id = send(api(requester), payload()).json()["id"]
    for body in ({"comment": ["a"]}, {"comment": None}, {}, {"comment": "ok", "extra": 1}):
        res = send(api(alice), body, url=f"{CHANGES}{change_id}/approve/")
        assert res.status_code == 400, (body, res.content)


def test_patch_with_bad_values_changes_nothing(api, requester, servers) -> None:
    change_id = send(api(requester), payload()).json()["id"]
    res = send(api(requester), {"window_end": "2030-01-05T21:00:00+00:00"}, url=f"{CHANGES}{change_id}/",
               method="patch")
    assert res.status_code == 422
    assert Change.objects.get(pk=change_id).window_end.hour == 0
