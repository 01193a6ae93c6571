"""The runner's additions to the admin: "Check the connection" on servers. It lives here, not in changes/admin.py,
because the check does the runner's remote I/O and changes does not depend on the runner."""
from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.http import HttpRequest

from changes.admin import ServerAdmin

from .server_check import check_server


@admin.action(description="Check the connection (Kerberos, TLS, version, clock; runs no change)")
def check_connection(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: Any) -> None:
    for server in queryset:
        report = check_server(server)
        modeladmin.message_user(request, report.summary(), messages.SUCCESS if report.ok else messages.WARNING)


ServerAdmin.actions = [*ServerAdmin.actions, check_connection]
