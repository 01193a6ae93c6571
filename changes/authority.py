"""Who may do what to a change: the one home of the separation-of-duties rules.

The API, the admin, the services, the dry run, the report download and the notifications' recipients all ask here;
nothing else restates these rules. Roles are Django groups (``changes.roles``); people are compared as canonical
identities (``changes.identities``), never as strings. Superusers hold every role but are bound by the same rules:
they cannot approve a change they requested, nor edit what an approver approves unless they posted it.

Each ``may_*`` returns a ``Verdict``: truthy when allowed, otherwise with the reason to show (``.require()`` raises
it as the matching domain error, 403).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.db.models import Q, QuerySet

from .errors import DomainError, NotPermitted, SeparationOfDuties
from .identities import names_person
from .models import Approval, Change, Role
from .roles import has_role, source_of
from .states import State

# What an approver approves: the servers, plan and window (the fingerprint), who asked for it (separation of duties
# is judged against requested_by) and how much approval it needs (type, risk, impact). Only the source that posted
# the change edits them, and any edit of one voids the approvals.
APPROVAL_FIELDS = ("servers", "plan", "work", "window_start", "window_end", "requested_by", "change_type", "risk",
                   "impact", "standard_template")


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    reason: str = ""
    error: type[DomainError] = NotPermitted

    def __bool__(self) -> bool:
        return self.allowed

    def require(self) -> None:
        if not self.allowed:
            raise self.error(self.reason)


ALLOWED = Verdict(True)


def _refuse(reason: str, error: type[DomainError] = NotPermitted) -> Verdict:
    return Verdict(False, reason, error)


# --- who the change belongs to ----------------------------------------------------------------------------------------

def posted_it(user: Any, change: Change) -> bool:
    """The identity that created the change, or a client of the source (ITSM) that posted it."""
    if user is None or not getattr(user, "pk", None):
        return False
    own = source_of(user)
    return change.created_by_id == user.pk or (bool(own) and own == change.source)


def requested_it(user: Any, change: Change) -> bool:
    """Separation of duties' test: the user posted the change or is the person its requested_by names."""
    return posted_it(user, change) or names_person(user, change.requested_by)


# --- creating and seeing ----------------------------------------------------------------------------------------------

def may_create(user: Any, source: str) -> Verdict:
    """Only a requester API client registered for a source posts changes, and only for that source: an identity
    without a source would otherwise post under any source's name and squat its external references."""
    if not has_role(user, Role.REQUESTER):
        return _refuse("you need the requester role to create changes")
    own = source_of(user)
    if not own:
        return _refuse("only an API client registered for a source system may post changes; this identity has none "
                       "(create_api_client NAME --role requester --source SOURCE)")
    if source != own:
        return _refuse(f"this client posts changes for source '{own}', not '{source}'")
    return ALLOWED


def visible_changes(user: Any, changes: QuerySet[Change]) -> QuerySet[Change]:
    """``changes`` narrowed to those ``user`` may see: all of them for approvers, operators and auditors; a requester
    sees the changes it posted and those of its source system."""
    if has_role(user, Role.APPROVER, Role.OPERATOR, Role.AUDITOR):
        return changes
    if has_role(user, Role.REQUESTER):
        own = source_of(user)
        return changes.filter(Q(created_by=user) | Q(source=own)) if own else changes.filter(created_by=user)
    return changes.none()


def may_view(user: Any, change: Change) -> bool:
    return visible_changes(user, Change.objects.filter(pk=change.pk)).exists()


def may_dry_run(user: Any, change: Change) -> Verdict:
    """Before approval too (it is how approvers see what they approve): operators, approvers and the change's
    requester (the integration that posted it, its source, or the person it names)."""
    if has_role(user, Role.OPERATOR, Role.APPROVER) or names_person(user, change.requested_by):
        return ALLOWED
    if has_role(user, Role.REQUESTER) and posted_it(user, change):
        return ALLOWED
    return _refuse("you may not dry-run this change")


# --- editing, cancelling, closing -------------------------------------------------------------------------------------

def may_manage(user: Any, change: Change, *, to: str) -> Verdict:
    """Edit (fields other than the approval's), cancel, close: the source that posted it, or an operator."""
    if has_role(user, Role.OPERATOR) or (has_role(user, Role.REQUESTER) and posted_it(user, change)):
        return ALLOWED
    return _refuse(f"you may not {to}")


def may_edit_field(user: Any, change: Change, field: str) -> Verdict:
    return may_edit_fields(user, change, [field])


def may_edit_fields(user: Any, change: Change, fields: Iterable[str]) -> Verdict:
    """The approval's fields only by the source that posted the change (and its creator); the others as
    ``may_manage``. Otherwise an approver could rewrite requested_by and then approve their own change."""
    verdict = may_manage(user, change, to="edit this change")
    if not verdict:
        return verdict
    pinned = [f for f in APPROVAL_FIELDS if f in set(fields)]
    if pinned and not (has_role(user, Role.REQUESTER) and posted_it(user, change)):
        return _refuse(f"only the source that posted {change.number} ({change.source}) may edit "
                       f"{', '.join(pinned)}: they are what approvers approve")
    return ALLOWED


# --- deciding ---------------------------------------------------------------------------------------------------------

def may_approve(user: Any, change: Change, *, verb: str = "approve") -> Verdict:
    """Approvers, never the change's requester: not the identity or source that posted it, not the person its
    requested_by names (by identity: any alias, any case). Superusers included. The approval is always recorded
    as ``user``: nobody decides in someone else's name."""
    if not has_role(user, Role.APPROVER):
        return _refuse(f"you need the approver role to {verb} changes")
    if posted_it(user, change):
        return _refuse(f"you posted {change.number}; someone else must decide on it", SeparationOfDuties)
    if names_person(user, change.requested_by):
        return _refuse(f"{change.number} was requested by you ({change.requested_by}); someone else must decide "
                       "on it", SeparationOfDuties)
    return ALLOWED


def approvers_to_ask(users: Iterable[Any], change: Change) -> list[Any]:
    """Of ``users``, those who may decide on ``change`` (the approval request's recipients)."""
    return [u for u in users if may_approve(u, change)]


def awaiting_decision_by(user: Any, changes: QuerySet[Change]) -> QuerySet[Change]:
    """Changes awaiting approval that ``user`` may decide on and has not decided on yet (this version)."""
    already = Approval.objects.filter(approver=user, voided_at__isnull=True).values("change_id")
    candidates = changes.filter(state=State.AWAITING_APPROVAL).exclude(pk__in=already)
    return changes.filter(pk__in=[c.pk for c in candidates.only("pk", "created_by_id", "source", "requested_by")
                                  if may_approve(user, c)])


# --- running and reading the record -----------------------------------------------------------------------------------

def may_operate(user: Any, change: Change | None = None, *, to: str = "operate windows") -> Verdict:
    """Start a window, decide on a pause, report the work done: operators."""
    if has_role(user, Role.OPERATOR):
        return ALLOWED
    return _refuse(f"you need the operator role to {to}")


def may_download_report(user: Any, change: Change) -> Verdict:
    """Auditors, operators and the change's approvers (anyone who decided on it) read its report."""
    if has_role(user, Role.AUDITOR, Role.OPERATOR):
        return ALLOWED
    if has_role(user, Role.APPROVER) and Approval.objects.filter(change=change, approver=user).exists():
        return ALLOWED
    return _refuse("the report is for auditors, operators and the change's approvers")
