"""Issue 13, separation of duties (changes/authority.py, changes/identities.py): D3 (only the posting source edits
what approvers approve), D4 (people compared as identities, not strings), superusers bound by the same rules,
changes to users, groups and identities audited, and the rule in one place."""
from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import pytest
from django.apps import apps
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth.models import Group, User
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext

from changes import authority, services
from changes.errors import NotPermitted, SeparationOfDuties
from changes.identities import names_person
from changes.models import Approval, AuditEvent, Change, Identity, IdentityAlias
from changes.states import State
from notifications.recipients import approvers_for
from tests.conftest import make_user, window

pytestmark = pytest.mark.django_db
CHANGES = "/api/v1/changes/"
ROOT = Path(__file__).resolve().parents[2]


def create(actor, *, requested_by="carol@example.com", ref="CHG1", servers=("EX01",), hours=0.0, **extra) -> Change:
    start, end = window(hours)
    data = {
        "source": "servicenow", "external_ref": ref, "title": "CU15", "description": "", "change_type": "normal",
        "risk": "medium", "impact": "medium", "servers": list(servers), "plan": "maintenance", "window_start": start,
        "window_end": end, "requested_by": requested_by, "notify": [], "callback_url": "", **extra,
    }
    return services.change_create(actor=actor, data=data)[0]


def patch(api, user, change: Change, body: dict):
    return api(user).patch(f"{CHANGES}{change.pk}/", data=json.dumps(body), content_type="application/json")


# --- D3: what approvers approve is edited only by the source that posted it -------------------------------------------

@pytest.mark.parametrize("body", [
    {"requested_by": "someone.else@example.com"},
    {"risk": "low"},
    {"impact": "low"},
    {"servers": ["EX05"]},
    {"plan": "maintenance-nosetup"},
])
def test_an_operator_approver_cannot_edit_what_approvers_approve(api, requester, servers, body) -> None:
    """Before: an operator who is also an approver PATCHed requested_by away from themselves, then approved."""
    olga = make_user("olga", "operator", "approver", email="olga@example.com")
    change = create(requester, requested_by="olga@example.com")
    res = patch(api, olga, change, body)
    assert res.status_code == 403, res.content
    assert res.json()["code"] == "permission_denied"
    assert "only the source that posted" in res.json()["detail"] and next(iter(body)) in res.json()["detail"]
    assert Change.objects.get(pk=change.pk).requested_by == "olga@example.com"
    assert not AuditEvent.objects.filter(action="change.updated").exists()
    with pytest.raises(SeparationOfDuties):
        services.change_approve(change, actor=olga, comment="mine after all")


def test_a_superuser_cannot_edit_what_approvers_approve(api, requester, servers, root) -> None:
    change = create(requester, requested_by="root@example.com")
    res = patch(api, root, change, {"requested_by": "alice@example.com"})
    assert res.status_code == 403 and "requested_by" in res.json()["detail"]


def test_an_operator_still_edits_the_other_fields(api, requester, servers, operator) -> None:
    change = create(requester)
    res = patch(api, operator, change, {"title": "CU15 (typo fixed)", "notify": ["ops@example.com"]})
    assert res.status_code == 200, res.content
    assert AuditEvent.objects.filter(action="change.updated", actor="user:olga").exists()


def test_the_posting_source_edits_them_voiding_approvals_audited(api, requester, servers, alice) -> None:
    change = create(requester)
    services.change_approve(change, actor=alice, comment="ok")
    other_client = make_user("servicenow-2", "requester", client=True, source="servicenow")
    res = patch(api, other_client, change, {"impact": "high", "requested_by": "dave@example.com"})
    assert res.status_code == 200, res.content
    assert not Approval.objects.filter(change=change, voided_at__isnull=True).exists()
    updated = AuditEvent.objects.get(action="change.updated")
    assert updated.actor == "client:servicenow-2"
    assert updated.changes["requested_by"] == ["carol@example.com", "dave@example.com"]
    assert AuditEvent.objects.filter(action="change.approvals_voided").exists()


def test_another_source_cannot_edit_at_all(api, requester, servers) -> None:
    jira = make_user("jira", "requester", client=True, source="jira")
    change = create(requester)
    assert patch(api, jira, change, {"title": "mine now"}).status_code in (403, 404)


# --- D4: people compared as canonical identities ----------------------------------------------------------------------

@pytest.mark.parametrize("requested_by", ["CONTOSO\\jdoe", "jdoe@contoso.com", "JDoe", " JDOE@CONTOSO.COM ",
                                          "contoso\\JDOE"])
def test_self_approval_is_recognised_in_every_form_of_the_name(requester, servers, requested_by) -> None:
    jdoe = make_user("jdoe", "approver", email="jdoe@contoso.com")
    change = create(requester, requested_by=requested_by)
    with pytest.raises(SeparationOfDuties, match="requested by you"):
        services.change_approve(change, actor=jdoe, comment="self")
    with pytest.raises(SeparationOfDuties):
        services.change_reject(change, actor=jdoe, comment="self")


@pytest.mark.parametrize("requested_by", ["CONTOSO\\jdoe", "jdoe@contoso.com", "JDoe"])
def test_an_approver_without_e_mail_is_recognised_by_user_name_forms(requester, servers, requested_by) -> None:
    jdoe = make_user("jdoe", "approver")
    change = create(requester, requested_by=requested_by)
    assert not authority.may_approve(jdoe, change)
    with pytest.raises(SeparationOfDuties):
        services.change_approve(change, actor=jdoe, comment="self")


def test_an_alias_added_by_an_admin_names_the_same_person(requester, servers) -> None:
    jsmith = make_user("jsmith", "approver", email="jsmith@contoso.com")
    IdentityAlias.objects.create(identity=jsmith.identity, value="John.Smith@contoso.com", kind="upn")
    jsmith = User.objects.get(pk=jsmith.pk)
    for i, name in enumerate(["john.smith@CONTOSO.com", "CONTOSO\\John.Smith"]):
        change = create(requester, requested_by=name, ref=f"CHG{i}", hours=3 * i)
        with pytest.raises(SeparationOfDuties):
            services.change_approve(change, actor=jsmith, comment="self")


def test_other_people_still_approve(requester, servers, alice, bob) -> None:
    change = create(requester, requested_by="CONTOSO\\jdoe")
    make_user("jdoe", "approver", email="jdoe@contoso.com")
    services.change_approve(change, actor=alice, comment="ok")
    assert services.change_approve(change, actor=bob, comment="ok").state == State.SCHEDULED


def test_identities_follow_the_user_and_aliases_are_unique_without_case() -> None:
    jdoe = make_user("jdoe", email="jdoe@contoso.com")
    assert sorted(jdoe.identity.aliases.values_list("value", "kind")) == [("jdoe", "username"),
                                                                         ("jdoe@contoso.com", "email")]
    jdoe.email = "john.doe@contoso.com"
    jdoe.save()
    assert sorted(Identity.objects.get(user=jdoe).aliases.values_list("value", flat=True)) == [
        "jdoe", "john.doe@contoso.com"]
    other = make_user("jdoe2")
    with pytest.raises(IntegrityError), transaction.atomic():
        IdentityAlias.objects.create(identity=other.identity, value="JOHN.DOE@contoso.com")
    assert names_person(User.objects.get(pk=jdoe.pk), "CONTOSO\\JDoe")
    assert not names_person(User.objects.get(pk=other.pk), "CONTOSO\\JDoe")


def test_the_migration_gives_existing_users_their_identity() -> None:
    fill = importlib.import_module("changes.migrations.0014_identities").fill_identities
    first, second = make_user("jdoe", email="JDoe@Contoso.com"), make_user("jdoe-admin", email="jdoe@contoso.com")
    Identity.objects.all().delete()  # as before the migration
    fill(apps, None)
    assert sorted(Identity.objects.get(user=first).aliases.values_list("value", flat=True)) == [
        "jdoe", "jdoe@contoso.com"]
    assert list(Identity.objects.get(user=second).aliases.values_list("value", flat=True)) == ["jdoe-admin"]


def test_the_approval_request_is_not_sent_to_the_requester_by_identity(requester, servers, alice) -> None:
    make_user("jdoe", "approver", email="jdoe@contoso.com")
    make_user("root", superuser=True, email="root@example.com")
    change = create(requester, requested_by="CONTOSO\\JDoe")
    assert approvers_for(change) == ["alice@example.com", "root@example.com"]
    mine = create(requester, requested_by="CONTOSO\\root", ref="CHG2", hours=3)
    assert approvers_for(mine) == ["alice@example.com", "jdoe@contoso.com"]


def test_choosing_the_approvers_to_ask_costs_the_same_queries_for_many(requester, servers, alice) -> None:
    change = create(requester)
    with CaptureQueriesContext(connection) as few:
        approvers_for(change)
    for i in range(6):
        make_user(f"approver{i}", "approver", email=f"a{i}@example.com")
    with CaptureQueriesContext(connection) as many:
        assert len(approvers_for(change)) == 7
    assert len(many.captured_queries) == len(few.captured_queries)


def test_the_admins_awaiting_my_approval_list_hides_changes_requested_under_another_name(client, requester,
                                                                                        servers) -> None:
    jdoe = make_user("jdoe", "approver", email="jdoe@contoso.com")
    mine = create(requester, requested_by="CONTOSO\\jdoe")
    other = create(requester, requested_by="carol@example.com", ref="CHG2", servers=["EX05"])
    client.force_login(jdoe)
    page = client.get("/admin/changes/change/", {"awaiting": "me"}).content.decode()
    assert other.number in page and mine.number not in page


# --- superusers: the same rules ---------------------------------------------------------------------------------------

def test_a_superuser_cannot_approve_a_change_requested_under_another_form_of_their_name(requester, servers,
                                                                                       root) -> None:
    for i, name in enumerate(["CONTOSO\\root", "ROOT"]):
        change = create(requester, requested_by=name, ref=f"CHG{i}", hours=3 * i)
        with pytest.raises(SeparationOfDuties):
            services.change_approve(change, actor=root, comment="I am root")


def test_a_superuser_cannot_approve_as_someone_else(api, client, requester, servers, root, alice) -> None:
    change = create(requester)
    res = api(root).post(f"{CHANGES}{change.pk}/approve/", data=json.dumps({"comment": "ok", "approver": alice.pk}),
                         content_type="application/json")
    assert res.status_code == 400 and not Approval.objects.exists()
    client.force_login(root)
    client.post("/admin/changes/change/", {"action": "approve_selected", ACTION_CHECKBOX_NAME: [str(change.pk)],
                                           "apply": "1", "comment": "ok", "approver": str(alice.pk)})
    assert list(Approval.objects.values_list("approver__username", flat=True)) == ["root"]
    assert AuditEvent.objects.get(action="change.approved").actor == "user:root"


def test_a_role_alone_is_not_enough_for_the_creator(servers) -> None:
    """The identity that created a change never decides on it, whatever its roles."""
    poster = make_user("itsm", "requester", "approver", client=True, source="servicenow")
    change = create(poster)
    assert authority.may_approve(poster, change).error is SeparationOfDuties
    with pytest.raises(NotPermitted):
        services.change_approve(change, actor=make_user("nobody"), comment="no role")


# --- audit of users, groups, membership and identities ----------------------------------------------------------------

def test_groups_renamed_are_audited_and_user_deletion_too(root) -> None:
    group = Group.objects.create(name="emea")
    group.name = "approvers-emea"
    group.save()
    assert AuditEvent.objects.get(action="group.updated").changes == {"name": ["emea", "approvers-emea"]}
    gone = make_user("temp")
    gone_pk = gone.pk
    gone.delete()
    assert AuditEvent.objects.get(action="user.deleted", object_id=str(gone_pk)).changes == {"username": ["temp", None]}


def test_a_superuser_editing_their_own_e_mail_in_the_admin_is_audited(client, root) -> None:
    client.force_login(root)
    form = {"username": "root", "email": "me@evil.example", "is_active": "on", "is_staff": "on",
            "is_superuser": "on", "date_joined_0": "2026-01-01", "date_joined_1": "00:00:00",
            "initial-date_joined_0": "2026-01-01", "initial-date_joined_1": "00:00:00"}
    res = client.post(f"/admin/auth/user/{root.pk}/change/", form)
    assert res.status_code == 302, res.content.decode()[:2000]
    event = AuditEvent.objects.get(action="user.updated", object_id=str(root.pk))
    assert event.actor == "user:root"
    assert event.changes["email"] == ["root@example.com", "me@evil.example"]
    assert "password" not in json.dumps(event.changes) or event.changes.get("password") == ["(set)", "(changed)"]
    # The identity follows: the new address names root, the old one is no longer an alias.
    root = User.objects.get(pk=root.pk)
    assert names_person(root, "me@evil.example")
    assert sorted(root.identity.aliases.values_list("value", flat=True)) == ["me@evil.example", "root"]


def test_groups_and_membership_are_audited_with_the_acting_user(client, root) -> None:
    client.force_login(root)
    dave = make_user("dave")
    client.post("/admin/auth/group/add/", {"name": "approver-emea"})
    assert AuditEvent.objects.get(action="group.created").actor == "user:root"
    dave.groups.add(Group.objects.get(name="approver-emea"))
    dave.groups.remove(Group.objects.get(name="approver-emea"))
    added = AuditEvent.objects.get(action="user.group_added", object_id=str(dave.pk))
    assert added.changes == {"group": [None, "approver-emea"]}
    assert AuditEvent.objects.filter(action="user.group_removed", object_id=str(dave.pk)).exists()


def test_aliases_edited_in_the_admin_are_audited(client, root) -> None:
    jdoe = make_user("jdoe", email="jdoe@contoso.com")
    client.force_login(root)
    identity = jdoe.identity
    aliases = list(identity.aliases.order_by("id"))
    form = {"aliases-TOTAL_FORMS": str(len(aliases) + 1), "aliases-INITIAL_FORMS": str(len(aliases)),
            "aliases-MIN_NUM_FORMS": "0", "aliases-MAX_NUM_FORMS": "1000",
            "aliases-2-value": "CONTOSO\\jdoe", "aliases-2-kind": "sam", "aliases-2-identity": str(identity.pk)}
    for i, alias in enumerate(aliases):
        form.update({f"aliases-{i}-id": str(alias.pk), f"aliases-{i}-identity": str(identity.pk),
                     f"aliases-{i}-value": alias.value, f"aliases-{i}-kind": alias.kind})
    res = client.post(f"/admin/changes/identity/{identity.pk}/change/", form)
    assert res.status_code == 302, res.content.decode()[:3000]
    event = AuditEvent.objects.get(action="identity.alias_added")
    assert event.actor == "user:root" and event.changes["value"] == [None, "CONTOSO\\jdoe"]


def test_a_login_is_not_an_edit(client, alice) -> None:
    before = AuditEvent.objects.count()
    res = client.post("/admin/login/", {"username": "alice", "password": "pw-alice", "next": "/admin/"})
    assert res.status_code == 302 and User.objects.get(pk=alice.pk).last_login is not None
    assert AuditEvent.objects.count() == before


# --- D7 and visibility, asked of the same module ---------------------------------------------------------------------

def test_only_a_client_of_a_source_posts_and_only_for_it(requester) -> None:
    assert authority.may_create(requester, "servicenow")
    assert "not 'jira'" in authority.may_create(requester, "jira").reason
    sourceless = make_user("rogue", "requester", client=True, source="")
    assert "registered for a source" in authority.may_create(sourceless, "servicenow").reason
    assert not authority.may_create(make_user("root2", superuser=True), "servicenow")


def test_the_admin_shows_a_change_only_to_those_the_api_shows_it_to(client, requester, servers) -> None:
    """The e-mails link to the admin's change page: it must not show more than the API would."""
    change = create(requester)
    person = make_user("pat", "requester")  # staff, with the requester role, posted nothing
    client.force_login(person)
    assert client.get(f"/admin/changes/change/{change.pk}/change/").status_code in (302, 404)
    assert change.number not in client.get("/admin/changes/change/").content.decode()


# --- one home ---------------------------------------------------------------------------------------------------------

def test_the_separation_of_duties_rule_has_one_home() -> None:
    """Nothing outside changes/authority.py compares a user with requested_by or decides who approves."""
    offenders = []
    pattern = re.compile(r"names_person\(|same_person|requested_by__i|requested_by\.strip|created_by_id\s*==")
    for package in ("changes", "runner", "reports", "notifications", "devtools"):
        for path in (ROOT / package).rglob("*.py"):
            rel = path.relative_to(ROOT).as_posix()
            if rel in ("changes/authority.py", "changes/identities.py") or "/migrations/" in rel:
                continue
            if pattern.search(path.read_text()):
                offenders.append(rel)
    assert offenders == []
