"""The standard-change template a change ran under, as the report names it: the version the change was checked
against (read from the audit trail up to the event that set it, so a later edit of the catalogue entry does not
rewrite an old report), with the pre-approved work and who approved it when."""
from __future__ import annotations

from typing import Any

from changes.models import AuditEvent, Change, StandardChangeTemplate

from .formatting import fmt_dt


def standard_template_text(change: Change, head_seq: int) -> str:
    """'' for a change that names no template."""
    if not change.standard_template:
        return ""
    template = StandardChangeTemplate.objects.filter(name=change.standard_template).select_related(
        "approved_by").first()
    if template is None:
        return change.standard_template
    checked_at = (AuditEvent.objects.filter(
        object_type="change", object_id=str(change.pk), action__in=("change.created", "change.updated"),
        seq__lte=head_seq, changes__has_key="standard_template").order_by("-seq").values_list("seq", flat=True)
        .first()) or head_seq
    work: Any = template.work
    approved: Any = [template.approved_by.get_username(), template.approved_at]
    events = AuditEvent.objects.filter(object_type=template._meta.model_name, object_id=str(template.pk),
                                       seq__lte=checked_at).order_by("seq").values_list("changes", flat=True)
    for changes in events:
        work = (changes.get("work") or [None, work])[1]
        approved = (changes.get("approved") or [None, approved])[1]
    return f"{template.name}: {work} (pre-approved by {approved[0]}, {fmt_dt(approved[1])})"
