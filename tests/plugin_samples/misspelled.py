"""A plugin whose hook name has a typo."""

from orchestrator.hookspecs import hookimpl


@hookimpl
def register_notifier():
    return []
