"""
An example third-party plugin for orchestrator: the C{jsonl} notifier
appends every event it receives to a file, one JSON object per line.

Installed, it is found through the C{orchestrator} entry point group (see
setup.cfg); uninstalled, the same module can be listed by dotted path in
the YAML C{plugins:} list.  Select it like any built-in::

    notifiers:
      - type: jsonl
        path: /var/log/orchestrator/events.jsonl
        events: [crashed, gave_up]
"""

import json

from orchestrator.plugin import hookimpl


class JSONLinesNotifier:
    """
    Append events to C{path} as JSON lines.
    """

    name = "jsonl"
    config_schema = {
        "type": "object",
        "required": ["path"],
        "properties": {
            "path": {"type": "string", "minLength": 1,
                     "description": "jsonl notifier: file the events are appended to."},
        },
    }

    def __init__(self, config, reactor):
        self.path = config.options["path"]

    def notify(self, event):
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(event.toJSON()) + "\n")


@hookimpl
def register_notifiers():
    return [JSONLinesNotifier]
