"""
Deprecated location, kept for one release: import from
L{orchestrator.plugin} (C{hookimpl}) instead.
"""

from orchestrator.hooks.specs import *  # noqa: F401,F403
from orchestrator.hooks.specs import PROJECT_NAME, hookimpl, hookspec  # noqa: F401
