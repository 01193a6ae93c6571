"""Issue 13: encryption at rest supports key rotation (MultiFernet; FIELD_ENCRYPTION_KEY newest first;
`manage.py rotate_secrets` re-encrypts every stored secret)."""
from __future__ import annotations

import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.core.management import CommandError, call_command
from django.test import override_settings

from changes import crypto
from changes.models import ApiClient, AuditEvent, Server
from notifications.models import CallbackSecret
from notifications.secrets import callback_secret_for, callback_secret_rotate
from tests.conftest import make_user

pytestmark = pytest.mark.django_db
OLD, NEW, STRANGER = (Fernet.generate_key().decode() for _ in range(3))


@pytest.fixture
def secrets_under_old_key() -> tuple[Server, int, str]:
    with override_settings(FIELD_ENCRYPTION_KEY=OLD):
        server = Server.objects.create(name="EX01", fqdn="ex01.corp.example")
        server.set_password("Inv3ntory-Secret")
        server.save()
        client = ApiClient.objects.get(user=make_user("servicenow", "requester", source="servicenow", client=True))
        callback = callback_secret_rotate(client, actor="system:test")
    return server, client.pk, callback


def test_a_new_key_in_front_still_reads_the_old_secrets(secrets_under_old_key) -> None:
    server, client_id, callback = secrets_under_old_key
    with override_settings(FIELD_ENCRYPTION_KEY=f"{NEW},{OLD}"):
        assert Server.objects.get(pk=server.pk).get_password() == "Inv3ntory-Secret"
        assert callback_secret_for(client_id) == callback
        # New values are written with the newest key.
        token = crypto.encrypt("fresh")
    with override_settings(FIELD_ENCRYPTION_KEY=NEW):
        assert crypto.decrypt(token) == "fresh"


def test_rotate_secrets_reencrypts_every_secret_so_the_old_key_can_go(secrets_under_old_key) -> None:
    server, client_id, callback = secrets_under_old_key
    with override_settings(FIELD_ENCRYPTION_KEY=NEW), pytest.raises(ValueError):
        Server.objects.get(pk=server.pk).get_password()  # not yet rotated: the new key alone cannot read it
    out = StringIO()
    with override_settings(FIELD_ENCRYPTION_KEY=f"{NEW},{OLD}"):
        call_command("rotate_secrets", stdout=out)
    assert "changes.Server.password_encrypted: 1 re-encrypted" in out.getvalue()
    assert "notifications.CallbackSecret.secret_encrypted: 1 re-encrypted" in out.getvalue()
    with override_settings(FIELD_ENCRYPTION_KEY=NEW):
        assert Server.objects.get(pk=server.pk).get_password() == "Inv3ntory-Secret"
        assert callback_secret_for(client_id) == callback
    event = AuditEvent.objects.get(action="secrets.rotated")
    assert "Inv3ntory-Secret" not in str(event.changes) and callback not in str(event.changes)
    assert event.changes["changes.Server.password_encrypted"] == [None, 1]


def test_a_secret_no_key_opens_stops_the_rotation_and_changes_nothing(secrets_under_old_key) -> None:
    server, _, _ = secrets_under_old_key
    with override_settings(FIELD_ENCRYPTION_KEY=STRANGER):
        CallbackSecret.objects.update(secret_encrypted=crypto.encrypt("made with a lost key"))
    before = Server.objects.get(pk=server.pk).password_encrypted
    with override_settings(FIELD_ENCRYPTION_KEY=f"{NEW},{OLD}"), pytest.raises(CommandError, match="CallbackSecret"):
        call_command("rotate_secrets", stdout=StringIO())
    assert Server.objects.get(pk=server.pk).password_encrypted == before
    assert not AuditEvent.objects.filter(action="secrets.rotated").exists()


def test_dry_run_checks_without_writing(secrets_under_old_key) -> None:
    server, _, _ = secrets_under_old_key
    before = Server.objects.get(pk=server.pk).password_encrypted
    out = StringIO()
    with override_settings(FIELD_ENCRYPTION_KEY=f"{NEW},{OLD}"):
        call_command("rotate_secrets", "--dry-run", stdout=out)
    assert "2 secret(s) readable" in out.getvalue()
    assert Server.objects.get(pk=server.pk).password_encrypted == before


@pytest.mark.parametrize(("value", "ok"), [(f"{NEW},{OLD}", True), (f" {NEW} , {OLD} ", True),
                                           (f"{NEW},not-a-key", False), (",", False)])
def test_settings_accept_a_list_of_keys_and_name_a_bad_one(value: str, ok: bool) -> None:
    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if k not in ("FIELD_ENCRYPTION_KEY", "DEBUG")}
    env.update(DJANGO_SETTINGS_MODULE="config.settings", SECRET_KEY="x" * 50, FIELD_ENCRYPTION_KEY=value)
    res = subprocess.run([sys.executable, "-c", "import django; django.setup()"], cwd=root, env=env,
                         capture_output=True, text=True, timeout=60)
    assert (res.returncode == 0) is ok, res.stderr[-500:]
    if not ok:
        assert "FIELD_ENCRYPTION_KEY" in res.stderr
