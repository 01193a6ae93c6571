"""Issue 13 D5 (tokens): API keys are stored hashed, shown once (command and admin), recognisable by their prefix,
expire and rotate; expired keys get a clear 401; the admin never shows a key; failed keys are still throttled; keys
stored in clear text before are hashed by a migration."""
from __future__ import annotations

import hashlib
from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from changes import tokens
from changes.models import ApiToken, AuditEvent
from tests.conftest import make_user

pytestmark = pytest.mark.django_db
CHANGES = "/api/v1/changes/"


def get(key: str, scheme: str = "Bearer"):
    return APIClient().get(CHANGES, HTTP_AUTHORIZATION=f"{scheme} {key}")


def every_stored_value() -> str:
    """Every column of every row of the token table and the audit trail, as text."""
    with connection.cursor() as cur:
        rows = []
        for table in (ApiToken._meta.db_table, AuditEvent._meta.db_table):
            cur.execute(f"SELECT * FROM {table}")  # noqa: S608 - model table names
            rows += cur.fetchall()
    return repr(rows)


def test_create_api_client_shows_the_key_once_and_stores_only_its_hash() -> None:
    out = StringIO()
    call_command("create_api_client", "audit-bot", "--role", "auditor", stdout=out)
    key = out.getvalue().strip().splitlines()[-1]
    assert key.startswith("exm_") and len(key) >= 40
    token = ApiToken.objects.get(user__username="audit-bot")
    assert token.digest == hashlib.sha256(key.encode()).hexdigest()
    assert token.prefix == key[:12] and key.startswith(token.prefix)
    assert key not in every_stored_value()
    assert key[12:] not in every_stored_value()
    assert get(key).status_code == 200 and get(key, "Token").status_code == 200
    event = AuditEvent.objects.get(action="api_token.issued")
    assert event.changes["token"][1][0] == token.prefix


def test_a_token_expires_after_the_configured_days_with_a_clear_401(settings) -> None:
    settings.EXMAINT = {**settings.EXMAINT, "API_TOKEN_DAYS": 7}
    out = StringIO()
    call_command("create_api_client", "audit-bot", "--role", "auditor", stdout=out)
    key = out.getvalue().strip().splitlines()[-1]
    token = ApiToken.objects.get()
    assert timedelta(days=6, hours=23) < token.expires_at - timezone.now() <= timedelta(days=7)
    ApiToken.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    res = get(key)
    assert res.status_code == 401
    assert res.json()["code"] == "token_expired"
    assert "expired on" in res.json()["detail"] and token.prefix in res.json()["detail"]
    assert "WWW-Authenticate" in res


def test_rotation_invalidates_the_old_key_at_once() -> None:
    out = StringIO()
    call_command("create_api_client", "audit-bot", "--role", "auditor", stdout=out)
    old = out.getvalue().strip().splitlines()[-1]
    out = StringIO()
    call_command("rotate_api_token", "audit-bot", "--days", "30", stdout=out)
    new = out.getvalue().strip().splitlines()[-1]
    assert new.startswith("exm_") and new != old
    assert get(old).status_code == 401 and get(old).json()["code"] == "authentication_failed"
    assert get(new).status_code == 200
    assert ApiToken.objects.count() == 1
    assert ApiToken.objects.get().expires_at - timezone.now() <= timedelta(days=30)
    rotated = AuditEvent.objects.get(action="api_token.rotated")
    assert rotated.actor == "system:rotate_api_token"
    assert new not in every_stored_value() and old not in every_stored_value()


def test_an_unknown_identity_or_bad_days_are_refused_by_the_command() -> None:
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="no identity"):
        call_command("rotate_api_token", "ghost", stdout=StringIO())


def test_a_deactivated_users_key_is_refused(auditor) -> None:
    key = tokens.token_issue(auditor, actor="system:test").key
    auditor.is_active = False
    auditor.save()
    assert get(key).status_code == 401


def test_the_admin_never_shows_a_key_but_shows_a_new_one_once(root, auditor) -> None:
    key = tokens.token_issue(auditor, actor="system:test").key
    client = Client()
    client.force_login(root)
    page = client.get("/admin/changes/apitoken/").content.decode()
    token = ApiToken.objects.get(user=auditor)
    assert token.prefix in page and key not in page and token.digest not in page
    detail = client.get(f"/admin/changes/apitoken/{token.pk}/change/").content.decode()
    assert token.prefix in detail and key not in detail and token.digest not in detail
    # Rotation from the admin: the new key on the answer page, once, uncached; the old key is dead.
    res = client.post("/admin/changes/apitoken/", {"action": "rotate_selected", ACTION_CHECKBOX_NAME: [token.pk]})
    assert res.status_code == 200 and "no-store" in res["Cache-Control"]
    new = next(word for word in res.content.decode().replace("<", " ").replace(">", " ").split()
               if word.startswith("exm_") and len(word) > 20)
    assert get(new).status_code == 200 and get(key).status_code == 401
    assert new not in client.get("/admin/changes/apitoken/").content.decode()
    assert AuditEvent.objects.filter(action="api_token.rotated", actor="user:root").exists()


def test_the_admin_creates_a_token_and_shows_it_once(root, operator) -> None:
    client = Client()
    client.force_login(root)
    res = client.post("/admin/changes/apitoken/add/", {"user": operator.pk, "days": "10"})
    assert res.status_code == 200, res.content.decode()[:500]
    new = next(word for word in res.content.decode().replace("<", " ").replace(">", " ").split()
               if word.startswith("exm_") and len(word) > 20)
    assert get(new).status_code == 200
    assert ApiToken.objects.get(user=operator).expires_at - timezone.now() <= timedelta(days=10)
    assert new not in every_stored_value()


def test_only_superusers_manage_tokens_in_the_admin(operator, alice) -> None:
    client = Client()
    for user in (operator, alice):
        client.force_login(user)
        assert client.get("/admin/changes/apitoken/").status_code == 403


def test_the_drf_clear_text_token_admin_is_gone(root) -> None:
    client = Client()
    client.force_login(root)
    assert client.get("/admin/authtoken/tokenproxy/").status_code == 404
    assert client.get("/admin/authtoken/token/").status_code == 404


def test_failed_keys_are_still_throttled_but_an_expired_key_is_not_counted(settings, auditor) -> None:
    key = tokens.token_issue(auditor, actor="system:test").key
    ApiToken.objects.update(expires_at=timezone.now() - timedelta(days=1))
    client = Client(REMOTE_ADDR="198.51.100.20")
    for _ in range(settings.AXES_FAILURE_LIMIT + 2):
        assert client.get(CHANGES, HTTP_AUTHORIZATION=f"Bearer {key}").status_code == 401
    guesses = [client.get(CHANGES, HTTP_AUTHORIZATION=f"Bearer exm_guess{i}").status_code
               for i in range(settings.AXES_FAILURE_LIMIT)]
    assert guesses[-1] == 429, guesses


def test_the_migration_hashes_clear_text_keys_in_place(transactional_db) -> None:
    """Run the data migration against a table shaped like DRF authtoken's, holding a clear-text key."""
    from importlib import import_module

    from django.apps import apps

    migration = import_module("changes.migrations.0015_hash_plaintext_tokens")
    user = make_user("legacy-itsm", "auditor")
    legacy = "9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b"
    with connection.schema_editor() as editor:
        editor.execute("CREATE TABLE authtoken_token (key varchar(40) PRIMARY KEY, created timestamp with time zone "
                       "NULL, user_id integer NOT NULL)" if connection.vendor == "postgresql" else
                       "CREATE TABLE authtoken_token (key varchar(40) PRIMARY KEY, created datetime NULL, "
                       "user_id integer NOT NULL)")
    with connection.cursor() as cur:
        cur.execute("INSERT INTO authtoken_token (key, created, user_id) VALUES (%s, %s, %s)",
                    [legacy, timezone.now() - timedelta(days=400), user.pk])
    with connection.schema_editor() as editor:
        migration.hash_legacy_tokens(apps, editor)
    assert "authtoken_token" not in connection.introspection.table_names()
    token = ApiToken.objects.get(user=user)
    assert token.digest == hashlib.sha256(legacy.encode()).hexdigest() and token.prefix == legacy[:8]
    assert token.expires_at > timezone.now() + timedelta(days=80)  # counted from the migration, not from creation
    assert get(legacy).status_code == 200
    assert legacy not in every_stored_value()
