"""Domain events reach registered handlers inside the transaction that caused them."""
from __future__ import annotations

import pytest

from changes import events, services
from changes.errors import ScheduleConflict
from tests.changes.test_services import create

pytestmark = pytest.mark.django_db


@pytest.fixture
def seen():
    got: list[tuple[str, dict]] = []

    def handler(event: str, **data) -> None:
        got.append((event, data))

    events.register(handler)
    yield got
    events.unregister(handler)


def test_create_and_schedule_emit_created_then_transition(requester, servers, seen) -> None:
    change, _ = create(requester, change_type="standard")
    assert [e for e, _ in seen] == ["change.created", "change.transition"]
    assert seen[1][1]["old"] == "awaiting_approval" and seen[1][1]["new"] == "scheduled"
    assert seen[1][1]["change"].pk == change.pk


def test_an_edit_emits_the_diff(requester, servers, seen) -> None:
    change, _ = create(requester)
    services.change_update(change, actor=requester, data={"title": "New title"})
    assert seen[-1][0] == "change.updated" and seen[-1][1]["diff"]["title"][1] == "New title"


def test_a_handler_runs_in_the_callers_transaction(requester, servers) -> None:
    from changes.models import Change

    def failing(event: str, **data) -> None:
        if event == "change.created":
            raise ScheduleConflict("refused by a handler")

    events.register(failing)
    try:
        with pytest.raises(ScheduleConflict):
            create(requester)
    finally:
        events.unregister(failing)
    assert Change.objects.count() == 0  # the change rolled back with the handler's failure
