"""A mail thread for every change that exists already. A change whose invite went out keeps the UID it was sent
with (``change-<id>@<sender domain>``, the old pure function of the id): a new UID would make Outlook add a second
entry beside the one its readers hold. Every other change gets a random one."""
import uuid

from django.conf import settings
from django.db import migrations


def _legacy_domain() -> str:
    sender = str(getattr(settings, "DEFAULT_FROM_EMAIL", "") or "")
    domain = sender.rsplit("@", 1)[-1].strip(" >") if "@" in sender else ""
    return domain or "exmaint.invalid"


def forwards(apps, schema_editor):
    Change = apps.get_model("changes", "Change")
    CalendarInvite = apps.get_model("notifications", "CalendarInvite")
    MailThread = apps.get_model("notifications", "MailThread")
    announced = set(CalendarInvite.objects.values_list("change_id", flat=True))
    domain = _legacy_domain()
    MailThread.objects.bulk_create([
        MailThread(change_id=pk, uid=f"change-{pk}@{domain}" if pk in announced else str(uuid.uuid4()))
        for pk in Change.objects.exclude(mail_thread__isnull=False).values_list("pk", flat=True)
    ], batch_size=500)


class Migration(migrations.Migration):

    dependencies = [
        ('notifications', '0004_mail_thread_and_permanent_error'),
    ]

    operations = [
        migrations.RunPython(forwards, migrations.RunPython.noop),
    ]
