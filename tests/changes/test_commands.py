"""Management commands an operator runs."""
from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError
from rest_framework.authtoken.models import Token

pytestmark = pytest.mark.django_db


def test_create_api_client_prints_the_token_last_and_sets_roles() -> None:
    out = StringIO()
    call_command("create_api_client", "servicenow", "--role", "requester", "--source", "servicenow", stdout=out)
    token = out.getvalue().strip().splitlines()[-1]
    user = User.objects.get(username="servicenow")
    assert Token.objects.get(user=user).key == token
    assert list(user.groups.values_list("name", flat=True)) == ["requester"]
    assert user.api_client.source == "servicenow"


def test_create_api_client_takes_several_roles_and_refuses_duplicates() -> None:
    call_command("create_api_client", "ops", "--role", "operator", "--role", "auditor", stdout=StringIO())
    assert sorted(User.objects.get(username="ops").groups.values_list("name", flat=True)) == ["auditor", "operator"]
    with pytest.raises(CommandError, match="already exists"):
        call_command("create_api_client", "ops", "--role", "operator", stdout=StringIO())
