"""Who gets what, read from the database only (the affected mailboxes are read from Exchange at send time, see
notifications.mailboxes)."""
from __future__ import annotations

from collections.abc import Iterable

from django.contrib.auth import get_user_model
from django.db.models import Q

from changes.models import Change, Role
from changes.roles import same_person


def normalize(addresses: Iterable[str]) -> list[str]:
    """Unique addresses in first-seen order, compared without case (mailbox local parts are case-insensitive in
    Exchange)."""
    seen: set[str] = set()
    out: list[str] = []
    for address in addresses:
        address = (address or "").strip()
        if address and address.casefold() not in seen:
            seen.add(address.casefold())
            out.append(address)
    return out


def _holders(role: str):  # noqa: ANN202 - a queryset of users
    # Superusers hold every role (changes.roles.roles_of).
    return get_user_model().objects.filter(Q(groups__name=role) | Q(is_superuser=True), is_active=True).exclude(
        email="").distinct().order_by("username")


def approvers_for(change: Change) -> list[str]:
    """Approvers to ask, never the requester: the separation-of-duties rules of changes.services._decide — not the
    identity that posted the change, not the person named in requested_by (by user name or e-mail)."""
    users = _holders(Role.APPROVER).exclude(pk=change.created_by_id)
    return normalize(u.email for u in users if not same_person(u, change.requested_by)
                     and u.email.casefold() != change.requested_by.strip().casefold())


def operators() -> list[str]:
    return normalize(u.email for u in _holders(Role.OPERATOR))


def auditors() -> list[str]:
    return normalize(u.email for u in _holders(Role.AUDITOR))
