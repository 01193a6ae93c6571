"""Who gets what, read from the database only (the affected mailboxes are read from Exchange at send time, see
notifications.mailboxes)."""
from __future__ import annotations

from collections.abc import Iterable

from django.contrib.auth import get_user_model
from django.db.models import Exists, OuterRef, Q

from changes import authority
from changes.aggregates import Joined, split
from changes.identities import remember_names
from changes.models import Change, Role
from changes.roles import remember_roles


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
    # Superusers hold every role (changes.roles.roles_of). Exists, not a join: the users' own groups stay unfiltered
    # for the role annotation of approvers_for.
    user_model = get_user_model()
    member = user_model.groups.through.objects.filter(user_id=OuterRef("pk"), group__name=role)
    return user_model.objects.filter(Exists(member) | Q(is_superuser=True), is_active=True).exclude(
        email="").order_by("username")


def approvers_for(change: Change) -> list[str]:
    """Approvers to ask: those who may decide on it (changes.authority.may_approve), so never its requester.
    One query: each user's roles and identity aliases come with it (the rule needs both)."""
    users = list(_holders(Role.APPROVER).select_related("api_client").annotate(
        role_names=Joined("groups__name"), alias_values=Joined("identity__aliases__value")))
    for user in users:
        remember_roles(user, split(user.role_names))
        remember_names(user, split(user.alias_values))
    return normalize(u.email for u in authority.approvers_to_ask(users, change))


def operators() -> list[str]:
    return normalize(u.email for u in _holders(Role.OPERATOR))


def auditors() -> list[str]:
    return normalize(u.email for u in _holders(Role.AUDITOR))
