"""Management commands an operator runs."""
from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError

from changes import tokens

pytestmark = pytest.mark.django_db


def test_create_api_client_prints_the_token_last_and_sets_roles() -> None:
    out = StringIO()
    call_command("create_api_client", "servicenow", "--role", "requester", "--source", "servicenow", stdout=out)
    token = out.getvalue().strip().splitlines()[-1]
    user = User.objects.get(username="servicenow")
    assert tokens.token_user(token)[0] == user
    assert list(user.groups.values_list("name", flat=True)) == ["requester"]
    assert user.api_client.source == "servicenow"


def test_create_api_client_takes_several_roles_and_refuses_duplicates() -> None:
    call_command("create_api_client", "ops", "--role", "operator", "--role", "auditor", stdout=StringIO())
    assert sorted(User.objects.get(username="ops").groups.values_list("name", flat=True)) == ["auditor", "operator"]
    with pytest.raises(CommandError, match="already exists"):
        call_command("create_api_client", "ops", "--role", "operator", stdout=StringIO())


def test_create_api_client_shows_the_callback_secret_notifications_made_for_it_once() -> None:
    """The secret comes from the notifications app's handler of the domain event, in the creating transaction."""
    from changes.models import AuditEvent
    from notifications.secrets import callback_secret_for

    out = StringIO()
    call_command("create_api_client", "servicenow", "--role", "requester", "--source", "servicenow", stdout=out)
    created, secret_line, token = out.getvalue().strip().splitlines()
    assert created == "Created servicenow with role(s) requester."
    label, secret = secret_line.split(": ")
    assert label == "Callback signing secret (X-Exmaint-Signature)"
    user = User.objects.get(username="servicenow")
    assert callback_secret_for(user.api_client.pk) == secret and len(secret) >= 40
    assert list(AuditEvent.objects.filter(object_id=str(user.pk)).order_by("seq").values_list("action", flat=True)) \
        == ["user.created", "user.group_added", "identity.created", "api_token.issued", "callback_secret.created"]
    assert secret not in str(list(AuditEvent.objects.values_list("changes", flat=True)))
