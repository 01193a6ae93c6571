from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from changes.api.views import healthz

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("changes.api.urls")),
    path("healthz", healthz, name="healthz"),
]

handler400 = "changes.api.errors.bad_request"
handler404 = "changes.api.errors.not_found"
handler500 = "changes.api.errors.server_error"
