"""A standard-change catalogue entry for tests that need a pre-approved (standard) change."""
from __future__ import annotations

from collections.abc import Iterable

from django.contrib.auth.models import User
from django.utils import timezone

from changes.models import Server, StandardChangeTemplate


def pre_approved(servers: Iterable[str], *, plan: str = "maintenance") -> str:
    """The name of an active catalogue entry pre-approving ``plan`` up to medium risk on these servers (added to it
    if needed), for a standard change's ``standard_template``."""
    cab, _ = User.objects.get_or_create(username="cab-chair")
    template, _ = StandardChangeTemplate.objects.get_or_create(
        name=f"test-{plan}", defaults={"work": "Test work", "plan": plan, "max_risk": "medium", "approved_by": cab,
                                       "approved_at": timezone.now()})
    template.servers.add(*Server.objects.filter(name__in=[n.upper() for n in servers]))
    return template.name
