"""Issue 13 D10, D13, D15: deep JSON, big bodies and page sizes get clear 4xx answers, never a 500 or a silent
default."""
from __future__ import annotations

import json

import pytest

from changes.api.pagination import MAX_PAGE_SIZE
from tests.conftest import payload

pytestmark = pytest.mark.django_db
CHANGES = "/api/v1/changes/"


@pytest.mark.parametrize("depth", [40, 2_000, 100_000])
def test_deeply_nested_json_is_a_400(api, requester, servers, depth) -> None:
    body = "[" * depth + "]" * depth
    res = api(requester).post(CHANGES, data=body, content_type="application/json")
    assert res.status_code == 400, res.content[:200]
    assert res.json()["code"] == "parse_error"
    assert "nested" in res.json()["detail"]


def test_nesting_inside_a_field_is_a_400(api, requester, servers) -> None:
    nested: object = "x"
    for _ in range(50):
        nested = {"a": nested}
    res = api(requester).post(CHANGES, data=json.dumps(payload(notify=[nested])), content_type="application/json")
    assert res.status_code == 400


def test_a_body_over_one_mebibyte_is_413_with_the_error_shape(api, requester, servers) -> None:
    res = api(requester).post(CHANGES, data=json.dumps(payload(description="x" * (1024 * 1024))),
                              content_type="application/json")
    assert res.status_code == 413, res.content[:200]
    body = res.json()
    assert body["code"] == "request_too_large" and "1048576" in body["detail"]
    assert "X-Request-ID" in res


def test_a_body_under_the_limit_still_works(api, requester, servers) -> None:
    res = api(requester).post(CHANGES, data=json.dumps(payload(description="x" * 15_000)),
                              content_type="application/json")
    assert res.status_code == 201


@pytest.fixture
def five_changes(api, requester, servers) -> None:
    for i in range(5):
        res = api(requester).post(CHANGES, data=json.dumps(payload(external_ref=f"P{i}", hours=10 * i)),
                                  content_type="application/json")
        assert res.status_code == 201


@pytest.mark.usefixtures("five_changes")
def test_page_size_is_honoured(api, auditor) -> None:
    res = api(auditor).get(CHANGES, {"page_size": 2})
    assert res.status_code == 200
    assert len(res.json()["results"]) == 2 and res.json()["count"] == 5
    assert "page_size=2" in res.json()["next"] or "limit=2" in res.json()["next"]
    assert len(api(auditor).get(CHANGES, {"limit": 3}).json()["results"]) == 3


@pytest.mark.usefixtures("five_changes")
def test_the_maximum_page_size_is_accepted(api, auditor) -> None:
    assert api(auditor).get(CHANGES, {"page_size": MAX_PAGE_SIZE}).status_code == 200


@pytest.mark.parametrize("query", [
    {"page_size": MAX_PAGE_SIZE + 1}, {"limit": 100_000}, {"page_size": 0}, {"page_size": "ten"},
    {"limit": "-1"}, {"offset": "abc"}, {"offset": 10**20}, {"limit": 5, "page_size": 7},
])
def test_page_sizes_beyond_the_maximum_or_malformed_are_a_clear_400(api, auditor, query) -> None:
    res = api(auditor).get(CHANGES, query)
    assert res.status_code == 400, res.content
    body = res.json()
    assert body["code"] == "invalid"
    assert set(query) & set(body["errors"])


def test_page_size_is_in_the_schema(api, auditor) -> None:
    schema = api(auditor).get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    params = {p["name"]: p for p in schema["paths"]["/api/v1/changes/"]["get"]["parameters"]}
    assert params["page_size"]["schema"]["maximum"] == MAX_PAGE_SIZE
