"""Issue 13 D2: the standard-change catalogue. A standard change runs without approvals only when it names an active
pre-approved template and fits it; high risk is never standard; the catalogue is the approvers', audited; the report
names the template."""
from __future__ import annotations

import pytest

from changes import catalogue, policy, services
from changes.errors import NotPermitted, StateConflict
from changes.models import AuditEvent, AuditHead, Change, Server, StandardChangeTemplate
from tests.conftest import make_user, payload, window

pytestmark = pytest.mark.django_db
CHANGES = "/api/v1/changes/"


def template(approver, name: str = "monthly-patch", *, servers=("EX01",), dags=(), max_risk: str = "low",
             plan: str = "maintenance", active: bool = True) -> StandardChangeTemplate:
    return catalogue.template_save(None, actor=approver, data={
        "name": name, "work": "Monthly Windows security update and restart", "plan": plan, "max_risk": max_risk,
        "servers": list(Server.objects.filter(name__in=servers)), "dag_names": list(dags), "active": active})


def post(client, **overrides):
    return client.post(CHANGES, payload(**overrides), format="json")


def test_a_requester_alone_cannot_run_a_high_risk_standard_change_without_approvals(api, requester, servers,
                                                                                     alice) -> None:
    """The finding: {change_type: standard, risk: high} from a requester was scheduled with zero approvals."""
    res = post(api(requester), change_type="standard", risk="high", standard_template="")
    assert res.status_code == 400, res.content
    assert res.json()["code"] == "not_standard" and "high-risk" in res.json()["detail"]
    # Not even with a template that fits in every other way.
    template(alice, max_risk="medium")
    res = post(api(requester), change_type="standard", risk="high", standard_template="monthly-patch")
    assert res.status_code == 400 and res.json()["misfits"] == ["risk"]
    assert not Change.objects.exists()


def test_a_standard_change_must_name_a_catalogue_entry(api, requester, servers, alice) -> None:
    template(alice)
    res = post(api(requester), change_type="standard", risk="low", standard_template="")
    assert res.status_code == 400
    body = res.json()
    assert body["code"] == "not_standard" and body["misfits"] == ["standard_template"]
    assert "monthly-patch" in body["detail"]  # it says which entries exist
    for name, why in (("nope", "no active standard-change template is named 'nope'"),):
        res = post(api(requester), change_type="standard", risk="low", standard_template=name)
        assert res.status_code == 400 and why in res.json()["detail"]


def test_a_fitting_standard_change_is_scheduled_without_approvals_and_names_its_template(api, requester, servers,
                                                                                          alice) -> None:
    template(alice)
    res = post(api(requester), change_type="standard", risk="low", standard_template="monthly-patch")
    assert res.status_code == 201, res.content
    body = res.json()
    assert (body["state"], body["approvals_required"], body["standard_template"]) == ("scheduled", 0, "monthly-patch")
    created = AuditEvent.objects.get(action="change.created", object_id=str(body["id"]))
    assert created.changes["standard_template"] == [None, "monthly-patch"]


def test_what_does_not_fit_is_named(api, requester, servers, alice) -> None:
    template(alice, servers=("EX01",), max_risk="low")
    res = post(api(requester), change_type="standard", risk="medium", standard_template="monthly-patch",
               servers=["EX01", "EX02"], plan="other-plan")
    assert res.status_code == 400
    body = res.json()
    assert body["misfits"] == ["risk", "plan", "servers"]
    detail = body["detail"]
    assert "risk medium is above the template's maximum (low)" in detail
    assert "plan 'other-plan' is not the template's ('maintenance')" in detail
    assert "EX02 is not among the template's servers or DAGs" in detail and "EX01" not in detail.split(":", 1)[1]


def test_a_dag_in_the_template_admits_its_members_only(requester, servers, alice) -> None:
    template(alice, servers=(), dags=("DAG1",))
    change, _ = services.change_create(actor=requester, data={
        **payload(change_type="standard", risk="low", servers=["EX02", "EX03"], standard_template="monthly-patch"),
        "window_start": window()[0], "window_end": window()[1]})
    assert change.state == "scheduled"
    with pytest.raises(catalogue.NotStandard, match="EX05 is not among"):
        catalogue.check_fit(change_type="standard", template="monthly-patch", plan="maintenance", risk="low",
                            servers=[servers["EX02"], servers["EX05"]])


def test_an_inactive_template_cannot_be_named(api, requester, servers, alice) -> None:
    template(alice, active=False)
    res = post(api(requester), change_type="standard", risk="low", standard_template="monthly-patch")
    assert res.status_code == 400 and "no active standard-change template" in res.json()["detail"]


def test_a_template_on_a_normal_change_is_refused(api, requester, servers, alice) -> None:
    template(alice)
    res = post(api(requester), change_type="normal", standard_template="monthly-patch")
    assert res.status_code == 400 and res.json()["misfits"] == ["change_type"]


def test_an_edit_that_leaves_the_template_is_refused(api, requester, servers, alice) -> None:
    template(alice)
    change_id = post(api(requester), change_type="standard", risk="low",
                     standard_template="monthly-patch").json()["id"]
    client = api(requester)
    for body, misfit in (({"servers": ["EX05"]}, "servers"), ({"risk": "high"}, "risk"),
                         ({"risk": "medium"}, "risk"), ({"standard_template": ""}, "standard_template")):
        res = client.patch(f"{CHANGES}{change_id}/", body, format="json")
        assert res.status_code == 400 and res.json()["misfits"] == [misfit], (body, res.content)
    change = Change.objects.get(pk=change_id)
    assert (change.state, change.risk, [s.name for s in change.servers.all()]) == ("scheduled", "low", ["EX01"])
    # Leaving the catalogue the honest way: a normal change, which needs approval again.
    res = client.patch(f"{CHANGES}{change_id}/", {"change_type": "normal", "standard_template": ""}, format="json")
    assert res.status_code == 200 and res.json()["state"] == "awaiting_approval"


def test_high_risk_is_never_pre_approved_by_policy() -> None:
    assert policy.approvals_required("standard", "low") == 0
    assert policy.approvals_required("standard", "high") == policy.approvals_required("normal", "high") > 0


def test_the_catalogue_is_kept_by_approvers_and_every_edit_is_audited(servers, alice, bob, operator) -> None:
    with pytest.raises(NotPermitted):
        template(operator)
    entry = template(alice)
    assert (entry.approved_by, entry.max_risk) == (alice, "low")
    catalogue.template_save(entry, actor=bob, data={"max_risk": "medium", "servers": [servers["EX01"],
                                                                                       servers["EX05"]]})
    entry.refresh_from_db()
    assert entry.approved_by == bob and entry.approved_at is not None
    with pytest.raises(StateConflict, match="cannot be renamed"):
        catalogue.template_save(entry, actor=bob, data={"name": "other"})
    with pytest.raises(catalogue.NotStandard, match="never standard"):
        catalogue.template_save(entry, actor=bob, data={"max_risk": "high"})
    events = list(AuditEvent.objects.filter(object_type="standardchangetemplate").order_by("seq"))
    assert [(e.action, e.actor) for e in events] == [("standard_template.created", "user:alice"),
                                                     ("standard_template.updated", "user:bob")]
    assert events[1].changes["max_risk"] == ["low", "medium"]
    assert events[1].changes["servers"] == [["EX01"], ["EX01", "EX05"]]
    assert events[1].changes["approved"][0][0] == "alice" and events[1].changes["approved"][1][0] == "bob"


def test_approvers_maintain_the_catalogue_in_the_admin(client, servers, alice, operator) -> None:
    client.force_login(alice)
    res = client.post("/admin/changes/standardchangetemplate/add/", {
        "name": "dag1-cu", "work": "Exchange CU on DAG1 members", "plan": "maintenance", "servers": [],
        "dag_names": ["DAG1"], "max_risk": "medium", "active": "on"})
    assert res.status_code == 302, res.content.decode()[:2000]
    entry = StandardChangeTemplate.objects.get(name="dag1-cu")
    assert (entry.dag_names, entry.approved_by) == (["DAG1"], alice)
    assert AuditEvent.objects.filter(action="standard_template.created", actor="user:alice").exists()
    # High risk is not even offered; deletion is not possible (deactivate instead).
    res = client.post(f"/admin/changes/standardchangetemplate/{entry.pk}/change/", {
        "work": "x", "plan": "maintenance", "dag_names": ["DAG1"], "max_risk": "high"})
    assert res.status_code == 200 and b"Select a valid choice" in res.content
    entry.refresh_from_db()
    assert (entry.max_risk, entry.work) == ("medium", "Exchange CU on DAG1 members")
    assert client.get(f"/admin/changes/standardchangetemplate/{entry.pk}/delete/").status_code == 403
    client.force_login(operator)
    assert client.get("/admin/changes/standardchangetemplate/").status_code == 200
    assert client.get("/admin/changes/standardchangetemplate/add/").status_code == 403


def test_the_report_names_the_template_as_it_was_approved(requester, servers, alice, bob) -> None:
    from reports.context import build_report_data
    from reports.render import render_html

    entry = template(alice)
    change, _ = services.change_create(actor=requester, data={
        **payload(change_type="standard", risk="low", standard_template="monthly-patch"),
        "window_start": window()[0], "window_end": window()[1]})
    catalogue.template_save(entry, actor=bob, data={"work": "Something else entirely"})  # after the change
    head = AuditHead.objects.get(id=1)
    data = build_report_data(change.pk, head_seq=head.seq, head_hash=head.hash)
    assert data.standard_template.startswith("monthly-patch: Monthly Windows security update and restart "
                                             "(pre-approved by alice, ")
    html = render_html(data)
    assert "Standard-change template" in html and "monthly-patch" in html


def test_the_schema_declares_the_field_and_the_error(api, auditor) -> None:
    from tests.support.contract import exported_schema

    schema = exported_schema()
    assert "standard_template" in schema["components"]["schemas"]["ChangeCreateRequest"]["properties"]
    assert "standard_template" in schema["components"]["schemas"]["Change"]["properties"]
    assert "not_standard" in schema["components"]["schemas"]["ErrorCodeEnum"]["enum"]


def test_a_superuser_requester_gets_no_exemption(api, servers, alice) -> None:
    root = make_user("itsm-root", "requester", superuser=True, source="servicenow", client=True)
    res = post(api(root), change_type="standard", risk="low", standard_template="")
    assert res.status_code == 400 and res.json()["code"] == "not_standard"


def test_a_template_needs_a_valid_unused_name(servers, alice) -> None:
    from changes.errors import InvalidRequest

    template(alice)
    for name in ("monthly-patch", "", "Bad Name"):
        with pytest.raises(InvalidRequest):
            template(alice, name=name)
