from django.apps import AppConfig


class ChangesConfig(AppConfig):
    """Change requests, approvals, freeze windows, the server inventory, step runs and the audit trail."""

    name = "changes"
    verbose_name = "Changes"

    def ready(self) -> None:
        from . import identities

        identities.connect()
