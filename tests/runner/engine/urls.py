"""The project's URLs plus the dry-run route, as config/urls.py will have it (the lead wires the real one)."""
from __future__ import annotations

from django.urls import path

from config.urls import urlpatterns as project_urlpatterns
from runner.api import DryRunView

urlpatterns = [
    path("api/v1/changes/<int:pk>/dry-run/", DryRunView.as_view(), name="change-dry-run"),
    *project_urlpatterns,
]
