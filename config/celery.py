"""The Celery app; configuration comes from Django settings (CELERY_ namespace)."""
from __future__ import annotations

import os

from celery import Celery

from .broker_outage import install as install_broker_outage_guard

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

install_broker_outage_guard()

app = Celery("exmaint")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
