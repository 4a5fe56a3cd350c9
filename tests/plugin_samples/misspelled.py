"""A plugin whose hook name has a typo."""

from orchestrator.plugin import hookimpl


@hookimpl
def register_notifier():
    return []
