"""
A plugin whose life-cycle hooks accept fewer arguments than the hook
specifications offer (pluggy allows any subset): C{startup()} takes none.
"""

from orchestrator.plugin import hookimpl

#: What the hooks were called with, in order (tests clear it).
CALLS: list = []


@hookimpl
def startup():
    CALLS.append(("startup",))


@hookimpl
def shutdown(orchestrator):
    CALLS.append(("shutdown", orchestrator))


@hookimpl
def register_admin_resources():
    return []
