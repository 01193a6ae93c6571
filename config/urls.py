from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from changes.api.views import healthz

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("changes.api.urls")),
    path("healthz", healthz, name="healthz"),
]
