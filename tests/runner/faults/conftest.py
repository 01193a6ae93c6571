"""The fault suite's world (issue 24): a PostgreSQL cluster and a redis-server of its own, which the tests stop and
start; a real Celery worker on them running the real maintenance plan; the simulated Exchange served over WinRM/PSRP
in this process, reached by the unmodified pypsrp client, and restartable on the same port.

The cluster and its migrated template database live for the session; each test gets a fresh copy of the template,
its own redis-server and its own simulator. This process's database connection and Celery broker are switched to
them for the test. Tests marked ``faults_long`` (the 60-90 s outages) run only under ``make test-faults``
(EXMAINT_FAULTS_LONG=1)."""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

from changes.models import Server
from tests.conftest import ROOT
from tests.runner.engine.support import organisation
from tests.support.private_services import (
    PrivatePostgres,
    PrivateRedis,
    broker_switched_to,
    database_switched_to,
)
from tests.support.workers import Workers

from .support import PASSWORD, SPEED, TEMPLATE, USER, Endpoint, World

LONG = os.environ.get("EXMAINT_FAULTS_LONG") == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The long outages only under `make test-faults`: the regular suite stays fast."""
    if LONG:
        return
    skipped = [item for item in items if item.get_closest_marker("faults_long")]
    if skipped:
        config.hook.pytest_deselected(items=skipped)
        items[:] = [item for item in items if not item.get_closest_marker("faults_long")]


@pytest.fixture(scope="session")
def private_postgres() -> Iterator[PrivatePostgres]:
    """The session's own cluster with a migrated template database."""
    pg = PrivatePostgres()
    try:
        pg.start()
        pg.sql(f"CREATE DATABASE {TEMPLATE}")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CELERY_", "REDIS_URL"))}
        env.update(DATABASE_URL=pg.url(TEMPLATE), DJANGO_SETTINGS_MODULE="config.test_settings")
        migrate = subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT,
                                 env=env, capture_output=True, text=True, timeout=600)
        assert migrate.returncode == 0, migrate.stderr
        yield pg
    finally:
        pg.destroy()


@pytest.fixture
def world(private_postgres, django_db_blocker, settings) -> Iterator[World]:
    name = f"faults_{uuid.uuid4().hex[:10]}"
    private_postgres.sql(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
    redis = PrivateRedis()
    redis.start()
    sim = organisation(standalone=("EX01",), speed=SPEED)
    endpoint = Endpoint(sim)
    workers = Workers(settings.VAR_DIR)
    try:
        with django_db_blocker.unblock(), database_switched_to(private_postgres.url(name)), \
                broker_switched_to(redis.url):
            server = Server.objects.create(name="EX01", fqdn="ex01.corp.example")
            assert endpoint.running is not None
            server.endpoint_url = endpoint.running.url_for("EX01", "Microsoft.Exchange")
            server.winrm_url = endpoint.running.url_for("EX01", "Microsoft.PowerShell")
            server.auth_method, server.username = "basic", USER
            server.set_password(PASSWORD)
            server.save()
            yield World(private_postgres, redis, workers, sim, endpoint)
            workers.stop_all()
    finally:
        workers.stop_all()
        endpoint.stop()
        redis.destroy()
        if not private_postgres.up():
            private_postgres.start()
        with contextlib.suppress(Exception):
            private_postgres.sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
