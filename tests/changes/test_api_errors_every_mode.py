"""Issue 22 (also found while testing): API errors are JSON in every mode. Under DEBUG an unknown /api/ URL answered
Django's HTML 404 and a POST without the trailing slash a 500 (APPEND_SLASH); while the database was down every API
call answered a 500 page: now 503 with the error shape and Retry-After."""
from __future__ import annotations

import json

import pytest
from django.db import connection
from django.test import override_settings

from changes.models import Change
from tests.conftest import payload


@pytest.mark.django_db
@pytest.mark.parametrize("debug", [True, False])
def test_an_unknown_api_url_is_a_json_404(api, auditor, debug) -> None:
    with override_settings(DEBUG=debug):
        for url in ("/api/v1/no-such-thing/", "/api/v1/no-such-thing", "/api/v2/changes/", "/api/"):
            res = api(auditor).get(url)
            assert res.status_code == 404, url
            assert res["Content-Type"] == "application/json", url
            assert res.json()["code"] == "not_found"


@pytest.mark.django_db
@pytest.mark.parametrize("debug", [True, False])
def test_a_post_without_the_trailing_slash_is_served_not_redirected(api, requester, servers, debug) -> None:
    with override_settings(DEBUG=debug):
        res = api(requester).post("/api/v1/changes", data=json.dumps(payload()), content_type="application/json")
        assert res.status_code == 201, res.content[:300]
        change_id = res.json()["id"]
        res = api(requester).get(f"/api/v1/changes/{change_id}")
        assert res.status_code == 200 and res.json()["id"] == change_id
        res = api(requester).patch(f"/api/v1/changes/{change_id}", data=json.dumps({"title": "New title"}),
                                   content_type="application/json")
        assert res.status_code == 200
    assert Change.objects.get().title == "New title"


@pytest.mark.django_db
def test_other_urls_keep_append_slash(client) -> None:
    res = client.get("/admin")
    assert res.status_code == 301 and res["Location"] == "/admin/"


@pytest.mark.django_db(transaction=True)
def test_while_the_database_is_down_the_api_answers_503_with_retry_after(api, auditor, requester, servers) -> None:
    auditor_client, requester_client = api(auditor), api(requester)  # tokens made while the database is up
    calls = {
        "list": lambda: auditor_client.get("/api/v1/changes/"),
        "create": lambda: requester_client.post("/api/v1/changes/", data=json.dumps(payload()),
                                                content_type="application/json"),
        "unknown token": lambda: api(None).get("/api/v1/audit/verify/", HTTP_AUTHORIZATION="Token abc"),
        "report": lambda: auditor_client.get("/api/v1/changes/1/report/"),
        "calendar": lambda: auditor_client.get("/api/v1/calendar.ics"),
    }
    for name, call in calls.items():
        down = during_outage(call)
        assert down.status_code == 503, (name, down.content[:300])
        assert down.json()["code"] == "database_unavailable", name
        assert int(down["Retry-After"]) > 0
    # Back up: the same clients work again.
    assert auditor_client.get("/api/v1/changes/").status_code == 200


def during_outage(call):  # noqa: ANN001, ANN202
    """Run ``call`` with the database unreachable: the connection closed and pointed where nothing listens."""
    saved = dict(connection.settings_dict)
    connection.close()
    if connection.vendor == "postgresql":
        connection.settings_dict["PORT"] = "9"
    else:
        connection.settings_dict["NAME"] = "/nonexistent-dir/exmaint.sqlite3"
    try:
        return call()
    finally:
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(saved)
