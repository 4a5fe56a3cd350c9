"""A plugin that registers a notifier named like a built-in one."""

from orchestrator.plugin import hookimpl


class Log:
    name = "log"
    config_schema = {"type": "object", "properties": {}}


@hookimpl
def register_notifiers():
    return [Log]
