"""Read-side queries: what each identity may see, annotated so lists cost a constant number of queries."""
from __future__ import annotations

from typing import Any

from django.db.models import Count, Prefetch, Q, QuerySet

from .authority import visible_changes
from .models import Approval, AuditEvent, Change, Pause, Server


def change_list(user: Any) -> QuerySet[Change]:
    """Changes visible to ``user`` (changes.authority.visible_changes)."""
    qs = (
        Change.objects.select_related("created_by")
        .prefetch_related(Prefetch("servers", queryset=Server.objects.only("id", "name", "dag_name")))
        .annotate(
            approvals_count=Count(
                "approvals__approver",
                filter=Q(approvals__decision=Approval.Decision.APPROVED, approvals__voided_at__isnull=True),
                distinct=True,
            )
        )
    )
    return visible_changes(user, qs)


def audit_events_for(change: Change) -> QuerySet[AuditEvent]:
    """The change's own events plus those of its approvals, in chain order."""
    return AuditEvent.objects.filter(object_type="change", object_id=str(change.pk)).order_by("seq")


def pause_open(change: Change | int) -> Pause | None:
    """The change's pause still waiting for an operator's decision (the newest), or None."""
    change_id = change if isinstance(change, int) else change.pk
    return (Pause.objects.filter(change_id=change_id, decided_seq__isnull=True).select_related("step", "server")
            .order_by("-paused_seq", "-id").first())


def pause_facts(pause: Pause) -> dict[str, Any]:
    """A pause as plain data for the notifications (the ITSM callback, the operator alert)."""
    return {"code": pause.code, "title": pause.get_code_display(), "step": pause.step.key if pause.step else "",
            "step_order": pause.step.order if pause.step else None, "server": pause.server.name if pause.server else ""}


def prime_servers(change: Change, servers: list[Server]) -> None:
    """Cache ``change.servers.all()`` as prefetch_related would: the caller has just written these links (a new
    change), so what reads them next in the request (events, outbox, the answer) need not ask the database."""
    cached = change.servers.all()
    cached._result_cache, cached._prefetch_done = list(servers), True
    change._prefetched_objects_cache = {**getattr(change, "_prefetched_objects_cache", {}), "servers": cached}


def prime_new_change(change: Change) -> Change:
    """A change created by this request, ready for ChangeDetailSerializer without reading back what the request
    wrote: it has no approvals, alerts, steps or run yet (its servers were primed by the service)."""
    change.approvals_count = 0
    for name, related in (("approvals", change.approvals), ("alerts", change.alerts), ("steps", change.steps)):
        cached = related.none()
        cached._result_cache, cached._prefetch_done = [], True
        change._prefetched_objects_cache = {**getattr(change, "_prefetched_objects_cache", {}), name: cached}
    change._state.fields_cache["run"] = None
    return change
