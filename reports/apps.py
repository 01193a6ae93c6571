from django.apps import AppConfig


class ReportsConfig(AppConfig):
    """The window's PDF report."""

    name = "reports"
