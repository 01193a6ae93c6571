"""Which roles an identity holds. Roles are Django groups (see models.Role); superusers hold every role.

What a role may do to a given change — separation of duties included — is changes.authority's to say."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .errors import NotPermitted
from .models import Role


def roles_of(user: Any) -> frozenset[str]:
    if user is None or not user.is_authenticated:
        return frozenset()
    cached = getattr(user, "_exmaint_roles", None)
    if cached is None:
        # groups.all(), not values_list: lists of users prefetch their groups (one query for all of them).
        cached = frozenset(Role.values) if user.is_superuser else frozenset(g.name for g in user.groups.all())
        user._exmaint_roles = cached
    return cached


def remember_roles(user: Any, group_names: Iterable[str]) -> None:
    """Cache the roles of a user whose group names were read with it (the API's token lookup)."""
    user._exmaint_roles = frozenset(Role.values) if user.is_superuser else frozenset(n for n in group_names if n)


def has_role(user: Any, *roles: str) -> bool:
    return bool(roles_of(user) & set(roles))


def require_role(user: Any, *roles: str, to: str) -> None:
    if not has_role(user, *roles):
        raise NotPermitted(f"you need the {' or '.join(roles)} role to {to}")


def source_of(user: Any) -> str:
    client = getattr(user, "api_client", None) if user is not None else None
    return client.source if client is not None else ""

