"""Issue 13 D15: production settings behind EXMAINT_HTTPS=true (check --deploy clean), and failed admin logins and
API tokens throttled by django-axes."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client, override_settings

from tests.conftest import make_user
from tests.support.tokens import api_key

ROOT = Path(__file__).resolve().parent.parent
TEST_KEY = "dGVzdC1vbmx5LWtleS10ZXN0LW9ubHkta2V5LTMyYiE="


def production_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("EXMAINT_", "DJANGO_")) and k not in ("CELERY_BROKER_URL", "REDIS_URL")}
    env.update({
        "PYTHONPATH": str(ROOT), "DJANGO_SETTINGS_MODULE": "config.settings", "DEBUG": "false",
        "SECRET_KEY": "k3y-for-the-deploy-check-only_9f8e7d6c5b4a3928171615141312111009",
        "FIELD_ENCRYPTION_KEY": TEST_KEY, "ALLOWED_HOSTS": "exmaint.example.com",
        "EXMAINT_VAR_DIR": str(tmp_path / "var"), **extra,
        # Its own database: the run's DATABASE_URL names a database that only pytest-django's test_ copy exists of.
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
    })
    return env


def run(tmp_path: Path, args: list[str], **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=tmp_path, env=production_env(tmp_path, **extra),
                          capture_output=True, text=True, timeout=120)


def test_check_deploy_is_clean_with_https_on(tmp_path: Path) -> None:
    res = run(tmp_path, ["-m", "django", "check", "--deploy", "--fail-level", "WARNING"], EXMAINT_HTTPS="true")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "no issues" in res.stdout


def test_check_deploy_warns_without_https(tmp_path: Path) -> None:
    res = run(tmp_path, ["-m", "django", "check", "--deploy", "--fail-level", "WARNING"])
    assert res.returncode != 0
    for warning in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert warning in res.stderr, warning


SCRIPT = """
import django
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
from django.test import Client
c = Client(SERVER_NAME="exmaint.example.com")
plain = c.get("/admin/login/")
assert plain.status_code == 301 and plain["Location"] == "https://exmaint.example.com/admin/login/", plain
secure = c.get("/admin/login/", HTTP_X_FORWARDED_PROTO="https")
assert secure.status_code == 200, secure.status_code
assert secure["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains", secure.headers
assert secure.cookies["csrftoken"]["secure"] is True
assert c.get("/healthz").status_code != 301
print("ok")
"""


def test_https_settings_redirect_and_set_hsts_and_secure_cookies(tmp_path: Path) -> None:
    res = run(tmp_path, ["-c", SCRIPT], EXMAINT_HTTPS="true")
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stdout + res.stderr


@pytest.mark.django_db
def test_admin_logins_are_locked_out_after_repeated_failures(settings) -> None:
    make_user("olga", "operator")
    make_user("alice", "approver")
    client = Client(REMOTE_ADDR="198.51.100.7")
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        res = client.post("/admin/login/", {"username": "olga", "password": "guess"})
        assert res.status_code == 200  # the form again, with its error
    res = client.post("/admin/login/", {"username": "olga", "password": "guess"})
    assert res.status_code == 429 and int(res["Retry-After"]) == settings.AXES_COOLOFF_TIME.total_seconds()
    # Locked: even the right password is refused until the cool-off ends.
    assert client.post("/admin/login/", {"username": "olga", "password": "pw-olga"}).status_code == 429
    # Another account, or the same one from elsewhere, is not locked out.
    assert client.post("/admin/login/", {"username": "alice", "password": "pw-alice"}).status_code == 302
    other = Client(REMOTE_ADDR="198.51.100.8")
    assert other.post("/admin/login/", {"username": "olga", "password": "pw-olga"}).status_code == 302


@pytest.mark.django_db
def test_failed_api_tokens_are_throttled_per_client(settings) -> None:
    auditor = make_user("audrey", "auditor")
    good = api_key(auditor)
    client = Client(REMOTE_ADDR="198.51.100.9")
    codes = [client.get("/api/v1/changes/", HTTP_AUTHORIZATION=f"Token wrong{i}").status_code
             for i in range(settings.AXES_FAILURE_LIMIT)]
    assert codes[:-1] == [401] * (settings.AXES_FAILURE_LIMIT - 1) and codes[-1] == 429, codes
    res = client.get("/api/v1/changes/", HTTP_AUTHORIZATION=f"Bearer {good}")
    assert res.status_code == 429 and res.json()["code"] in ("throttled", "too_many_failures")
    assert "Retry-After" in res
    assert set(res.json()) >= {"code", "detail"}
    elsewhere = Client(REMOTE_ADDR="198.51.100.10")
    assert elsewhere.get("/api/v1/changes/", HTTP_AUTHORIZATION=f"Token {good}").status_code == 200


@pytest.mark.django_db
def test_behind_a_proxy_clients_are_told_apart_by_forwarded_for(settings) -> None:
    auditor = make_user("audrey", "auditor")
    good = api_key(auditor)
    proxy = Client(REMOTE_ADDR="10.0.0.2")
    with override_settings(EXMAINT_PROXY_COUNT=1):
        for i in range(settings.AXES_FAILURE_LIMIT):
            proxy.get("/api/v1/changes/", HTTP_AUTHORIZATION=f"Token bad{i}",
                      HTTP_X_FORWARDED_FOR="spoofed, 203.0.113.5")
        assert proxy.get("/api/v1/changes/", HTTP_AUTHORIZATION=f"Token {good}",
                         HTTP_X_FORWARDED_FOR="203.0.113.5").status_code == 429
        assert proxy.get("/api/v1/changes/", HTTP_AUTHORIZATION=f"Token {good}",
                         HTTP_X_FORWARDED_FOR="203.0.113.6").status_code == 200
