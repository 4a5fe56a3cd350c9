"""
Everything a plugin author needs, in one import::

    from orchestrator.plugin import hookimpl, ProbeResult

The hooks themselves are specified in L{orchestrator.hooks.specs} and
documented in C{docs/plugins.md}.  Names here are the public contract; the
modules they come from may move.
"""

from orchestrator.config.types import HealthConfig, NotifierConfig, ProcessConfig
from orchestrator.health.results import ProbeResult
from orchestrator.hooks.specs import PROJECT_NAME, hookimpl, hookspec
from orchestrator.notify.events import EVENT_TYPES, Event
from orchestrator.notify.registry import NotifierDisabled
from orchestrator.supervision.policy import ExitRecord, RestartHistory

__all__ = [
    "EVENT_TYPES",
    "Event",
    "ExitRecord",
    "HealthConfig",
    "NotifierConfig",
    "NotifierDisabled",
    "PROJECT_NAME",
    "ProbeResult",
    "ProcessConfig",
    "RestartHistory",
    "hookimpl",
    "hookspec",
]
