"""Canonical identities: one person, many names (user name, e-mail, UPN, DOMAIN\\user), compared without case.

``names_of`` is every form under which a user may appear in a change's ``requested_by``; ``names_person`` is the one
comparison ``changes.authority`` makes. The identity and its automatic aliases follow the user's name and e-mail;
admins add the rest. Changes to users, groups, group membership and aliases are written to the audit trail here
(signals, so edits from the admin, the shell and commands are all caught), with the acting user of the request.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_save

from . import audit
from .models import Identity, IdentityAlias
from .request_context import current_actor

log = logging.getLogger(__name__)

# What a user edit records; the password only as "changed" (its hash never reaches the trail).
_USER_FIELDS = ("username", "email", "first_name", "last_name", "is_active", "is_staff", "is_superuser")


def normalize(name: str) -> str:
    return (name or "").strip().casefold()


def account_part(name: str) -> str:
    """The account name inside any of its forms: ``CONTOSO\\jdoe``, ``jdoe@contoso.com`` and ``JDoe`` give ``jdoe``.

    Comparing account parts treats jdoe of two domains as one person. For separation of duties that errs on the
    safe side (an approval refused, never one allowed); aliases name people whose forms differ more."""
    name = normalize(name)
    if "\\" in name:
        name = name.rsplit("\\", 1)[1]
    if "@" in name:
        name = name.split("@", 1)[0]
    return name


def _forms(values: Any) -> set[str]:
    out: set[str] = set()
    for value in values:
        if normalize(value):
            out.update({normalize(value), account_part(value)})
    return out


def names_of(user: Any) -> frozenset[str]:
    """Every normalized name of the user's identity (and the account part of each). Cached on the user object."""
    cached = getattr(user, "_exmaint_names", None)
    if cached is None:
        values = [user.get_username(), user.email or ""]
        try:
            values += [a.value for a in user.identity.aliases.all()]  # prefetched by list callers
        except Identity.DoesNotExist:
            pass
        cached = frozenset(_forms(values))
        user._exmaint_names = cached
    return cached


def remember_names(user: Any, aliases: Iterable[str]) -> None:
    """Cache the names of a user whose identity's aliases were read with it (a list of recipients)."""
    user._exmaint_names = frozenset(_forms([user.get_username(), user.email or "", *aliases]))


def names_person(user: Any, name: str) -> bool:
    """Does ``name`` (as an ITSM writes a person: any case, any of the forms) name this user's identity?"""
    if user is None or not getattr(user, "pk", None) or not normalize(name):
        return False
    names = names_of(user)
    return normalize(name) in names or account_part(name) in names


# --- keeping identities in step with users ----------------------------------------------------------------------------

def sync_identity(user: Any) -> Identity:
    """Create the user's identity if missing and make its automatic aliases the user's current name and e-mail.
    An alias another identity already holds is skipped (and logged): a name never means two people."""
    identity, _ = Identity.objects.get_or_create(user=user)
    wanted = {normalize(user.get_username()): IdentityAlias.Kind.USERNAME}
    if normalize(user.email):
        wanted.setdefault(normalize(user.email), IdentityAlias.Kind.EMAIL)
    current = {normalize(a.value): a for a in identity.aliases.all()}
    stale = [a.pk for key, a in current.items() if a.automatic and key not in wanted]
    if stale:
        IdentityAlias.objects.filter(pk__in=stale).delete()
    for key, kind in wanted.items():
        if key in current:
            continue
        if IdentityAlias.objects.filter(value__iexact=key).exists():
            log.warning("alias %r of %s already names another identity; not added", key, user.get_username())
            continue
        IdentityAlias.objects.bulk_create([IdentityAlias(identity=identity, value=key, kind=kind, automatic=True)])
    user.__dict__.pop("_exmaint_names", None)
    user._state.fields_cache.pop("identity", None)
    return identity


# --- audit of users, groups, membership and aliases -------------------------------------------------------------------

def _actor() -> Any:
    return current_actor() or "system:exmaint"


def _user_pre_save(sender: Any, instance: Any, update_fields: Any = None, **kwargs: Any) -> None:
    if update_fields is not None and set(update_fields) <= {"last_login"}:
        return  # a login: nothing to compare
    stored = sender.objects.filter(pk=instance.pk).values(*_USER_FIELDS, "password").first() if instance.pk else None
    instance._exmaint_before = stored


def _user_post_save(sender: Any, instance: Any, created: bool, update_fields: Any = None, **kwargs: Any) -> None:
    if kwargs.get("raw"):
        return
    if update_fields is not None and set(update_fields) <= {"last_login"}:
        return  # a login, not an edit
    before = getattr(instance, "_exmaint_before", None) or {}
    diff: dict[str, list[Any]] = {
        f: [before.get(f), getattr(instance, f)] for f in _USER_FIELDS
        if created or before.get(f) != getattr(instance, f)
    }
    if created:
        diff = {f: [None, v[1]] for f, v in diff.items()}
    elif before.get("password") != instance.password:
        diff["password"] = ["(set)", "(changed)"]
    with transaction.atomic():
        sync_identity(instance)
        if diff:
            audit.append(actor=_actor(), action="user.created" if created else "user.updated", obj=instance,
                         object_type="user", changes=diff)


def _user_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    audit.append(actor=_actor(), action="user.deleted", object_type="user", object_id=instance.pk,
                 changes={"username": [instance.get_username(), None]})


def _group_pre_save(sender: Any, instance: Group, **kwargs: Any) -> None:
    instance._exmaint_before = Group.objects.filter(pk=instance.pk).values_list("name", flat=True).first() \
        if instance.pk else None


def _group_saved(sender: Any, instance: Group, created: bool, **kwargs: Any) -> None:
    before = getattr(instance, "_exmaint_before", None)
    if kwargs.get("raw") or (not created and before == instance.name):
        return
    audit.append(actor=_actor(), action="group.created" if created else "group.updated", obj=instance,
                 object_type="group", changes={"name": [before, instance.name]})


def _group_deleted(sender: Any, instance: Group, **kwargs: Any) -> None:
    audit.append(actor=_actor(), action="group.deleted", object_type="group", object_id=instance.pk,
                 changes={"name": [instance.name, None]})


def _membership_changed(sender: Any, instance: Any, action: str, reverse: bool, model: Any, pk_set: Any,
                        **kwargs: Any) -> None:
    """user.groups.add/remove/set/clear, from either side (group.user_set too)."""
    if action == "pre_clear":
        related = instance.user_set if reverse else instance.groups
        instance._exmaint_cleared = list(related.values_list("pk", flat=True))
        return
    if action not in ("post_add", "post_remove", "post_clear"):
        return
    pks = set(pk_set or []) if action != "post_clear" else set(getattr(instance, "_exmaint_cleared", []))
    if not pks:
        return
    verb = "added" if action == "post_add" else "removed"
    pairs = ([(instance, g) for g in Group.objects.filter(pk__in=pks)] if not reverse
             else [(u, instance) for u in get_user_model().objects.filter(pk__in=pks)])
    for user, group in pairs:
        user.__dict__.pop("_exmaint_roles", None)
        audit.append(actor=_actor(), action=f"user.group_{verb}", obj=user, object_type="user",
                     changes={"group": [None, group.name] if verb == "added" else [group.name, None]})


def _alias_pre_save(sender: Any, instance: IdentityAlias, **kwargs: Any) -> None:
    instance.value = (instance.value or "").strip()
    stored = IdentityAlias.objects.filter(pk=instance.pk).values("value", "kind", "identity_id").first() \
        if instance.pk else None
    instance._exmaint_before = stored


def _alias_saved(sender: Any, instance: IdentityAlias, created: bool, **kwargs: Any) -> None:
    if kwargs.get("raw"):
        return
    before = getattr(instance, "_exmaint_before", None) or {}
    diff = {f: [before.get(f), getattr(instance, f)] for f in ("value", "kind", "identity_id")
            if created or before.get(f) != getattr(instance, f)}
    if diff:
        audit.append(actor=_actor(), action="identity.alias_added" if created else "identity.alias_updated",
                     object_type="identity", object_id=instance.identity_id, changes=diff)


def _alias_deleted(sender: Any, instance: IdentityAlias, **kwargs: Any) -> None:
    audit.append(actor=_actor(), action="identity.alias_removed", object_type="identity",
                 object_id=instance.identity_id, changes={"value": [instance.value, None]})


def connect() -> None:
    """Called once from ChangesConfig.ready()."""
    user_model = get_user_model()
    pre_save.connect(_user_pre_save, sender=user_model, dispatch_uid="exmaint_user_pre_save")
    post_save.connect(_user_post_save, sender=user_model, dispatch_uid="exmaint_user_post_save")
    post_delete.connect(_user_deleted, sender=user_model, dispatch_uid="exmaint_user_deleted")
    pre_save.connect(_group_pre_save, sender=Group, dispatch_uid="exmaint_group_pre_save")
    post_save.connect(_group_saved, sender=Group, dispatch_uid="exmaint_group_saved")
    post_delete.connect(_group_deleted, sender=Group, dispatch_uid="exmaint_group_deleted")
    m2m_changed.connect(_membership_changed, sender=user_model.groups.through, dispatch_uid="exmaint_membership")
    pre_save.connect(_alias_pre_save, sender=IdentityAlias, dispatch_uid="exmaint_alias_pre_save")
    post_save.connect(_alias_saved, sender=IdentityAlias, dispatch_uid="exmaint_alias_saved")
    post_delete.connect(_alias_deleted, sender=IdentityAlias, dispatch_uid="exmaint_alias_deleted")
