from django.apps import AppConfig


class RunnerConfig(AppConfig):
    """The step engine, the Exchange sessions and the simulator; no models of its own."""

    name = "runner"
