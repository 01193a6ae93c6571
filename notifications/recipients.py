"""Who gets what, read from the database only (the affected mailboxes are read from Exchange at send time, see
notifications.mailboxes)."""
from __future__ import annotations

from collections.abc import Iterable

from django.contrib.auth import get_user_model
from django.db.models import Q

from changes import authority
from changes.models import Change, Role


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
    """Approvers to ask: those who may decide on it (changes.authority.may_approve), so never its requester."""
    users = _holders(Role.APPROVER).select_related("api_client").prefetch_related("identity__aliases")
    return normalize(u.email for u in authority.approvers_to_ask(users, change))


def operators() -> list[str]:
    return normalize(u.email for u in _holders(Role.OPERATOR))


def auditors() -> list[str]:
    return normalize(u.email for u in _holders(Role.AUDITOR))
