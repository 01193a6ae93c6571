from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from changes.api.views import healthz
from reports.api import change_report
from runner.api import DryRunView
from runner.check_api import ServerCheckView

urlpatterns = [
    path("admin/", admin.site.urls),
    # Before the changes router, which would otherwise own every /changes/<id>/… path.
    path("api/v1/changes/<int:pk>/dry-run/", DryRunView.as_view(), name="change-dry-run"),
    path("api/v1/changes/<int:pk>/report/", change_report, name="change-report"),
    path("api/v1/servers/<int:pk>/check/", ServerCheckView.as_view(), name="server-check"),
    # Before the changes router: /changes/<id>/deliveries/ and the calendar feed.
    path("api/v1/", include("notifications.urls")),
    path("api/v1/", include("changes.api.urls")),
    path("healthz", healthz, name="healthz"),
]

handler400 = "changes.api.errors.bad_request"
handler404 = "changes.api.errors.not_found"
handler500 = "changes.api.errors.server_error"
