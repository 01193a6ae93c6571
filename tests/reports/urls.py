"""The project's URLs plus the report route, as config/urls.py will have it (the lead wires the real one)."""
from __future__ import annotations

from django.urls import path

from config.urls import urlpatterns as project_urlpatterns
from reports.api import change_report

urlpatterns = [
    path("api/v1/changes/<int:pk>/report/", change_report, name="change-report"),
    *project_urlpatterns,
]
