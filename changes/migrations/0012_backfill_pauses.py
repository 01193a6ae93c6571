"""Pause records for windows paused before the engine recorded them (0009): read once from the audit trail, the way
the report used to read it, so a report regenerated from older rows reads the same. The only place the pause message
is parsed; from now on the engine writes the record itself."""
import re

from django.conf import settings
from django.db import migrations

_PAUSED_STEP = re.compile(r"^step (\d+) \(")
_DECISIONS = ("window.retry", "window.skip", "window.abort")


def backfill(apps, schema_editor):
    AuditEvent = apps.get_model("changes", "AuditEvent")
    Pause = apps.get_model("changes", "Pause")
    StepRun = apps.get_model("changes", "StepRun")
    User = apps.get_model(settings.AUTH_USER_MODEL)
    done = set(Pause.objects.values_list("change_id", flat=True))
    events = AuditEvent.objects.filter(object_type="change").filter(
        action__in=("change.transition", *_DECISIONS)).order_by("seq")
    open_pause: dict[int, object] = {}
    for ev in events.iterator():
        change_id = int(ev.object_id)
        if change_id in done:
            continue
        if ev.action == "change.transition":
            if ((ev.changes or {}).get("state") or [None, None])[1] != "paused":
                continue
            match = _PAUSED_STEP.match(ev.reason or "")
            step = StepRun.objects.filter(change_id=change_id, order=int(match.group(1))).first() if match else None
            open_pause[change_id] = Pause.objects.create(
                change_id=change_id, code="unrecorded", step=step, server_id=step.server_id if step else None,
                message=ev.reason or "", paused_at=ev.created_at, paused_seq=ev.seq)
            continue
        key = ((ev.changes or {}).get("step") or [None, None])[1]
        pause = open_pause.pop(change_id, None)
        if pause is None:
            step = StepRun.objects.filter(change_id=change_id, key=key).order_by("order").first() if key else None
            pause = Pause(change_id=change_id, code="unrecorded", step=step,
                          server_id=step.server_id if step else None, paused_at=ev.created_at, paused_seq=ev.seq)
        elif pause.step_id is None and key:
            pause.step = StepRun.objects.filter(change_id=change_id, key=key).order_by("order").first()
        kind, _, name = ev.actor.partition(":")
        user = User.objects.filter(username=name).first() if kind in ("user", "client") else None
        pause.decision, pause.decision_reason = ev.action.split(".", 1)[1], ev.reason or ""
        pause.decided_at, pause.decided_seq, pause.decided_by, pause.decided_by_label = (ev.created_at, ev.seq, user,
                                                                                         ev.actor)
        pause.save()


class Migration(migrations.Migration):

    dependencies = [
        ("changes", "0011_change_state_without_failed"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [migrations.RunPython(backfill, migrations.RunPython.noop)]
