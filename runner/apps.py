from django.apps import AppConfig


class RunnerConfig(AppConfig):
    """The step engine and the Exchange sessions; no models of its own."""

    name = "runner"
