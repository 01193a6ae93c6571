"""Personas, inventory and request helpers shared by the tests."""
from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.db import connection
from rest_framework.test import APIClient

from changes.models import ApiClient, Server
from tests.support.contract import ContractClient
from tests.support.tokens import api_key
from tests.support.workers import Workers

# Fixtures of the private services (own_redis), shared by the tests that stop and start a broker of their own.
pytest_plugins = ["tests.support.private_services"]

IN_CI = os.environ.get("CI", "").lower() == "true"


# Where the database backend changes what the code does: compare-and-set transitions, the audit chain's lock,
# run and delivery leases, transactional outbox claims, the engine's persisted steps. Tests under these directories
# are marked ``database`` and run in both CI passes; see the README's "Tests and CI".
DATABASE_LAYER = ("tests/changes/", "tests/notifications/", "tests/runner/engine/")
ROOT = Path(__file__).resolve().parents[1]


def _flush_past_the_audit_truncate_guard() -> None:
    """Transactional tests end with Django's flush, a TRUNCATE of every table, which the audit tables' guard refuses
    on PostgreSQL (migration 0010). The test database's superuser flushes with triggers off for that one transaction
    (SET LOCAL session_replication_role, which only a superuser may set): test-only; production keeps the guard."""
    from django.db.backends.postgresql.operations import DatabaseOperations

    original = DatabaseOperations.sql_flush
    if getattr(original, "_exmaint_test_flush", False):
        return

    def sql_flush(self, style, tables, *, reset_sequences=False, allow_cascade=False):  # noqa: ANN001, ANN202
        statements = original(self, style, tables, reset_sequences=reset_sequences, allow_cascade=allow_cascade)
        return ["SET LOCAL session_replication_role = replica", *statements] if statements else statements

    sql_flush._exmaint_test_flush = True
    DatabaseOperations.sql_flush = sql_flush


_flush_past_the_audit_truncate_guard()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the database layer's tests, then keep the tests of this CI pass (EXMAINT_CI_PASS, set by .ci/run).

    - ``sqlite``: everything except the tests marked postgres or redis (the PostgreSQL + Redis pass runs those);
    - ``postgres``: the tests marked postgres, redis or database — the rest does not depend on the backend and ran
      in the SQLite pass.
    Unset (a developer's run), everything is collected: postgres/redis tests skip locally, fail under CI=true."""
    for item in items:
        if item.path.relative_to(ROOT).as_posix().startswith(DATABASE_LAYER):
            item.add_marker(pytest.mark.database)
    ci_pass = os.environ.get("EXMAINT_CI_PASS", "")
    if ci_pass == "sqlite" and connection.vendor != "postgresql":
        def wanted(item: pytest.Item) -> bool:
            return not any(item.get_closest_marker(mark) for mark in ("postgres", "redis"))
    elif ci_pass == "postgres":
        def wanted(item: pytest.Item) -> bool:
            return any(item.get_closest_marker(mark) for mark in ("postgres", "redis", "database"))
    elif ci_pass:
        raise pytest.UsageError(f"EXMAINT_CI_PASS={ci_pass!r}: expected sqlite or postgres")
    else:
        return
    config.hook.pytest_deselected(items=[item for item in items if not wanted(item)])
    items[:] = [item for item in items if wanted(item)]


@pytest.fixture(autouse=True)
def _heartbeat_outside_the_test_transaction(request: pytest.FixtureRequest, settings) -> None:  # noqa: ANN001
    """A test that runs the engine in this process does so inside a test transaction, which the lease heartbeat's
    own connection cannot see: its renewal finds no row and reports the lease lost. There the lease outlasts the
    test, so the heartbeat never beats; tests with committed rows (transaction=True, real workers) keep the
    project's short lease."""
    marker = request.node.get_closest_marker("django_db")
    if "transactional_db" in request.fixturenames or (marker is not None and marker.kwargs.get("transaction")):
        return
    if marker is not None or "db" in request.fixturenames:
        settings.EXMAINT = {**settings.EXMAINT, "LEASE_SECONDS": 3600}


@pytest.fixture(autouse=True)
def _require_postgres(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("postgres") and connection.vendor != "postgresql":
        need_service("PostgreSQL", RuntimeError(f"the test database is {connection.vendor}; set DATABASE_URL"))


@pytest.fixture(autouse=True)
def _require_redis(request: pytest.FixtureRequest) -> None:
    """Tests marked redis need a reachable Redis broker: they skip on a developer machine and fail under CI=true."""
    if not request.node.get_closest_marker("redis"):
        return
    url = settings.CELERY_BROKER_URL
    if not url.startswith("redis://"):
        need_service("Redis", RuntimeError(f"CELERY_BROKER_URL is {url!r}; set redis://127.0.0.1:6379/0"))
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            if not sock.recv(16).startswith(b"+PONG"):
                raise RuntimeError("no PONG")
    except (OSError, RuntimeError) as exc:
        need_service("Redis", exc)


def need_service(name: str, error: Exception) -> None:
    """A missing service fails the test under CI and skips it on a developer machine."""
    if IN_CI:
        pytest.fail(f"{name} is required under CI=true and is not reachable: {error}")
    pytest.skip(f"{name} not reachable: {error}")


def make_user(username: str, *roles: str, email: str = "", superuser: bool = False, source: str = "",
              client: bool = False) -> User:
    user = User.objects.create_user(username=username, email=email, is_superuser=superuser,
                                    is_staff=superuser or bool(roles), password="pw-" + username)
    # Transactional tests flush the tables, role groups made by the data migration included: recreate them.
    user.groups.set([Group.objects.get_or_create(name=role)[0] for role in roles])
    if client:
        ApiClient.objects.create(user=user, source=source)
    return user


@pytest.fixture
def requester(db) -> User:
    """The ServiceNow integration: posts changes for its source."""
    return make_user("servicenow", "requester", source="servicenow", client=True)


@pytest.fixture
def alice(db) -> User:
    return make_user("alice", "approver", email="alice@example.com")


@pytest.fixture
def bob(db) -> User:
    return make_user("bob", "approver", email="bob@example.com")


@pytest.fixture
def carol(db) -> User:
    """The person the ITSM names as requester; also an approver (separation of duties must stop her)."""
    return make_user("carol", "approver", email="carol@example.com")


@pytest.fixture
def operator(db) -> User:
    return make_user("olga", "operator")


@pytest.fixture
def auditor(db) -> User:
    return make_user("audrey", "auditor")


@pytest.fixture
def outsider(db) -> User:
    return make_user("mallory")


@pytest.fixture
def root(db) -> User:
    return make_user("root", superuser=True, email="root@example.com")


@pytest.fixture
def servers(db) -> dict[str, Server]:
    """EX01 standalone; EX02–EX04 in DAG1; EX05 in DAG2."""
    made = {"EX01": Server.objects.create(name="EX01", fqdn="ex01.corp.example", ad_site="HQ")}
    for name in ("EX02", "EX03", "EX04"):
        made[name] = Server.objects.create(name=name, fqdn=f"{name.lower()}.corp.example", dag_name="DAG1")
    made["EX05"] = Server.objects.create(name="EX05", fqdn="ex05.corp.example", dag_name="DAG2")
    return made


SATURDAY_NIGHT = datetime(2030, 1, 5, 22, 0, tzinfo=UTC)  # a Saturday, outside business hours


def window(offset_hours: float = 0, hours: float = 2) -> tuple[datetime, datetime]:
    start = SATURDAY_NIGHT + timedelta(hours=offset_hours)
    return start, start + timedelta(hours=hours)


def payload(*, hours: float = 0, **overrides: Any) -> dict[str, Any]:
    """A valid change request as an ITSM posts it (JSON-ready); ``hours`` shifts its window."""
    start, end = window(hours)
    body = {
        "source": "servicenow",
        "external_ref": "CHG0030012",
        "title": "Install Exchange 2019 CU15 on EX01",
        "description": "Quarterly cumulative update.",
        "change_type": "normal",
        "risk": "medium",
        "impact": "medium",
        "servers": ["EX01"],
        "window_start": start.isoformat(),
        "window_end": end.isoformat(),
        "requested_by": "carol@example.com",
        "notify": ["exchange-team@example.com"],
    }
    body.update(overrides)
    if body["change_type"] == "standard" and "standard_template" not in overrides:
        from tests.support.catalogue import pre_approved

        body["standard_template"] = pre_approved(body["servers"], plan=body.get("plan", "maintenance"))
    return body


@pytest.fixture
def api() -> Callable[[User | None], APIClient]:
    """An HTTP client authenticated with the user's real token; every response it gets is validated against the
    exported OpenAPI schema (tests/support/contract.py)."""

    def make(user: User | None) -> APIClient:
        client = ContractClient()
        if user is not None:
            client.credentials(HTTP_AUTHORIZATION=f"Token {api_key(user)}")
        return client

    return make


@pytest.fixture
def celery_workers() -> Iterator[Workers]:
    """Real Celery worker processes on this session's database, broker and queue; any still alive are SIGKILLed
    at teardown."""
    workers = Workers(Path(settings.VAR_DIR))
    yield workers
    workers.stop_all()


@pytest.fixture
def on_postgres() -> bool:
    return connection.vendor == "postgresql"
