"""The rules of change requests, enforced by the services against the database."""
from __future__ import annotations

import pytest
from django.test import override_settings

from changes import services
from changes.errors import (
    AlreadyDecided,
    FreezeConflict,
    IdempotencyConflict,
    InvalidRequest,
    NotPermitted,
    ScheduleConflict,
    SeparationOfDuties,
    StateConflict,
    UnknownServers,
    WindowInvalid,
)
from changes.models import AuditEvent, Change, FreezeWindow
from changes.states import State, TransitionNotAllowed
from tests.conftest import make_user, window
from tests.support.catalogue import pre_approved

pytestmark = pytest.mark.django_db


def create(actor, *, servers=("EX01",), change_type="normal", risk="medium", ref="CHG0030012", hours=0.0,
           length=2.0, **extra):
    start, end = window(hours, length)
    data = {
        "source": "servicenow", "external_ref": ref, "title": "CU15", "description": "", "change_type": change_type,
        "risk": risk, "impact": "medium", "servers": list(servers), "plan": "maintenance", "window_start": start,
        "window_end": end, "requested_by": "carol@example.com", "notify": [], "callback_url": "", **extra,
    }
    if change_type == "standard" and "standard_template" not in extra:
        data["standard_template"] = pre_approved(servers)
    return services.change_create(actor=actor, data=data)


@pytest.mark.parametrize(("change_type", "risk", "needed", "state"), [
    ("standard", "low", 0, State.SCHEDULED),
    ("normal", "low", 1, State.AWAITING_APPROVAL),
    ("normal", "medium", 2, State.AWAITING_APPROVAL),
    ("normal", "high", 2, State.AWAITING_APPROVAL),
    ("emergency", "high", 1, State.AWAITING_APPROVAL),
])
def test_approvals_required_follow_type_and_risk(requester, servers, change_type, risk, needed, state) -> None:
    change, created = create(requester, change_type=change_type, risk=risk)
    assert created
    assert change.approvals_required == needed
    assert change.state == state


@override_settings(EXMAINT={**__import__("django.conf").conf.settings.EXMAINT, "APPROVALS_NORMAL_LOW": 3})
def test_approval_numbers_are_configurable(requester, servers) -> None:
    change, _ = create(requester, risk="low")
    assert change.approvals_required == 3


def test_normal_medium_change_needs_two_distinct_approvers(requester, servers, alice, bob) -> None:
    change, _ = create(requester)
    services.change_approve(change, actor=alice, comment="CU tested in the lab")
    assert Change.objects.get(pk=change.pk).state == State.AWAITING_APPROVAL
    with pytest.raises(AlreadyDecided):
        services.change_approve(change, actor=alice, comment="again")
    services.change_approve(change, actor=bob, comment="OK for Saturday")
    assert Change.objects.get(pk=change.pk).state == State.SCHEDULED


def test_approval_refuses_the_api_client_that_posted_it(servers) -> None:
    poster = make_user("jira", "requester", "approver", client=True, source="jira")
    change, _ = create(poster, source="jira")
    with pytest.raises(SeparationOfDuties):
        services.change_approve(change, actor=poster, comment="self-approval")


def test_approval_refuses_the_person_named_as_requester(requester, servers, carol) -> None:
    change, _ = create(requester)
    with pytest.raises(SeparationOfDuties):
        services.change_approve(change, actor=carol, comment="mine")


def test_separation_of_duties_binds_superusers_too(requester, servers) -> None:
    boss = make_user("root", superuser=True, email="root@example.com")
    change, _ = create(requester, requested_by="ROOT@example.com")
    with pytest.raises(SeparationOfDuties):
        services.change_approve(change, actor=boss, comment="I am root")
    with pytest.raises(SeparationOfDuties):
        services.change_reject(change, actor=boss, comment="I am root")


def test_superuser_may_approve_someone_elses_change(requester, servers, root) -> None:
    change, _ = create(requester, risk="low")
    assert services.change_approve(change, actor=root, comment="fine").state == State.SCHEDULED


def test_approval_needs_the_approver_role_and_a_comment(requester, servers, operator, alice) -> None:
    change, _ = create(requester)
    with pytest.raises(NotPermitted):
        services.change_approve(change, actor=operator, comment="not mine to approve")
    with pytest.raises(InvalidRequest):
        services.change_approve(change, actor=alice, comment="   ")


def test_rejection_ends_the_change(requester, servers, alice) -> None:
    change, _ = create(requester)
    services.change_reject(change, actor=alice, comment="no rollback plan")
    change.refresh_from_db()
    assert change.state == State.REJECTED
    with pytest.raises(TransitionNotAllowed) as err:
        services.change_approve(change, actor=alice, comment="changed my mind")
    assert err.value.allowed == []


def test_editing_the_window_voids_approvals_and_requires_approval_again(requester, servers, alice, bob) -> None:
    change, _ = create(requester)
    services.change_approve(change, actor=alice, comment="ok")
    services.change_approve(change, actor=bob, comment="ok")
    start, end = window(24)
    change = services.change_update(change, actor=requester, data={"window_start": start, "window_end": end},
                                    reason="moved by CAB")
    assert change.state == State.AWAITING_APPROVAL
    assert change.approvals.filter(voided_at__isnull=True).count() == 0
    actions = list(AuditEvent.objects.filter(object_id=str(change.pk)).values_list("action", flat=True))
    assert actions[-3:] == ["change.updated", "change.approvals_voided", "change.transition"]
    services.change_approve(change, actor=alice, comment="new date ok")
    services.change_approve(change, actor=bob, comment="new date ok")
    assert Change.objects.get(pk=change.pk).state == State.SCHEDULED


def test_editing_the_title_keeps_the_approvals(requester, servers, alice, bob) -> None:
    change, _ = create(requester)
    services.change_approve(change, actor=alice, comment="ok")
    services.change_approve(change, actor=bob, comment="ok")
    change = services.change_update(change, actor=requester, data={"title": "CU15 (typo fixed)"})
    assert change.state == State.SCHEDULED
    assert change.approvals.filter(voided_at__isnull=True).count() == 2


def test_adding_a_server_voids_the_approval(requester, servers, alice) -> None:
    change, _ = create(requester, risk="low")
    services.change_approve(change, actor=alice, comment="ok")
    change = services.change_update(change, actor=requester, data={"servers": ["EX01", "EX05"]})
    assert change.state == State.AWAITING_APPROVAL


def test_a_running_change_cannot_be_edited(requester, servers) -> None:
    change, _ = create(requester, change_type="standard")
    services.change_transition(change.pk, State.RUNNING, actor="system:runner")
    with pytest.raises(StateConflict):
        services.change_update(change, actor=requester, data={"title": "x"})


def test_window_must_be_ordered_and_not_too_long(requester, servers) -> None:
    with pytest.raises(WindowInvalid, match="after"):
        create(requester, length=-1)
    with pytest.raises(WindowInvalid, match="maximum of 8 h"):
        create(requester, length=8.5)
    assert create(requester, length=8)[1]


def test_unknown_servers_are_named(requester, servers) -> None:
    with pytest.raises(UnknownServers) as err:
        create(requester, servers=["EX01", "EX99", "MBX7"])
    assert err.value.extra["servers"] == ["EX99", "MBX7"]


def test_server_names_match_without_case(requester, servers) -> None:
    change, _ = create(requester, servers=["ex01"])
    assert [s.name for s in change.servers.all()] == ["EX01"]


def test_overlap_on_the_same_server_is_refused_naming_the_change(requester, servers) -> None:
    first, _ = create(requester, change_type="standard", ref="CHG1")
    with pytest.raises(ScheduleConflict) as err:
        create(requester, change_type="standard", ref="CHG2", hours=1)
    assert first.number in err.value.detail
    assert err.value.extra["conflicting_change"] == first.number


def test_overlap_on_another_member_of_the_same_dag_is_refused(requester, servers) -> None:
    first, _ = create(requester, change_type="standard", servers=["EX02"], ref="CHG1")
    with pytest.raises(ScheduleConflict, match=first.number):
        create(requester, change_type="standard", servers=["EX03"], ref="CHG2", hours=1)
    # Another DAG, a standalone server, or a window that only touches the end are fine.
    assert create(requester, change_type="standard", servers=["EX05"], ref="CHG3", hours=1)[1]
    assert create(requester, change_type="standard", servers=["EX04"], ref="CHG4", hours=2)[1]


def test_a_change_awaiting_approval_does_not_hold_the_server(requester, servers) -> None:
    create(requester, ref="CHG1")
    assert create(requester, ref="CHG2", hours=1)[1]


def test_approval_rechecks_conflicts(requester, servers, alice) -> None:
    pending, _ = create(requester, ref="CHG1", risk="low")
    create(requester, ref="CHG2", change_type="standard", hours=1)
    with pytest.raises(ScheduleConflict):
        services.change_approve(pending, actor=alice, comment="ok")
    assert Change.objects.get(pk=pending.pk).state == State.AWAITING_APPROVAL
    assert not pending.approvals.exists()  # the refused approval left nothing behind


def freeze(actor, *, servers=(), dag_name="", hours=(0, 4), reason="Year-end close"):
    start, _ = window(hours[0])
    end, _ = window(hours[1])
    data = {"start": start, "end": end, "dag_name": dag_name, "reason": reason}
    if servers:
        data["servers"] = list(servers)
    return services.freeze_window_save(None, actor=actor, data=data)


def test_freeze_window_blocks_normal_changes(requester, servers, operator) -> None:
    fw = freeze(operator)
    with pytest.raises(FreezeConflict, match="Year-end close") as err:
        create(requester)
    assert err.value.extra["freeze_window_id"] == fw.pk


def test_emergency_change_may_run_in_a_freeze_with_the_reason_recorded(requester, servers, operator) -> None:
    freeze(operator)
    change, _ = create(requester, change_type="emergency")
    assert "Year-end close" in change.freeze_override_reason
    event = AuditEvent.objects.get(action="change.created", object_id=str(change.pk))
    assert "freeze window" in event.reason


def test_freeze_limited_to_a_dag_or_servers_spares_the_others(requester, servers, operator) -> None:
    freeze(operator, dag_name="DAG1")
    freeze(operator, servers=["EX05"])
    with pytest.raises(FreezeConflict):
        create(requester, servers=["EX03"], ref="A")
    with pytest.raises(FreezeConflict):
        create(requester, servers=["EX05"], ref="B")
    assert create(requester, servers=["EX01"], ref="C")[1]


def test_business_hours_raise_a_warning_not_a_block(requester, servers) -> None:
    change, _ = create(requester, hours=36)  # Monday 10:00 UTC
    assert change.business_hours_warning
    quiet, _ = create(requester, ref="CHG2", hours=-2)  # Saturday 20:00 UTC
    assert not quiet.business_hours_warning


def test_create_is_idempotent_on_source_and_external_ref(requester, servers) -> None:
    first, created = create(requester)
    again, created_again = create(requester)
    assert created and not created_again
    assert again.pk == first.pk
    with pytest.raises(IdempotencyConflict, match=first.number):
        create(requester, title="something else")
    assert Change.objects.count() == 1


def test_cancel_needs_a_reason_and_a_right(requester, servers, outsider, operator) -> None:
    change, _ = create(requester)
    with pytest.raises(InvalidRequest):
        services.change_cancel(change, actor=requester, reason="")
    with pytest.raises(NotPermitted):
        services.change_cancel(change, actor=outsider, reason="mischief")
    assert services.change_cancel(change, actor=operator, reason="superseded").state == State.CANCELLED


def test_close_sets_the_close_code_after_the_window(requester, servers, operator) -> None:
    change, _ = create(requester, change_type="standard")
    with pytest.raises(TransitionNotAllowed):
        services.change_close(change, actor=operator, close_code="successful", close_notes="n/a")
    for state in (State.RUNNING, State.COMPLETED):
        services.change_transition(change.pk, state, actor="system:runner")
    change.refresh_from_db()
    closed = services.change_close(change, actor=operator, close_code="successful_with_issues",
                                   close_notes="queue drained slowly")
    assert (closed.state, closed.close_code) == (State.CLOSED, "successful_with_issues")


def test_compare_and_set_refuses_a_stale_transition(requester, servers) -> None:
    change, _ = create(requester, change_type="standard")
    stale = Change.objects.get(pk=change.pk)
    services.change_transition(change.pk, State.RUNNING, actor="system:runner")
    with pytest.raises(StateConflict, match="meanwhile"):
        services.change_cancel(stale, actor=requester, reason="too late")


def test_every_transition_is_audited_with_its_actor(requester, servers, alice) -> None:
    change, _ = create(requester, risk="low")
    services.change_approve(change, actor=alice, comment="ok")
    events = AuditEvent.objects.filter(object_type="change", object_id=str(change.pk)).order_by("seq")
    assert [(e.action, e.actor) for e in events] == [
        ("change.created", "client:servicenow"),
        ("change.approved", "user:alice"),
        ("change.transition", "user:alice"),
    ]
    assert events.last().changes == {"state": ["awaiting_approval", "scheduled"], "freeze_override_reason": ["", ""]}


def test_inventory_password_is_encrypted_and_never_audited(operator) -> None:
    server = services.server_save(None, actor=operator, data={"name": "EX09", "fqdn": "ex09.corp.example",
                                                               "password": "S3cret!pass"})
    assert "S3cret" not in server.password_encrypted
    assert server.get_password() == "S3cret!pass"
    event = AuditEvent.objects.get(action="server.created")
    assert "S3cret" not in str(event.changes)


def test_inventory_is_written_by_operators_only(alice) -> None:
    with pytest.raises(NotPermitted):
        services.server_save(None, actor=alice, data={"name": "EX09", "fqdn": "ex09.corp.example"})


def test_freeze_window_changes_are_audited(operator, servers) -> None:
    fw = freeze(operator, servers=["EX01"])
    services.freeze_window_save(fw, actor=operator, data={"reason": "Audit week"})
    services.freeze_window_delete(FreezeWindow.objects.get(pk=fw.pk), actor=operator)
    assert list(AuditEvent.objects.filter(object_type="freezewindow").values_list("action", flat=True)) == [
        "freeze.created", "freeze.updated", "freeze.deleted"]


def test_renaming_the_requester_after_approval_voids_it(requester, servers, alice) -> None:
    change, _ = create(requester, risk="low")
    services.change_approve(change, actor=alice, comment="ok")
    change = services.change_update(change, actor=requester, data={"requested_by": "alice@example.com"})
    assert change.state == State.AWAITING_APPROVAL
    with pytest.raises(SeparationOfDuties):
        services.change_approve(change, actor=alice, comment="now it is mine")


def test_downgrading_to_standard_reschedules_without_approval(requester, servers, alice, bob) -> None:
    change, _ = create(requester, risk="low")
    services.change_approve(change, actor=alice, comment="ok")
    change = services.change_update(change, actor=requester, data={
        "change_type": "standard", "standard_template": pre_approved(["EX01"])})
    assert change.state == State.SCHEDULED
    actions = list(AuditEvent.objects.filter(object_id=str(change.pk)).values_list("action", "reason"))
    assert actions[-3:] == [
        ("change.approvals_voided", "change_type, standard_template changed after approval"),
        ("change.transition", "edited after approval: approval required again"),
        ("change.transition", "standard change: pre-approved"),
    ]


def test_edit_into_an_overlap_or_a_freeze_is_refused(requester, servers, operator) -> None:
    create(requester, change_type="standard", ref="A")
    other, _ = create(requester, ref="B", hours=5)
    start, end = window(1)
    with pytest.raises(ScheduleConflict):
        services.change_update(other, actor=requester, data={"window_start": start, "window_end": end})
    freeze(operator, hours=(10, 20))
    start, end = window(12)
    with pytest.raises(FreezeConflict):
        services.change_update(other, actor=requester, data={"window_start": start, "window_end": end})
    assert Change.objects.get(pk=other.pk).window_start == window(5)[0]


def test_emergency_approved_inside_a_freeze_records_the_override(requester, servers, operator, alice) -> None:
    change, _ = create(requester, change_type="emergency")
    freeze(operator, reason="Board meeting")
    change = services.change_approve(change, actor=alice, comment="outage fix")
    assert change.state == State.SCHEDULED
    assert "Board meeting" in Change.objects.get(pk=change.pk).freeze_override_reason


def test_a_client_posts_only_for_its_own_source(requester, servers) -> None:
    with pytest.raises(NotPermitted, match="servicenow"):
        create(requester, source="jira")


def test_replay_by_another_client_is_a_conflict_that_reveals_nothing(requester, servers) -> None:
    create(requester)
    other = make_user("intruder", "requester", client=True)  # no source: may not post at all (issue 13 D7)
    with pytest.raises(NotPermitted) as err:
        create(other)
    assert "EXM-" not in err.value.detail


def test_a_server_in_an_open_change_cannot_be_renamed_or_moved(requester, servers, operator) -> None:
    create(requester)
    for data in ({"name": "EX01B"}, {"dag_name": "DAG1"}):
        with pytest.raises(StateConflict):
            services.server_save(servers["EX01"], actor=operator, data=data)


def test_a_server_named_by_a_freeze_window_cannot_be_deleted(servers, operator) -> None:
    freeze(operator, servers=["EX05"])
    with pytest.raises(StateConflict, match="freeze"):
        services.server_delete(servers["EX05"], actor=operator)
    # Deleting it would have widened the freeze to every server.
    assert FreezeWindow.objects.get().servers.count() == 1


def test_server_names_are_unique_without_case(servers, operator) -> None:
    with pytest.raises(StateConflict):
        services.server_save(None, actor=operator, data={"name": "ex01", "fqdn": "other.corp.example"})


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_claims_of_one_window_schedule_only_one(requester, servers) -> None:
    import threading

    from django.db import connections

    barrier, results = threading.Barrier(4), []

    def claim(i: int) -> None:
        try:
            barrier.wait()
            create(requester, change_type="standard", ref=f"RACE{i}", servers=["EX02"] if i % 2 else ["EX03"])
            results.append("scheduled")
        except ScheduleConflict:
            results.append("conflict")
        except Exception as exc:  # noqa: BLE001 - shown in the assertion
            results.append(repr(exc))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["conflict", "conflict", "conflict", "scheduled"]
    assert Change.objects.filter(state=State.SCHEDULED).count() == 1
