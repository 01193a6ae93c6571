"""Fixtures of the notification tests: a real SMTP server, a real HTTP receiver, changes in each state."""
from __future__ import annotations

from tests.notifications.fixtures import *  # noqa: F403
