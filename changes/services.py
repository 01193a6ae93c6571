"""One function per use case. Each checks the rules, moves state by compare-and-set, appends the audit event in the
same transaction and queues follow-up work on commit. Only this module assigns Change.state."""
from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q, Value
from django.utils import timezone

from . import audit, authority, catalogue, events, policy
from . import work as work_rules
from .callback_urls import check_callback_url
from .errors import (
    AlreadyDecided,
    FreezeConflict,
    IdempotencyConflict,
    InvalidRequest,
    ScheduleConflict,
    StateConflict,
    UnknownServers,
)
from .models import Approval, Change, FreezeWindow, Role, Server
from .queue import enqueue_report, enqueue_start
from .roles import require_role
from .selectors import prime_servers
from .states import EDITABLE, HOLDS_SERVERS, TERMINAL, WINDOW_ENDED, State, TransitionNotAllowed, check_transition

# Fields whose change voids approvals: what an approver approves (changes.authority.APPROVAL_FIELDS).
PINNED_FIELDS = authority.APPROVAL_FIELDS
EDITABLE_FIELDS = (
    "title", "description", "change_type", "risk", "impact", "servers", "plan", "work",
    "window_start", "window_end", "requested_by", "notify", "notify_affected_mailboxes", "callback_url",
    "standard_template",
)


# --- helpers ----------------------------------------------------------------------------------------------------------

def _digest(data: dict[str, Any]) -> str:
    if data.get("work") == work_rules.DEFAULT_WORK:
        # Requests from before work kinds existed digest without it: a replay of them stays a replay.
        data = {k: v for k, v in data.items() if k != "work"}
    return hashlib.sha256(audit.canonical(audit._jsonable(data))).hexdigest()


def _checked_work(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with its ``work`` complete and checked (changes.work); raises InvalidRequest naming the field."""
    if "work" not in data:
        return data
    try:
        return {**data, "work": work_rules.normalize_work(data["work"])}
    except work_rules.WorkInvalid as exc:
        raise InvalidRequest(str(exc), field=exc.field) from None


def _resolve_servers(names: Iterable[str], *, lock: bool = False) -> list[Server]:
    """The named servers, sorted by name. ``lock``: also take the schedule lock on them (_lock_schedule)."""
    wanted = {n.strip().upper(): n for n in names}
    variants = _case_variants(wanted)
    rows = _lock_schedule(Q(name__in=variants)) if lock else Server.objects.filter(name__in=variants)
    found = {s.name.upper(): s for s in rows if s.name in variants}
    # Server names are NetBIOS names: compare without case.
    missing = sorted(orig for key, orig in wanted.items() if key not in found)
    if missing:
        raise UnknownServers(f"unknown server(s): {', '.join(missing)}", servers=missing)
    return sorted(found.values(), key=lambda s: s.name)


def _case_variants(wanted: dict[str, str]) -> set[str]:
    return {*wanted.keys(), *wanted.values(), *(v.lower() for v in wanted.values())}


def _lock_schedule(named: Q) -> list[Server]:
    """Serialize the check-then-claim of windows that could conflict, and only those: two requests claiming a slot
    on the same server or in the same DAG (check_schedule's conflicts) wait for each other; others run side by side.

    PostgreSQL: row locks (FOR NO KEY UPDATE, which foreign keys to the servers do not wait for) on the named servers
    and every server of their DAGs, taken in primary-key order so two requests cannot deadlock. Call it inside the
    transaction, before check_schedule reads. SQLite: BEGIN IMMEDIATE (settings) already serializes writers.
    Returns the locked servers (the named ones and their DAGs' other members)."""
    dags = Server.objects.filter(named).exclude(dag_name="").values("dag_name")
    return list(Server.objects.filter(named | Q(dag_name__in=dags)).order_by("pk").select_for_update(no_key=True))


def _fingerprint(change: Change, servers: Iterable[Server] | None = None) -> str:
    servers = list(servers) if servers is not None else list(change.servers.all())
    return policy.approval_fingerprint([s.name for s in servers], change.plan, change.window_start, change.window_end,
                                       work=change.work)


def check_schedule(
    *,
    change_type: str,
    servers: list[Server],
    window_start: datetime,
    window_end: datetime,
    exclude_pk: int | None = None,
) -> str:
    """Window shape, conflicts with other held windows (same server or same DAG) and freeze windows.

    Returns the freeze override note for an emergency change inside a freeze window ('' otherwise).
    Raises WindowInvalid, ScheduleConflict or FreezeConflict.
    """
    policy.check_window_shape(window_start, window_end)
    dags = {s.dag_name for s in servers if s.dag_name}
    # One round trip for both checks: the overlapping held windows and freeze windows, as (kind, id, start, end,
    # state or reason) rows; the earliest of each kind is the one named.
    overlapping = Change.objects.filter(
        state__in=HOLDS_SERVERS, window_start__lt=window_end, window_end__gt=window_start
    ).exclude(pk=exclude_pk).filter(Q(servers__in=servers) | Q(servers__dag_name__in=dags))
    freezes = FreezeWindow.objects.filter(start__lt=window_end, end__gt=window_start).filter(
        Q(servers__in=servers) | Q(dag_name__in=dags) | Q(servers__isnull=True, dag_name="")
    )
    rows = sorted(
        overlapping.order_by().values_list(Value("change"), "pk", "window_start", "window_end", "state").union(
            freezes.order_by().values_list(Value("freeze"), "pk", "start", "end", "reason")),
        key=lambda row: (row[0], row[2], row[1]),
    )
    conflict = next((row for row in rows if row[0] == "change"), None)
    if conflict is not None:
        number = Change(pk=conflict[1]).number
        raise ScheduleConflict(
            f"the window overlaps {number} ({conflict[4]}, "
            f"{conflict[2].isoformat()} – {conflict[3].isoformat()}) on the same server or DAG",
            conflicting_change=number,
            conflicting_change_id=conflict[1],
        )
    freeze = next((row for row in rows if row[0] == "freeze"), None)
    if freeze is None:
        return ""
    freeze_pk, start, end, reason = freeze[1:]
    if change_type == Change.ChangeType.EMERGENCY:
        return f"emergency change inside freeze window #{freeze_pk} ({start.isoformat()} – {end.isoformat()}): {reason}"
    raise FreezeConflict(
        f"the window falls in freeze window #{freeze_pk} ({start.isoformat()} – {end.isoformat()}): "
        f"{reason}; only emergency changes may run in a freeze",
        freeze_window_id=freeze_pk,
    )


def _move(change: Change, new: State, *, actor: Any, reason: str = "", **fields: Any) -> Change:
    """Compare-and-set the state; append the transition to the audit trail. Caller holds a transaction."""
    old = change.state
    check_transition(old, new)
    now = timezone.now()
    updated = Change.objects.filter(pk=change.pk, state=old).update(state=new, updated_at=now, **fields)
    if not updated:
        current = Change.objects.filter(pk=change.pk).values_list("state", flat=True).first()
        raise StateConflict(
            f"{change.number} moved from '{old}' to '{current}' meanwhile; reload and try again", state=current
        )
    audit.append(
        actor=actor, action="change.transition", obj=change, reason=reason,
        changes={"state": [old, str(new)], **{k: [getattr(change, k), v] for k, v in fields.items()}},
    )
    audit.flush()  # the transition's handlers read the chain's head (callbacks carry it): write a batch's events now
    change.state = new
    change.updated_at = now
    for key, value in fields.items():
        setattr(change, key, value)
    events.emit(events.CHANGE_TRANSITION, change=change, old=old, new=str(new), actor=actor, reason=reason)
    if new == State.SCHEDULED:
        enqueue_start(change.pk, change.window_start)
    elif new in WINDOW_ENDED:
        enqueue_report(change.pk)
    return change


def _valid_approvers(change: Change, fingerprint: str) -> set[int]:
    return set(
        change.approvals.filter(
            decision=Approval.Decision.APPROVED, fingerprint=fingerprint, voided_at__isnull=True
        ).values_list("approver_id", flat=True)
    )


# --- changes ----------------------------------------------------------------------------------------------------------

def change_create(*, actor: Any, data: dict[str, Any]) -> tuple[Change, bool]:
    """Create a change from an ITSM's request. Idempotent on (source, external_ref).

    Returns (change, created). The same payload again returns the existing change; a different payload for the
    same key raises IdempotencyConflict. Raises UnknownServers, WindowInvalid, ScheduleConflict, FreezeConflict.
    Standard changes must fit the catalogue entry they name (changes.catalogue, else NotStandard); they are
    pre-approved and go straight to ``scheduled``.
    """
    # A change belongs to the source (ITSM) that posted it: its references, replays and edits are that source's.
    authority.may_create(actor, data["source"]).require()
    data = _checked_work(data)
    digest = _digest(data)
    existing = Change.objects.filter(source=data["source"], external_ref=data["external_ref"]).first()
    if existing is not None:
        return _idempotent_replay(existing, digest, actor), False
    if data.get("callback_url"):
        check_callback_url(data["callback_url"])  # DNS: before the transaction, never inside it
    fields = {k: v for k, v in data.items() if k != "servers"}
    try:
        # The chain's lock is taken last, once, for all of the request's events (audit.batch).
        with transaction.atomic(), audit.batch():
            servers = _resolve_servers(data["servers"], lock=True)
            catalogue.check_fit(change_type=data["change_type"], template=data.get("standard_template", ""),
                                plan=data.get("plan", "maintenance"), risk=data["risk"], servers=servers)
            freeze_note = check_schedule(
                change_type=data["change_type"], servers=servers,
                window_start=data["window_start"], window_end=data["window_end"],
            )
            change = Change.objects.create(
                **fields,
                created_by=actor,
                request_digest=digest,
                approvals_required=policy.approvals_required(data["change_type"], data["risk"]),
                business_hours_warning=policy.touches_business_hours(data["window_start"], data["window_end"]),
                freeze_override_reason=freeze_note,
            )
            # A new change has no servers yet: insert the links, no read first; and keep them for the events and
            # the answer (no read-after-write).
            Change.servers.through.objects.bulk_create(
                [Change.servers.through(change_id=change.pk, server_id=s.pk) for s in servers])
            prime_servers(change, servers)
            audit.append(
                actor=actor, action="change.created", obj=change, reason=freeze_note,
                changes={k: [None, v] for k, v in {**fields, "servers": [s.name for s in servers]}.items()},
            )
            events.emit(events.CHANGE_CREATED, change=change)
            if change.approvals_required == 0:
                _move(change, State.SCHEDULED, actor=actor, reason="standard change: pre-approved")
    except IntegrityError:
        # A concurrent request with the same key won the insert.
        existing = Change.objects.filter(source=data["source"], external_ref=data["external_ref"]).first()
        if existing is None:
            raise
        return _idempotent_replay(existing, digest, actor), False
    return change, True


def _idempotent_replay(existing: Change, digest: str, actor: Any) -> Change:
    if not authority.posted_it(actor, existing):
        raise IdempotencyConflict(f"{existing.source}/{existing.external_ref} was posted by another client")
    if existing.request_digest != digest:
        raise IdempotencyConflict(
            f"{existing.source}/{existing.external_ref} already exists as {existing.number} with a different "
            "payload; PATCH that change to edit it",
            change=existing.number, change_id=existing.pk,
        )
    return existing


def change_update(change: Change, *, actor: Any, data: dict[str, Any], reason: str = "") -> Change:
    """Edit a change that has not started. Editing servers, plan or window voids approvals (audited) and sends a
    scheduled change back to ``awaiting_approval``. Scheduling rules are re-checked."""
    authority.may_manage(actor, change, to="edit this change").require()
    unknown = set(data) - set(EDITABLE_FIELDS)
    if unknown:
        raise InvalidRequest(f"these fields cannot be edited: {', '.join(sorted(unknown))}")
    data = _checked_work(data)
    if data.get("callback_url"):
        check_callback_url(data["callback_url"])  # DNS: before the transaction, never inside it
    with transaction.atomic():
        change = Change.objects.select_for_update().get(pk=change.pk)
        if change.state not in EDITABLE:
            raise StateConflict(
                f"{change.number} is '{change.state}'; only changes awaiting approval or scheduled can be edited",
                state=change.state,
            )
        old_servers = list(change.servers.all())
        new_servers = _resolve_servers(data["servers"]) if "servers" in data else old_servers
        _lock_schedule(Q(pk__in=[s.pk for s in new_servers]))
        diff: dict[str, list[Any]] = {}
        for key, value in data.items():
            if key == "servers":
                before, after = [s.name for s in old_servers], [s.name for s in new_servers]
                if before != after:
                    diff[key] = [before, after]
            elif getattr(change, key) != value:
                diff[key] = [getattr(change, key), value]
                setattr(change, key, value)
        if not diff:
            return change
        authority.may_edit_fields(actor, change, diff).require()
        if catalogue.FIT_FIELDS & diff.keys():
            catalogue.check_fit(change_type=change.change_type, template=change.standard_template, plan=change.plan,
                                risk=change.risk, servers=new_servers)
        change.approvals_required = policy.approvals_required(change.change_type, change.risk)
        change.business_hours_warning = policy.touches_business_hours(change.window_start, change.window_end)
        change.freeze_override_reason = check_schedule(
            change_type=change.change_type, servers=new_servers,
            window_start=change.window_start, window_end=change.window_end, exclude_pk=change.pk,
        )
        change.save()
        if "servers" in diff:
            change.servers.set(new_servers)
        audit.append(actor=actor, action="change.updated", obj=change, changes=diff, reason=reason)
        events.emit(events.CHANGE_UPDATED, change=change, diff=diff)
        if any(k in diff for k in PINNED_FIELDS):
            voided = change.approvals.filter(voided_at__isnull=True).update(voided_at=timezone.now())
            if voided:
                audit.append(
                    actor=actor, action="change.approvals_voided", obj=change,
                    changes={"approvals_voided": [voided, 0]},
                    reason=f"{', '.join(k for k in PINNED_FIELDS if k in diff)} changed after approval",
                )
            if change.state == State.SCHEDULED:
                _move(change, State.AWAITING_APPROVAL, actor=actor,
                      reason="edited after approval: approval required again")
        still_approved = len(_valid_approvers(change, _fingerprint(change, new_servers)))
        if change.state == State.AWAITING_APPROVAL and still_approved >= change.approvals_required:
            reason = "standard change: pre-approved" if change.approvals_required == 0 else "approvals complete"
            _move(change, State.SCHEDULED, actor=actor, reason=reason)
    return change


def change_approve(change: Change, *, actor: Any, comment: str) -> Change:
    """Record an approval, always in ``actor``'s name. Separation of duties (changes.authority.may_approve): nobody
    approves a change they requested, superusers included. Each approver counts once. When
    enough distinct approvers approved this fingerprint, the change is scheduled (scheduling rules re-checked)."""
    return _decide(change, actor=actor, comment=comment, decision=Approval.Decision.APPROVED)


def change_reject(change: Change, *, actor: Any, comment: str) -> Change:
    """Reject a change awaiting approval; the same separation of duties applies."""
    return _decide(change, actor=actor, comment=comment, decision=Approval.Decision.REJECTED)


def _decide(change: Change, *, actor: Any, comment: str, decision: str) -> Change:
    verb = "approve" if decision == Approval.Decision.APPROVED else "reject"
    authority.may_approve(actor, change, verb=verb).require()
    if not comment or not comment.strip():
        raise InvalidRequest("a comment is required", field="comment")
    with transaction.atomic(), audit.batch():
        change = Change.objects.select_for_update().get(pk=change.pk)
        target = State.SCHEDULED if decision == Approval.Decision.APPROVED else State.REJECTED
        if change.state != State.AWAITING_APPROVAL:
            raise TransitionNotAllowed(change.state, target)
        authority.may_approve(actor, change, verb=verb).require()  # again, on the locked row
        servers = list(change.servers.all())
        if decision == Approval.Decision.APPROVED:
            _lock_schedule(Q(pk__in=[s.pk for s in servers]))  # before check_schedule reads, below
        fingerprint = _fingerprint(change, servers)
        if change.approvals.filter(approver=actor, fingerprint=fingerprint, voided_at__isnull=True).exists():
            raise AlreadyDecided(f"you already decided on this version of {change.number}; each approver counts once")
        approval = Approval.objects.create(
            change=change, approver=actor, decision=decision, comment=comment.strip(), fingerprint=fingerprint
        )
        audit.append(
            actor=actor, action=f"change.{decision}", obj=change, reason=approval.comment,
            changes={"approval_id": [None, approval.pk], "fingerprint": [None, fingerprint]},
        )
        if decision == Approval.Decision.REJECTED:
            return _move(change, State.REJECTED, actor=actor, reason=approval.comment)
        if len(_valid_approvers(change, fingerprint)) >= change.approvals_required:
            note = check_schedule(
                change_type=change.change_type, servers=servers,
                window_start=change.window_start, window_end=change.window_end, exclude_pk=change.pk,
            )
            _move(change, State.SCHEDULED, actor=actor, reason="approvals complete", freeze_override_reason=note)
    return change


def change_cancel(change: Change, *, actor: Any, reason: str) -> Change:
    """Cancel a change before its window starts; by whoever posted it, its source's requesters or an operator."""
    if not reason or not reason.strip():
        raise InvalidRequest("a reason is required", field="reason")
    authority.may_manage(actor, change, to="cancel this change").require()
    with transaction.atomic():
        return _move(change, State.CANCELLED, actor=actor, reason=reason.strip())


def change_close(change: Change, *, actor: Any, close_code: str, close_notes: str) -> Change:
    """Post-implementation review: set the close code of a finished window and close it."""
    authority.may_manage(actor, change, to="close this change").require()
    if close_code not in Change.CloseCode.values:
        raise InvalidRequest(f"close_code must be one of {', '.join(Change.CloseCode.values)}", field="close_code")
    if change.state not in WINDOW_ENDED:
        raise TransitionNotAllowed(change.state, State.CLOSED)
    with transaction.atomic():
        return _move(change, State.CLOSED, actor=actor, reason=close_notes, close_code=close_code,
                     close_notes=close_notes)


def change_transition(change_id: int, new: State, *, actor: Any, reason: str = "") -> Change:
    """The runner's seam: move a change (scheduled → running ⇄ paused → completed | failed | aborted), audited,
    with the actor passed in explicitly (Celery tasks have no request)."""
    with transaction.atomic():
        change = Change.objects.get(pk=change_id)
        return _move(change, new, actor=actor, reason=reason)


# --- inventory and freeze windows -------------------------------------------------------------------------------------

_SERVER_FIELDS = Server.EDITABLE_FIELDS


def server_edit_check(server: Server, diff: dict[str, Any]) -> None:
    """Refuse edits that would rewrite what changes recorded. Called by server_save and by the admin's form (so the
    admin shows the message on the form rather than failing on save). ``diff`` maps field -> [stored, new]."""
    name = diff["name"][0] if "name" in diff else server.name
    if "name" in diff and server.pk and Change.objects.filter(servers=server.pk).exists():
        numbers = ", ".join(c.number for c in Change.objects.filter(servers=server.pk).order_by("-id")[:5])
        raise StateConflict(f"{name} cannot be renamed: changes name it ({numbers}) and their approvals, "
                            "reports and audit trail refer to it by this name. Add the new name as a new server.")
    if "dag_name" in diff and server.pk:
        open_changes = Change.objects.filter(servers=server.pk).exclude(state__in=TERMINAL | WINDOW_ENDED)
        if open_changes.exists():
            numbers = ", ".join(c.number for c in open_changes[:5])
            raise StateConflict(f"{name}'s DAG cannot change while changes name it ({numbers}): "
                                "their approvals and conflict checks depend on it")


def server_build_reported(server_id: int, build: str, *, actor: Any, reason: str = "") -> bool:
    """Record the build a server reported after an Exchange update (ExSetup.exe's file version) in the inventory,
    audited in the caller's transaction. Returns whether it changed."""
    server = Server.objects.select_for_update().get(pk=server_id)
    if server.build == build:
        return False
    audit.append(actor=actor, action="server.updated", obj=server, changes={"build": [server.build, build]},
                 reason=reason or "build reported by the server after an Exchange update")
    Server.objects.filter(pk=server_id).update(build=build[:32], updated_at=timezone.now())
    return True


def server_save(server: Server | None, *, actor: Any, data: dict[str, Any]) -> Server:
    """Create or edit an inventory entry (operators). The password is write-only: the audit notes that it changed,
    never its value."""
    require_role(actor, Role.OPERATOR, to="edit the server inventory")
    created = server is None
    server = server or Server()
    diff: dict[str, list[Any]] = {}
    for key in _SERVER_FIELDS:
        if key in data and getattr(server, key) != data[key]:
            diff[key] = [None if created else getattr(server, key), data[key]]
            setattr(server, key, data[key])
    if not created:
        server_edit_check(server, diff)
    if "name" in diff and Server.objects.filter(name__iexact=server.name).exclude(pk=server.pk).exists():
        raise StateConflict(f"a server named {server.name} already exists (names are compared without case)")
    server_refuse_clear_text_basic(server)
    if "password" in data:
        server.set_password(data["password"])
        diff["password"] = ["***", "***"]
    if "keytab" in data:
        server.set_keytab(data["keytab"] or None)
        diff["keytab"] = ["***", "***"]
    if "install_password" in data:
        server.set_install_password(data["install_password"])
        diff["install_password"] = ["***", "***"]
    if not diff and not created:
        return server
    with transaction.atomic():
        server.save()
        audit.append(actor=actor, action="server.created" if created else "server.updated", obj=server, changes=diff)
    return server


def _is_loopback(host: str) -> bool:
    try:
        return host.lower() == "localhost" or ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def server_refuse_clear_text_basic(server: Server) -> None:
    """Basic authentication cannot encrypt WinRM messages: over plain http the password and every command would
    cross the network readable. Refused at registration, except on loopback (an SSH tunnel, the simulator) or when
    EXMAINT_ALLOW_UNENCRYPTED_BASIC says the link is trusted. Raises InvalidRequest."""
    if settings.EXMAINT["ALLOW_UNENCRYPTED_BASIC"]:
        return
    for label, auth, url in (("Exchange", server.auth_method, server.effective_endpoint_url),
                             ("WinRM", server.winrm_auth_method or server.auth_method, server.effective_winrm_url)):
        parts = urlsplit(url)
        if auth == Server.AuthMethod.BASIC and parts.scheme == "http" and not _is_loopback(parts.hostname or ""):
            raise InvalidRequest(f"{server.name}: basic authentication over plain http to {parts.hostname} ({label} "
                                 "endpoint) would send the password in clear text; use https or Kerberos")


def server_delete(server: Server, *, actor: Any) -> None:
    require_role(actor, Role.OPERATOR, to="edit the server inventory")
    if server.changes.exists():
        raise StateConflict(f"{server.name} is named by changes and cannot be deleted")
    if server.freeze_windows.exists():
        # Deleting it would silently widen a server-scoped freeze window into a global one.
        raise StateConflict(f"{server.name} is named by freeze windows; edit or delete them first")
    with transaction.atomic():
        audit.append(actor=actor, action="server.deleted", obj=server, changes={"name": [server.name, None]})
        server.delete()


def freeze_window_save(freeze: FreezeWindow | None, *, actor: Any, data: dict[str, Any]) -> FreezeWindow:
    """Create or edit a freeze window (operators and approvers)."""
    require_role(actor, Role.OPERATOR, Role.APPROVER, to="manage freeze windows")
    created = freeze is None
    freeze = freeze or FreezeWindow(created_by=actor)
    start, end = data.get("start", freeze.start), data.get("end", freeze.end)
    if start is None or end is None or end <= start:
        raise InvalidRequest("a freeze window needs start < end")
    servers = _resolve_servers(data["servers"]) if "servers" in data else None
    diff: dict[str, list[Any]] = {}
    for key in ("start", "end", "dag_name", "reason"):
        if key in data and getattr(freeze, key) != data[key]:
            diff[key] = [None if created else getattr(freeze, key), data[key]]
            setattr(freeze, key, data[key])
    with transaction.atomic():
        if servers is not None:
            before = [] if created else [s.name for s in freeze.servers.all()]
            diff["servers"] = [before, [s.name for s in servers]]
        freeze.save()
        if servers is not None:
            freeze.servers.set(servers)
        audit.append(actor=actor, action="freeze.created" if created else "freeze.updated", obj=freeze, changes=diff)
    return freeze


def freeze_window_delete(freeze: FreezeWindow, *, actor: Any) -> None:
    require_role(actor, Role.OPERATOR, Role.APPROVER, to="manage freeze windows")
    with transaction.atomic():
        audit.append(actor=actor, action="freeze.deleted", obj=freeze, reason=freeze.reason,
                      changes={"start": [freeze.start, None], "end": [freeze.end, None]})
        freeze.delete()

