"""The Celery app the integration tests' workers run: the project's app, with the engine's plan builder replaced by
the test plan when EXMAINT_TEST_PLAN=1 (its "settle" step polls for EXMAINT_TEST_SETTLE_SECONDS real seconds);
without it, the real maintenance plan over pypsrp sessions built from the inventory, as in production."""
from __future__ import annotations

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.test_settings")
django.setup()

from config.celery import app  # noqa: E402 - Django must be set up before the engine's imports

if os.environ.get("EXMAINT_TEST_PLAN") == "1":
    from runner import engine  # noqa: E402

    from .support import Hooks, build_test_plan  # noqa: E402

    engine.default_plan_builder = build_test_plan(
        Hooks(wait_seconds=float(os.environ.get("EXMAINT_TEST_SETTLE_SECONDS", "0"))))

__all__ = ["app"]
