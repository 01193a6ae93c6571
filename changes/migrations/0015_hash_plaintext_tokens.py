"""API tokens made by DRF's authtoken app (the key stored in clear text in authtoken_token) become hashed ApiToken
rows: the same key keeps working, only its SHA-256 and its first 8 characters are kept, and it expires
EXMAINT_API_TOKEN_DAYS from now (counted from the migration, so no client is cut off by it). The clear-text table is
then dropped: the app is no longer installed, and its rows were every client's credentials."""
import hashlib
from datetime import UTC, timedelta

from django.conf import settings
from django.db import migrations
from django.utils import timezone
from django.utils.dateparse import parse_datetime

LEGACY_TABLE = "authtoken_token"


def hash_legacy_tokens(apps, schema_editor):
    connection = schema_editor.connection
    if LEGACY_TABLE not in connection.introspection.table_names():
        return
    ApiToken = apps.get_model("changes", "ApiToken")
    now = timezone.now()
    expires = now + timedelta(days=settings.EXMAINT["API_TOKEN_DAYS"])
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT key, user_id, created FROM {LEGACY_TABLE}")  # noqa: S608 - a constant name
        rows = cursor.fetchall()
    for key, user_id, created in rows:
        # A raw cursor gives SQLite's text (or a naive datetime): the column held UTC.
        created = parse_datetime(created) if isinstance(created, str) else created
        if created is not None and timezone.is_naive(created):
            created = timezone.make_aware(created, UTC)
        ApiToken.objects.update_or_create(user_id=user_id, defaults={
            "prefix": key[:8], "digest": hashlib.sha256(key.encode()).hexdigest(),
            "created_at": created or now, "expires_at": expires})
    schema_editor.execute(f"DROP TABLE {schema_editor.quote_name(LEGACY_TABLE)}")


class Migration(migrations.Migration):

    dependencies = [
        ("changes", "0014_catalogue_and_hashed_tokens"),
    ]

    # Not reversible into clear text: going back leaves the hashed rows (DRF's app would recreate an empty table).
    operations = [migrations.RunPython(hash_legacy_tokens, migrations.RunPython.noop)]
