"""A plugin whose startup hook raises: the orchestrator cannot come up."""

from orchestrator.plugin import hookimpl


@hookimpl
def startup(orchestrator):
    raise RuntimeError("startup hook is broken")
