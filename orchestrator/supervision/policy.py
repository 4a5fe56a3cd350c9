"""
The values a restart policy decides on.

A policy is a pure function of a L{RestartHistory}: no clock, no random
source of its own.  The supervisor draws C{sample} from its injected random
source, so jitter is exact under test.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ExitRecord", "RestartHistory"]


@dataclass(frozen=True)
class ExitRecord:
    """
    How one run of a process ended.

    @ivar pid: the child's pid.
    @ivar exit_code: its exit code, or C{None} if a signal killed it.
    @ivar signal: the signal that killed it, or C{None}.
    @ivar at: when it was reaped (reactor seconds).
    @ivar uptime: how long that run lasted.
    @ivar cause: C{"exit"}, C{"unhealthy"}, C{"start_timeout"},
        C{"stop"} (it was asked to stop) or C{"spawn_failed"}.
    @ivar clean: whether the exit code is one of C{success_exit_codes}.
    """

    pid: int | None
    exit_code: int | None
    signal: int | None
    at: float
    uptime: float
    cause: str = "exit"
    clean: bool = False

    def describe(self) -> str:
        if self.signal is not None:
            return f"killed by signal {self.signal}"
        if self.exit_code is not None:
            return f"exit code {self.exit_code}"
        return self.cause.replace("_", " ")


@dataclass(frozen=True)
class RestartHistory:
    """
    What a restart policy decides on.

    @ivar attempt: the number of the automatic restart being decided, 1 for
        the first one since the window opened.
    @ivar exits: the exits in the current window, oldest first; the last is
        the one being handled.
    @ivar was_ready: whether the run that just ended had become ready
        (healthy, or survived C{start.ready_after}).
    @ivar sample: a uniform random number in [0, 1) for jitter.
    """

    attempt: int
    exits: tuple[ExitRecord, ...]
    was_ready: bool
    sample: float = 0.5

    @property
    def last(self) -> ExitRecord:
        return self.exits[-1]
