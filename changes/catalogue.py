"""The standard-change catalogue: pre-approved templates (StandardChangeTemplate) and the rule that a standard change
runs without approvals only when it names an active template and fits it — same plan, servers within the template's
servers or DAGs, risk at most the template's maximum, never high. The work a fitting change does is the template's.

Approvers maintain the catalogue (pre-approving work is an approval decision); each save records the approver and
the time and is audited. Templates are deactivated, never deleted, and their names are fixed, so a change's
``standard_template`` keeps naming what was pre-approved."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from . import audit
from .errors import DomainError, InvalidRequest, StateConflict
from .models import Change, Role, Server, StandardChangeTemplate
from .roles import require_role

_RISK_ORDER = {Change.Level.LOW: 0, Change.Level.MEDIUM: 1, Change.Level.HIGH: 2}
# The change fields whose edit must be checked against the template again.
FIT_FIELDS = frozenset({"change_type", "standard_template", "plan", "risk", "servers"})
TEMPLATE_FIELDS = ("work", "description", "plan", "dag_names", "max_risk", "active")


class NotStandard(DomainError):
    """A standard change that names no template, an unknown or inactive one, or does not fit it; ``misfits`` lists
    every reason."""

    status = 400
    code = "not_standard"


def check_fit(*, change_type: str, template: str, plan: str, risk: str,
              servers: Iterable[Server]) -> StandardChangeTemplate | None:
    """The catalogue entry a standard change fits (None for other change types). Raises NotStandard naming what
    does not fit: no template, an unknown or inactive one, high risk, risk above the maximum, another plan, servers
    outside the template's servers and DAGs; or a template named by a change that is not standard."""
    if change_type != Change.ChangeType.STANDARD:
        if template:
            raise NotStandard(f"standard_template is for standard changes only; this change is {change_type} "
                              "(send an empty standard_template, or make it standard)",
                              misfits=["change_type"])
        return None
    if risk == Change.Level.HIGH:
        raise NotStandard("a high-risk change is never standard: post it as a normal change for approval",
                          misfits=["risk"])
    if not template:
        names = list(StandardChangeTemplate.objects.filter(active=True).values_list("name", flat=True)[:20])
        known = f" (active: {', '.join(names)})" if names else " (the catalogue has no active entry)"
        raise NotStandard(f"a standard change must name a standard-change template in standard_template{known}",
                          misfits=["standard_template"])
    entry = StandardChangeTemplate.objects.filter(name=template).prefetch_related("servers").first()
    if entry is None or not entry.active:
        raise NotStandard(f"no active standard-change template is named '{template}'",
                          misfits=["standard_template"])
    servers = list(servers)
    reasons, misfits = [], []
    if _RISK_ORDER[risk] > _RISK_ORDER[entry.max_risk]:
        misfits.append("risk")
        reasons.append(f"risk {risk} is above the template's maximum ({entry.max_risk})")
    if plan != entry.plan:
        misfits.append("plan")
        reasons.append(f"plan '{plan}' is not the template's ('{entry.plan}')")
    allowed_ids = {s.pk for s in entry.servers.all()}
    allowed_dags = {d.casefold() for d in entry.dag_names}
    outside = [s.name for s in servers if s.pk not in allowed_ids and (s.dag_name or "").casefold() not in allowed_dags]
    if outside:
        misfits.append("servers")
        reasons.append(f"{', '.join(outside)} {'is' if len(outside) == 1 else 'are'} not among the template's "
                       "servers or DAGs")
    if reasons:
        raise NotStandard(f"the change does not fit standard-change template '{entry.name}': {'; '.join(reasons)}",
                          misfits=misfits)
    return entry


def template_save(template: StandardChangeTemplate | None, *, actor: Any,
                  data: dict[str, Any]) -> StandardChangeTemplate:
    """Create or edit a catalogue entry (approvers). Saving is approving: the actor and the time are recorded as
    the approval, and the edit is audited with what changed. The name is fixed once created. ``data["servers"]`` is a
    list of Server rows. Raises NotPermitted, InvalidRequest (name), StateConflict (renaming), NotStandard (high
    risk)."""
    require_role(actor, Role.APPROVER, to="maintain the standard-change catalogue")
    created = template is None
    template = template or StandardChangeTemplate(name=data.get("name", ""))
    if not created and data.get("name", template.name) != template.name:
        raise StateConflict(f"the template '{template.name}' cannot be renamed: changes refer to it by name")
    if created:
        try:
            StandardChangeTemplate._meta.get_field("name").run_validators(template.name)
        except ValidationError as exc:
            raise InvalidRequest(f"name: {' '.join(exc.messages)}", field="name") from None
        if not template.name or StandardChangeTemplate.objects.filter(name=template.name).exists():
            raise InvalidRequest(f"a template needs a name not used yet ('{template.name}')", field="name")
    if data.get("max_risk") == Change.Level.HIGH:
        raise NotStandard("a high-risk change is never standard: the maximum risk is low or medium",
                          misfits=["max_risk"])
    diff: dict[str, list[Any]] = {"name": [None, template.name]} if created else {}
    for key in TEMPLATE_FIELDS:
        if key in data and getattr(template, key) != data[key]:
            diff[key] = [None if created else getattr(template, key), data[key]]
            setattr(template, key, data[key])
    servers = sorted(data["servers"], key=lambda s: s.name) if "servers" in data else None
    with transaction.atomic():
        if servers is not None:
            before = [] if created else [s.name for s in template.servers.order_by("name")]
            if before != [s.name for s in servers]:
                diff["servers"] = [before, [s.name for s in servers]]
        if not diff:
            return template
        previous = None if created else [template.approved_by.get_username(), template.approved_at]
        template.approved_by, template.approved_at = actor, timezone.now()
        diff["approved"] = [previous, [actor.get_username(), template.approved_at]]
        template.save()
        if servers is not None:
            template.servers.set(servers)
        audit.append(actor=actor, action="standard_template.created" if created else "standard_template.updated",
                     obj=template, changes=diff)
    return template
