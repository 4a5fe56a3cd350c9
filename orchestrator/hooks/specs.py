"""
The hook specifications of the C{orchestrator} pluggy project.

Every hook here is a registration hook: the core calls it once, with keyword
arguments, while it builds the service, and collects what the
implementations return.  Runtime behaviour lives in the objects returned
(probes, policies, notifiers, resources), which the core calls one by one
under its own error handling, so one failing plugin never silences another
(pluggy stops a broadcast at the first exception).

Each hook is documented in C{docs/plugins.md} under a heading that is its
exact signature; C{tests/test_docs.py} fails when the two drift apart.
"""

from __future__ import annotations

from typing import Any

import pluggy

__all__ = ["PROJECT_NAME", "hookspec", "hookimpl"]

PROJECT_NAME = "orchestrator"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def register_probe_kinds() -> list[type]:
    """
    Return health probe kinds.

    Each kind is a class (or any callable) with the attributes C{name} (the
    value of C{health.probe} that selects it) and C{config_schema} (a JSON
    Schema object whose C{properties} are the kind's own keys in the
    C{health} block).  Called as C{kind(config, reactor)} with a
    L{orchestrator.config.types.HealthConfig} and the reactor; the result's
    C{check()} returns a Deferred that fires with a
    L{orchestrator.health.results.ProbeResult}.

    @return: a list of probe kinds.
    """


@hookspec
def register_restart_policies() -> list[type]:
    """
    Return restart policy kinds.

    Each kind has C{name} (the value of C{restart.policy}) and
    C{config_schema} (its own keys in the C{restart} block).  Called as
    C{kind(config)} with a L{orchestrator.config.types.RestartConfig}; the
    result's C{next_delay(history)} is a pure function of a
    L{orchestrator.supervision.policy.RestartHistory} returning the seconds to wait
    before the next automatic restart, or C{None} to give up.  It must not
    read a clock.

    @return: a list of restart policy kinds.
    """


@hookspec
def register_notifiers() -> list[type]:
    """
    Return notifier kinds.

    Each kind has C{name} (the C{type} of a C{notifiers} item) and
    C{config_schema} (its own keys in that item).  Called as
    C{kind(config, reactor)} with a L{orchestrator.config.types.NotifierConfig};
    the result's C{notify(event)} receives every
    L{orchestrator.notify.events.Event} the item's C{events} filter lets through and
    may return a Deferred.  An optional C{collect()} yields Prometheus metric
    families that are added to C{/metrics}; an optional C{close()} is called
    at shutdown and may return a Deferred.

    @return: a list of notifier kinds.
    """


@hookspec
def register_admin_resources(orchestrator: Any) -> list[tuple[str, Any]]:
    """
    Return extra admin API resources.

    @param orchestrator: the running L{orchestrator.app.Orchestrator}.
    @return: a list of C{(segment, resource)} pairs; each
        L{twisted.web.resource.IResource} is mounted at
        C{/api/v1/plugins/<segment>}, behind the same authentication and
        request checks as the built-in routes.  A segment used twice is a
        start-up error.
    """


@hookspec
def startup(orchestrator: Any) -> None:
    """
    Called once after every service has started.

    @param orchestrator: the running L{orchestrator.app.Orchestrator}.
    @return: None, or a Deferred the start-up does not wait for.
    """


@hookspec
def shutdown(orchestrator: Any) -> None:
    """
    Called once when the orchestrator begins to stop, before any process
    is stopped.

    @param orchestrator: the running L{orchestrator.app.Orchestrator}.
    @return: None, or a Deferred the shutdown waits for.
    """
