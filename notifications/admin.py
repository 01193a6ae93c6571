"""The outbox in the admin: read-only, filterable, so an operator sees what failed and why."""
from __future__ import annotations

from django.contrib import admin

from .models import Delivery


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    list_display = ["id", "change", "channel", "kind", "status", "recipients_count", "batches_sent", "attempts",
                    "next_attempt_at", "sent_at"]
    list_filter = ["status", "channel", "kind"]
    search_fields = ["dedupe_key", "message_id"]
    list_select_related = ["change"]
    readonly_fields = [f.name for f in Delivery._meta.fields]

    def has_add_permission(self, request) -> bool:  # noqa: ANN001
        return False

    def has_delete_permission(self, request, obj=None) -> bool:  # noqa: ANN001
        return False
