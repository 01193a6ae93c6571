"""Issue 13 D14 (one server-name rule for the admin and the API; no renaming of servers that changes name) and D7
(a client posts only for its own source)."""
from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from changes import services
from changes.models import AuditEvent, Change, Server
from tests.conftest import make_user, payload

pytestmark = pytest.mark.django_db
CHANGES = "/api/v1/changes/"
BAD_NAMES = ["-EX01", "EX 01", "EX01;Remove-Mailbox", "EX01$(whoami)", "EXCHANGESERVER01", "ÉX01", "EX\n01"]


def admin_server_form(name: str, **extra: str) -> dict[str, str]:
    return {"name": name, "fqdn": "ex09.corp.example", "auth_method": "ntlm", "operation_timeout": "30",
            "connection_timeout": "30", "verify_tls": "on", **extra}


@pytest.mark.parametrize("name", BAD_NAMES)
def test_the_admin_refuses_the_server_names_the_api_refuses(client, api, operator, name) -> None:
    client.force_login(operator)
    res = client.post("/admin/changes/server/add/", admin_server_form(name))
    assert res.status_code == 200 and "NetBIOS" in res.content.decode()
    by_api = api(operator).post("/api/v1/servers/", data=json.dumps({"name": name, "fqdn": "ex09.corp.example"}),
                                content_type="application/json")
    assert by_api.status_code == 400 and "NetBIOS" in by_api.json()["detail"]
    assert not Server.objects.exists()


def test_a_good_name_is_accepted_by_both(client, api, operator) -> None:
    client.force_login(operator)
    assert client.post("/admin/changes/server/add/", admin_server_form("EX-09")).status_code == 302
    res = api(operator).post("/api/v1/servers/", data=json.dumps({"name": "EX10", "fqdn": "ex10.corp.example"}),
                             content_type="application/json")
    assert res.status_code == 201


def post(api, user, **overrides):
    return api(user).post(CHANGES, data=json.dumps(payload(**overrides)), content_type="application/json")


def test_renaming_a_server_that_changes_name_is_refused_in_the_admin_with_a_message(client, api, requester,
                                                                                     servers, operator) -> None:
    assert post(api, requester).status_code == 201
    client.force_login(operator)
    server = servers["EX01"]
    res = client.post(f"/admin/changes/server/{server.pk}/change/", admin_server_form("EX01B",
                                                                                      fqdn="ex01.corp.example"))
    assert res.status_code == 200
    assert "cannot be renamed" in res.content.decode()
    assert Server.objects.get(pk=server.pk).name == "EX01"


def test_a_server_named_only_by_finished_changes_still_cannot_be_renamed(api, requester, servers, operator) -> None:
    """The report and the audit trail of a cancelled change name the server too."""
    change_id = post(api, requester).json()["id"]
    services.change_cancel(Change.objects.get(pk=change_id), actor=requester, reason="no longer needed")
    res = api(operator).patch(f"/api/v1/servers/{servers['EX01'].pk}/", data=json.dumps({"name": "EX01B"}),
                              content_type="application/json")
    assert res.status_code == 409 and res.json()["code"] == "state_conflict"
    assert "cannot be renamed" in res.json()["detail"] and "EXM-" in res.json()["detail"]
    # Other fields stay editable, and a server no change names may be renamed.
    res = api(operator).patch(f"/api/v1/servers/{servers['EX01'].pk}/", data=json.dumps({"ad_site": "DR"}),
                              content_type="application/json")
    assert res.status_code == 200
    res = api(operator).patch(f"/api/v1/servers/{servers['EX05'].pk}/", data=json.dumps({"name": "EX15"}),
                              content_type="application/json")
    assert res.status_code == 200 and AuditEvent.objects.filter(action="server.updated").count() == 2


def test_a_client_without_a_source_may_not_post_for_any_source(api, servers) -> None:
    sourceless = make_user("rogue", "requester", client=True, source="")
    for source in ("servicenow", "jira"):
        res = post(api, sourceless, source=source)
        assert res.status_code == 403, res.content
        assert "source" in res.json()["detail"]
    assert not Change.objects.exists()


def test_a_requester_without_an_api_client_and_a_superuser_may_not_post(api, servers, root) -> None:
    person = make_user("pat", "requester")
    for user in (person, root):
        assert post(api, user).status_code == 403
    assert not Change.objects.exists()


def test_a_client_posts_only_for_its_own_source_and_references_are_per_source(api, requester, servers) -> None:
    jira = make_user("jira", "requester", client=True, source="jira")
    assert post(api, requester).status_code == 201
    assert post(api, jira).status_code == 403  # servicenow's source, not its own
    # The same reference in another source is another change.
    res = post(api, jira, source="jira", servers=["EX05"])
    assert res.status_code == 201 and res.json()["external_ref"] == "CHG0030012"
    assert Change.objects.filter(external_ref="CHG0030012").count() == 2


def test_create_api_client_needs_a_source_for_a_requester() -> None:
    with pytest.raises(CommandError, match="--source"):
        call_command("create_api_client", "itsm", "--role", "requester", stdout=StringIO())
    call_command("create_api_client", "auditor1", "--role", "auditor", stdout=StringIO())
