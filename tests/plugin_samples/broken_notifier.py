"""A plugin whose notifier always fails."""

from orchestrator.plugin import hookimpl


class Broken:
    name = "broken"
    config_schema = {"type": "object", "properties": {}}

    def __init__(self, config, reactor):
        pass

    def notify(self, event):
        raise RuntimeError("this notifier is broken")


@hookimpl
def register_notifiers():
    return [Broken]

