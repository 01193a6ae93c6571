"""The Celery app the kill test's workers run: the project's app with the notifications app installed."""
from __future__ import annotations

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.notifications.settings")
django.setup()

from config.celery import app  # noqa: E402 - Django must be set up first

__all__ = ["app"]
