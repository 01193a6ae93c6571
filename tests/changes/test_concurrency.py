"""Concurrent requests on PostgreSQL: the schedule lock serializes exactly the requests that could conflict (same
server or same DAG) and no others, and the audit chain stays whole. Real threads, one connection each."""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connections
from rest_framework.test import APIClient

from changes import audit
from changes.models import AuditEvent, Change, Server
from changes.states import State
from tests.conftest import make_user, payload
from tests.support.tokens import api_key

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]
CLIENTS = 20


def _client(user: User) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {api_key(user)}")
    return client


def _all_at_once(requests: list[Callable[[], Any]]) -> list[int]:
    """Run the requests on their own threads, released together; their HTTP status codes in order."""
    barrier, codes = threading.Barrier(len(requests)), [0] * len(requests)

    def run(index: int) -> None:
        try:
            barrier.wait()
            codes[index] = requests[index]().status_code
        except Exception as exc:  # noqa: BLE001 - shown in the assertion
            codes[index] = repr(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return codes


def _servers(layout: str) -> list[str]:
    """CLIENTS server names: all the same server, CLIENTS members of one DAG, or CLIENTS standalone servers."""
    if layout == "one server":
        Server.objects.create(name="EX01", fqdn="ex01.corp.example")
        return ["EX01"] * CLIENTS
    dag = "DAG1" if layout == "one DAG" else ""
    names = [f"EX{n:02d}" for n in range(1, CLIENTS + 1)]
    Server.objects.bulk_create(Server(name=name, fqdn=f"{name.lower()}.corp.example", dag_name=dag) for name in names)
    return names


def _chain_is_whole(events: int) -> None:
    """The chain verifies and holds ``events`` events of changes (the personas' account events come before them)."""
    result = audit.verify()
    assert result.ok, result.problem
    assert result.events == AuditEvent.objects.count()
    assert AuditEvent.objects.filter(object_type="change").count() == events


@pytest.mark.parametrize(("layout", "accepted"), [("one server", 1), ("one DAG", 1), ("different servers", CLIENTS)])
def test_concurrent_creates_of_overlapping_windows(layout: str, accepted: int) -> None:
    names = _servers(layout)
    client = _client(make_user("servicenow", "requester", source="servicenow", client=True))
    bodies = [payload(external_ref=f"RACE{i}", change_type="standard", risk="low", servers=[names[i]],
                      hours=i * 0.05) for i in range(CLIENTS)]  # every window overlaps every other one
    codes = _all_at_once([lambda body=body: client.post("/api/v1/changes/", body, format="json")
                          for body in bodies])
    assert sorted(codes) == sorted([201] * accepted + [409] * (CLIENTS - accepted)), codes
    assert Change.objects.filter(state=State.SCHEDULED).count() == accepted
    assert Change.objects.count() == accepted
    _chain_is_whole(events=2 * accepted)  # each: created, then scheduled (a standard change is pre-approved)


@pytest.mark.parametrize(("layout", "accepted"), [("one server", 1), ("one DAG", 1), ("different servers", CLIENTS)])
def test_concurrent_approvals_that_schedule_overlapping_windows(layout: str, accepted: int) -> None:
    names = _servers(layout)
    requester = _client(make_user("servicenow", "requester", source="servicenow", client=True))
    approver = _client(make_user("alice", "approver", email="alice@example.com"))
    ids = []
    for i in range(CLIENTS):  # normal, low risk: one approval schedules it; awaiting approval holds no server
        response = requester.post("/api/v1/changes/", payload(external_ref=f"RACE{i}", risk="low",
                                                              servers=[names[i]], hours=i * 0.05), format="json")
        assert response.status_code == 201, response.content
        ids.append(response.json()["id"])
    codes = _all_at_once([lambda pk=pk: approver.post(f"/api/v1/changes/{pk}/approve/", {"comment": "CAB"},
                                                      format="json") for pk in ids])
    assert sorted(codes) == sorted([200] * accepted + [409] * (CLIENTS - accepted)), codes
    assert Change.objects.filter(state=State.SCHEDULED).count() == accepted
    assert Change.objects.filter(state=State.AWAITING_APPROVAL).count() == CLIENTS - accepted
    _chain_is_whole(events=CLIENTS + 2 * accepted)  # created each; approved and scheduled for the accepted ones
