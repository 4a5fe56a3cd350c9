"""
The state machine of a supervised process, written down as one table.

Every status change of a process goes through L{TRANSITIONS}: for each
status and each input it says the next status, L{SAME} (a legal input
that changes nothing, such as a probe success while running), or
L{ILLEGAL} (a bug: the input cannot happen in that status).  An illegal
transition is logged as an error with the field C{illegal_transition} set
(the test suite fails on any such event) and the status is left alone,
instead of a silent C{return} that hides the bug.

The table is exhaustive: every status has an outcome for every input
(C{tests/test_status.py} proves it), so a new status or input cannot be
added without deciding each case.
"""

from __future__ import annotations

import enum

__all__ = ["Status", "Input", "SAME", "ILLEGAL", "TRANSITIONS", "EVENT_TYPES", "outcome"]


class Status(str, enum.Enum):
    """
    The public statuses (the seed's five plus C{stopping}), and
    C{unknown}: a monitor-only process before its first verdict.
    """

    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    UNHEALTHY = "unhealthy"
    CRASHED = "crashed"
    STOPPING = "stopping"
    UNKNOWN = "unknown"

    def __str__(self) -> str:
        return self.value


class Input(str, enum.Enum):
    """
    What can happen to a process.
    """

    SPAWNED = "spawned"            # a child was spawned
    SPAWN_FAILED = "spawn_failed"  # no child could be spawned
    READY = "ready"                # ready_after survived, or the probe's success_threshold met
    HEALTH_FAILED = "health_failed"  # failure_threshold consecutive probe failures
    STOP_REQUESTED = "stop_requested"  # the stop signal was sent to the group
    STOPPED = "stopped"            # the child is gone after a stop (or there was none)
    EXITED = "exited"              # a clean exit the policy does not restart
    CRASHED = "crashed"            # any other exit while meant to run
    PROBE_UP = "probe_up"          # monitor-only: the probe says healthy
    PROBE_DOWN = "probe_down"      # monitor-only: the probe says unhealthy

    def __str__(self) -> str:
        return self.value


class _Outcome(str, enum.Enum):
    SAME = "same"
    ILLEGAL = "illegal"


#: A legal input that leaves the status (and emits nothing).
SAME = _Outcome.SAME
#: An input that cannot happen in this status: logged as an error.
ILLEGAL = _Outcome.ILLEGAL

_S, _I = Status, Input
_ = ILLEGAL

#: C{TRANSITIONS[status][input]} -> the next L{Status}, L{SAME} or L{ILLEGAL}.
TRANSITIONS: dict[Status, dict[Input, Status | _Outcome]] = {
    _S.STOPPED: {
        _I.SPAWNED: _S.STARTING, _I.SPAWN_FAILED: _S.CRASHED, _I.READY: _,
        _I.HEALTH_FAILED: _, _I.STOP_REQUESTED: _, _I.STOPPED: SAME, _I.EXITED: _,
        _I.CRASHED: _, _I.PROBE_UP: _, _I.PROBE_DOWN: _,
    },
    _S.STARTING: {
        _I.SPAWNED: _, _I.SPAWN_FAILED: _, _I.READY: _S.RUNNING,
        # Failures while starting are expected; only start_timeout ends a start.
        _I.HEALTH_FAILED: SAME,
        _I.STOP_REQUESTED: _S.STOPPING, _I.STOPPED: _, _I.EXITED: _S.STOPPED,
        _I.CRASHED: _S.CRASHED, _I.PROBE_UP: _, _I.PROBE_DOWN: _,
    },
    _S.RUNNING: {
        _I.SPAWNED: _, _I.SPAWN_FAILED: _, _I.READY: SAME,
        _I.HEALTH_FAILED: _S.UNHEALTHY, _I.STOP_REQUESTED: _S.STOPPING, _I.STOPPED: _,
        _I.EXITED: _S.STOPPED, _I.CRASHED: _S.CRASHED,
        _I.PROBE_UP: SAME, _I.PROBE_DOWN: _S.UNHEALTHY,
    },
    _S.UNHEALTHY: {
        _I.SPAWNED: _, _I.SPAWN_FAILED: _, _I.READY: _S.RUNNING,
        # Reported on every failure past the threshold (restart_on_unhealthy off).
        _I.HEALTH_FAILED: SAME,
        _I.STOP_REQUESTED: _S.STOPPING, _I.STOPPED: _, _I.EXITED: _S.STOPPED,
        _I.CRASHED: _S.CRASHED, _I.PROBE_UP: _S.RUNNING, _I.PROBE_DOWN: SAME,
    },
    _S.CRASHED: {
        _I.SPAWNED: _S.STARTING,
        # A retry that fails again: a new spawn_failed event, same status.
        _I.SPAWN_FAILED: _S.CRASHED,
        _I.READY: _, _I.HEALTH_FAILED: _, _I.STOP_REQUESTED: _,
        _I.STOPPED: _S.STOPPED, _I.EXITED: _, _I.CRASHED: _, _I.PROBE_UP: _, _I.PROBE_DOWN: _,
    },
    _S.STOPPING: {
        _I.SPAWNED: _, _I.SPAWN_FAILED: _, _I.READY: _, _I.HEALTH_FAILED: _,
        # A second stop joins the first.
        _I.STOP_REQUESTED: SAME,
        _I.STOPPED: _S.STOPPED, _I.EXITED: _, _I.CRASHED: _, _I.PROBE_UP: _, _I.PROBE_DOWN: _,
    },
    _S.UNKNOWN: {
        _I.SPAWNED: _, _I.SPAWN_FAILED: _, _I.READY: _, _I.HEALTH_FAILED: _,
        _I.STOP_REQUESTED: _, _I.STOPPED: _, _I.EXITED: _, _I.CRASHED: _,
        _I.PROBE_UP: _S.RUNNING, _I.PROBE_DOWN: _S.UNHEALTHY,
    },
}

#: The event a transition caused by each input emits.
EVENT_TYPES: dict[Input, str] = {
    _I.SPAWNED: "starting",
    _I.SPAWN_FAILED: "spawn_failed",
    _I.READY: "running",
    _I.HEALTH_FAILED: "unhealthy",
    _I.STOP_REQUESTED: "stopping",
    _I.STOPPED: "stopped",
    _I.EXITED: "exited",
    _I.CRASHED: "crashed",
    _I.PROBE_UP: "running",
    _I.PROBE_DOWN: "unhealthy",
}


def outcome(status: Status | str, input: Input) -> Status | _Outcome:
    """
    Look up what C{input} does in C{status}.
    """
    return TRANSITIONS[Status(status)][input]
