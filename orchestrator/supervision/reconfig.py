"""
What a reload changes about one process, and whether that needs a new child.

A process's configuration has two halves.  What I{defines the child}
(the command, its working directory, its environment, and anything else
that reaches the spawn) can only be changed by starting a new child.  The
rest is I{supervision policy} (health probing, restart budget and backoff,
how it is stopped, its output handling, its dependencies): the supervisor
applies it to the running child in place, so tuning a probe interval in
production never bounces the backend.

A field this module does not name as policy is treated as defining the
child: a new field added to L{ProcessConfig} is safe (it replaces) until
someone decides it can be applied in place.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Mapping

from orchestrator.config.types import ProcessConfig

__all__ = [
    "POLICY_FIELDS",
    "ProcessChange",
    "UNCHANGED",
    "UPDATED",
    "REPLACED",
    "ADDED",
    "REMOVED",
    "changedFields",
    "describeChanges",
    "diffProcess",
]

#: Top-level fields of L{ProcessConfig} applied to a running child in place.
POLICY_FIELDS = frozenset({
    "url",            # only probes use it
    "depends_on",     # start/stop order, read by the supervisor
    "autostart",      # read at start-up and when a process is added
    "ready_after",    # readiness of the next run without a probe
    "stop",           # read at the next stop
    "restart",        # budget, window and policy of the next decision
    "health",         # probes are rescheduled on the running child
    "output",         # log file, echo, buffers: a new capture for the same child
    # Names of later features that are policy by the design's contract.
    "groups", "max_memory", "memory_check_interval", "log",
    "replicas",       # each instance is its own process: a change adds or removes instances
})

UNCHANGED = "unchanged"
UPDATED = "updated"
REPLACED = "replaced"
ADDED = "added"
REMOVED = "removed"


@dataclass(frozen=True)
class ProcessChange:
    """
    The outcome of a reload for one process.

    @ivar name: the process.
    @ivar outcome: L{UNCHANGED}, L{UPDATED} (in place, same child),
        L{REPLACED} (a new child), L{ADDED} or L{REMOVED}.
    @ivar fields: the dotted configuration paths that changed, sorted.
    """

    name: str
    outcome: str
    fields: tuple[str, ...] = ()

    def describe(self) -> str:
        """
        C{unchanged}, C{updated in place (health.interval)},
        C{replaced (command)}, C{added}, C{removed}.
        """
        what = {UPDATED: "updated in place"}.get(self.outcome, self.outcome)
        return f"{what} ({', '.join(self.fields)})" if self.fields else what

    def toJSON(self) -> dict:
        return {"outcome": self.outcome, "fields": list(self.fields),
                "description": self.describe()}


def changedFields(old, new, prefix: str = "") -> list[str]:
    """
    The dotted paths at which two configuration values differ, one level
    into nested dataclasses (C{health.interval}, not C{health}).
    """
    if old == new:
        return []
    if not (dataclasses.is_dataclass(old) and type(old) is type(new)):
        return [prefix.rstrip(".") or "value"]
    paths = []
    for f in dataclasses.fields(old):
        if not f.compare:
            continue
        a, b = getattr(old, f.name), getattr(new, f.name)
        if a == b:
            continue
        if prefix == "" and dataclasses.is_dataclass(a):
            paths += changedFields(a, b, prefix=f"{f.name}.")
        else:
            paths.append(prefix + f.name)
    return paths


def diffProcess(
    old: ProcessConfig,
    new: ProcessConfig,
    *,
    oldEnvironment: Mapping[str, str] | None = None,
    newEnvironment: Mapping[str, str] | None = None,
    modeChanged: bool = False,
) -> ProcessChange:
    """
    Decide what a reload does to one process that exists before and after.

    @param oldEnvironment: the child environment the old configuration
        computes (C{.env} values and secret names are global, so a change
        there can change a child's environment without a change to the
        process's own block).
    @param modeChanged: C{orchestrator.enabled} changed: every process is
        replaced (managing and monitoring are different objects).
    """
    fields = changedFields(old, new)
    if oldEnvironment is not None and newEnvironment is not None and oldEnvironment != newEnvironment:
        if "env" not in fields:
            fields.append("environment")
    if modeChanged:
        fields.append("orchestrator.enabled")
    fields = sorted(fields)
    if not fields:
        return ProcessChange(old.name, UNCHANGED)
    defining = [f for f in fields if f.split(".", 1)[0] not in POLICY_FIELDS]
    return ProcessChange(old.name, REPLACED if defining else UPDATED, tuple(fields))


def describeChanges(changes: Mapping[str, ProcessChange]) -> str:
    """
    One line for the log and the C{config_reloaded} event:
    C{backend: updated in place (health.interval); worker: replaced (command)}.
    """
    return "; ".join(f"{name}: {change.describe()}" for name, change in changes.items()) \
        or "no processes"
