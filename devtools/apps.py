from django.apps import AppConfig


class DevtoolsConfig(AppConfig):
    """What a developer runs, not what production runs: the demo, ``serve``, the simulator's command, local sinks."""

    name = "devtools"
