from __future__ import annotations

from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    """E-mail, calendar invites and signed ITSM callbacks, sent from a transactional outbox."""

    name = "notifications"
    verbose_name = "Notifications"

    def ready(self) -> None:
        from changes import events

        from .outbox import on_event
        from .secrets import on_client_created

        # The outbox rows commit or roll back with the change that caused them (changes.events runs in-transaction).
        events.register(on_event)
        # A new API client gets its callback signing secret here, not from the command that creates it.
        events.register(on_client_created)
