"""
The counters of one process name, which outlive any one process object.

A reload that replaces a process (a new command) builds a new
L{orchestrator.supervision.process.ManagedProcess}; Prometheus counters
must not fall back to zero because of it (a reset makes C{increase()}
undercount), and the seed's C{backend_restart_count} must keep agreeing
with C{sum(orchestrator_process_restarts_total{process="backend"})}.  So
the supervisor keeps one L{ProcessCounters} per name and hands it to every
process object of that name.
"""

from __future__ import annotations

__all__ = ["ProcessCounters", "RESTART_REASONS"]

#: The reasons a restart is counted under, in the order metrics list them.
RESTART_REASONS = ("crash", "unhealthy", "start_timeout", "spawn_failed", "manual", "memory")


class ProcessCounters:
    """
    Monotonic counts for one process name.

    @ivar restarts: every restart (automatic or by command); the seed's
        C{restart_count}.
    @ivar restartsByReason: C{reason -> count}; sums to C{restarts}.
    @ivar exitCounts: C{{True: clean exits, False: other exits}}.
    @ivar probeLimitHits: C{limit -> count} of probe answers that hit a
        bound (C{ProbeResult.limit}); the health monitor adds to it.
    @ivar outputLimitHits: C{limit -> count} of output lines that hit a
        bound: C{max_line_bytes} (a line cut there), C{echo_rate} (a line
        not echoed into the orchestrator's log); the output capture adds.
    @ivar outputDroppedBytes: bytes of output dropped from runs whose pipes
        were closed (L{orchestrator.supervision.output.MAX_OPEN_RUNS}).
    """

    __slots__ = ("restarts", "restartsByReason", "exitCounts", "probeLimitHits",
                 "outputLimitHits", "outputDroppedBytes")

    def __init__(self) -> None:
        self.restarts = 0
        self.restartsByReason: dict[str, int] = {}
        self.exitCounts = {True: 0, False: 0}
        self.probeLimitHits: dict[str, int] = {}
        self.outputLimitHits: dict[str, int] = {}
        self.outputDroppedBytes = 0

    def countOutputLimit(self, limit: str, count: int) -> None:
        self.outputLimitHits[limit] = self.outputLimitHits.get(limit, 0) + count

    def countRestart(self, reason: str) -> None:
        self.restarts += 1
        self.restartsByReason[reason] = self.restartsByReason.get(reason, 0) + 1

    def countExit(self, clean: bool) -> None:
        self.exitCounts[bool(clean)] += 1
