"""The service's settings plus the benchmark's bare app and URL (benchmarks/create_changes.py); DEBUG off, as served.
"""
from __future__ import annotations

from config.settings import *  # noqa: F403 - the service as it is, plus what follows

INSTALLED_APPS = [*INSTALLED_APPS, "benchmarks.bare.apps.BareConfig"]  # noqa: F405
ROOT_URLCONF = "benchmarks.bare.urls"
DEBUG = False  # no query log, no debug pages: as production serves it (the keys were derived above)
