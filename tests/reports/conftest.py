"""Fixtures of the report tests: finished windows (see support.py) and the report's URL wired as the lead will."""
from __future__ import annotations

import pytest

from .support import ended_window


@pytest.fixture
def completed(requester, alice, bob, operator, servers):
    return ended_window(requester, [alice, bob], operator, outcome="completed")


@pytest.fixture
def exit_retried(requester, alice, bob, operator, servers):
    return ended_window(requester, [alice, bob], operator, outcome="exit_retried")


@pytest.fixture
def aborted(requester, alice, bob, operator, servers):
    return ended_window(requester, [alice, bob], operator, outcome="aborted")


@pytest.fixture(autouse=True)
def _notifications_sent(request, monkeypatch):
    """Nothing dispatches the outbox in these tests: treat the windows' notifications as sent, except where a test
    is about waiting for them."""
    if "waits_for_notifications" not in request.keywords:
        monkeypatch.setattr("reports.services.notifications_settled", lambda change_id: True)
