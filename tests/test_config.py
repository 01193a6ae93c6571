"""Settings fail loudly on bad values; the deployment files agree with the settings."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from django.core.exceptions import ImproperlyConfigured

from config import env

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(("helper", "raw"), [
    (lambda: env.env_bool("X_TEST", False), "maybe"),
    (lambda: env.env_int("X_TEST", 1), "eight"),
    (lambda: env.env_int("X_TEST", 1, minimum=1), "0"),
    (lambda: env.env_time("X_TEST", "08:00"), "25:99"),
    (lambda: env.env_weekdays("X_TEST", "1"), "1,9"),
])
def test_bad_values_fail_loudly(monkeypatch, helper, raw) -> None:
    monkeypatch.setenv("X_TEST", raw)
    with pytest.raises(ImproperlyConfigured, match="X_TEST"):
        helper()


def test_secret_can_come_from_a_file(monkeypatch, tmp_path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("from-file\n")
    monkeypatch.setenv("X_TEST_FILE", str(secret))
    assert env.env_secret("X_TEST") == "from-file"


def _start_settings(**overrides: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "FIELD_ENCRYPTION_KEY", "DEBUG")}
    environ.update(overrides, DJANGO_SETTINGS_MODULE="config.settings")
    return subprocess.run([sys.executable, "-c", "import django; django.setup()"], cwd=ROOT, env=environ,
                          capture_output=True, text=True, timeout=60)


def test_secret_key_is_required_when_debug_is_off() -> None:
    result = _start_settings()
    assert result.returncode != 0 and "SECRET_KEY is required" in result.stderr


@pytest.mark.parametrize(("name", "value", "message"), [
    ("DATABASE_URL", "nosuchdb://x", "DATABASE_URL"),
    ("CELERY_BROKER_URL", "carrier-pigeon://x", "CELERY_BROKER_URL"),
    ("EXMAINT_MAX_WINDOW_MINUTES", "-5", "EXMAINT_MAX_WINDOW_MINUTES"),
    ("EXMAINT_BUSINESS_TIME_ZONE", "Mars/Olympus", "EXMAINT_BUSINESS_TIME_ZONE"),
])
def test_bad_settings_stop_the_start(name, value, message) -> None:
    result = _start_settings(DEBUG="true", **{name: value})
    assert result.returncode != 0 and message in result.stderr


def test_env_example_lists_every_variable_the_settings_read() -> None:
    source = (ROOT / "config" / "settings.py").read_text()
    read = set(re.findall(r'env_\w+\("([A-Z_]+)"', source))
    listed = set(re.findall(r"^([A-Z_]+)=", (ROOT / ".env.example").read_text(), re.M))
    assert read - listed == set()


def test_compose_defines_the_stack_with_healthchecked_services() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"migrate", "web", "worker", "beat", "postgres", "redis"}
    for name in ("web", "worker", "beat"):
        assert services[name]["environment"]["DEBUG"] == "false"
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
        # Issue 13 D1: the service runs as the runtime role; only the migrate job connects as the tables' owner.
        assert services[name]["environment"]["DATABASE_URL"].startswith("postgres://exmaint_app:")
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert "migrate" not in services[name]["command"]
        assert services[name]["restart"] == "unless-stopped"  # issue 24: a worker that died comes back
    assert services["migrate"]["environment"]["DATABASE_URL"].startswith("postgres://exmaint:")
    assert "db_runtime_role --apply --role exmaint_app" in services["migrate"]["command"]
    assert "celery -A config worker" in services["worker"]["command"]
    assert "celery -A config beat" in services["beat"]["command"]
    assert all("healthcheck" in services[n] for n in ("web", "postgres", "redis"))


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme.split("\n## ", 1)[0]
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^\S*.*\bmake test$", ci, re.M)


def _test_settings_in(environment: dict[str, str]) -> list[str]:
    """VAR_DIR, the Celery queue and the SQLite test database of config.test_settings in a fresh process."""
    probe = ("from config import test_settings as s; "
             "print(s.VAR_DIR); print(s.CELERY_TASK_DEFAULT_QUEUE); print(s.DATABASES['default']['TEST']['NAME'])")
    env_vars = {k: v for k, v in os.environ.items()
                if not k.startswith(("EXMAINT_", "PYTEST_XDIST", "DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL"))}
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env={**env_vars, **environment},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_each_xdist_worker_gets_its_own_var_dir_queue_and_sqlite_file(tmp_path) -> None:
    """The xdist controller's var/ and queue are inherited by its workers: each worker moves into its own, and the
    Celery workers it starts (which inherit the worker's environment) stay in the same place."""
    controller = {"EXMAINT_VAR_DIR": str(tmp_path), "EXMAINT_TASK_QUEUE": "exmaint-test-abc"}
    gw0 = _test_settings_in({**controller, "PYTEST_XDIST_WORKER": "gw0"})
    gw1 = _test_settings_in({**controller, "PYTEST_XDIST_WORKER": "gw1"})
    assert gw0 == [str(tmp_path / "gw0"), "exmaint-test-abc-gw0", str(tmp_path / "gw0" / "test-exmaint.sqlite3")]
    assert gw1[:2] == [str(tmp_path / "gw1"), "exmaint-test-abc-gw1"]
    inherited_by_a_celery_worker = {"PYTEST_XDIST_WORKER": "gw1", "EXMAINT_TEST_XDIST_WORKER": "gw1",
                                    "EXMAINT_VAR_DIR": gw1[0], "EXMAINT_TASK_QUEUE": gw1[1]}
    assert _test_settings_in(inherited_by_a_celery_worker) == gw1
    assert _test_settings_in(controller)[:2] == [str(tmp_path), "exmaint-test-abc"]  # serial: unchanged


def test_the_worker_waits_out_a_broker_outage_of_any_length() -> None:
    from django.conf import settings

    from config.broker_outage import install
    from config.celery import app

    assert settings.CELERY_BROKER_CONNECTION_MAX_RETRIES is None  # celery's default gives up after 100 retries
    assert app.conf.broker_connection_max_retries is None and app.conf.broker_connection_retry_on_startup
    install()  # idempotent: a second call does not wrap the guard again
    from kombu.transport import redis as kombu_redis

    channel = kombu_redis.Channel.__new__(kombu_redis.Channel)
    channel.connection = type("Transport", (), {"client": None})()
    with pytest.raises(kombu_redis.redis.exceptions.ConnectionError):  # not AttributeError: celery reconnects
        channel._connparams()
