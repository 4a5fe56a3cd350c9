"""
What every supervised process has, managed or monitored: its status (moved
only through the transition table), its counters, its output, its health
monitor, its snapshot for the API and metrics, and how a reload updates
its policy in place.

L{orchestrator.supervision.process.ManagedProcess} adds the child's life
cycle; L{orchestrator.supervision.monitored.MonitoredProcess} is the
monitor-only kind (nothing spawned, the probe decides the status).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from orchestrator.config.types import ProcessConfig
from orchestrator.errors import StateError
from orchestrator.supervision.budget import RestartBudget
from orchestrator.supervision.counters import ProcessCounters
from orchestrator.supervision.output import OutputCapture
from orchestrator.supervision.policy import ExitRecord
from orchestrator.supervision.status import EVENT_TYPES, ILLEGAL, SAME, Input, Status, outcome
from orchestrator.supervision.timers import Timers

__all__ = ["STATUSES", "ProcessSnapshot", "SupervisedProcess", "EXITS_KEPT"]

#: The public statuses of a managed process.
STATUSES = tuple(s.value for s in Status if s is not Status.UNKNOWN)
_ALIVE = frozenset({"starting", "running", "unhealthy", "stopping"})

#: How many exits a process remembers for the API (C{exits}).
EXITS_KEPT = 20


@dataclass(frozen=True)
class ProcessSnapshot:
    """
    A process's state at one moment, for the API and metrics.

    @ivar waiting_for: why a stopped process is not started yet
        (C{"waiting for migrate: exited with code 1"}), or C{None}.
    """

    name: str
    status: str
    pid: int | None
    started_at: float | None
    uptime: float
    restart_count: int
    attempts: int
    max_attempts: int
    gave_up: bool
    next_restart_in: float | None
    last_exit: ExitRecord | None
    exits: tuple[ExitRecord, ...]
    managed: bool
    health: Any  # a HealthSnapshot, or None without a probe
    groups: tuple[str, ...] = ()
    waiting_for: str | None = None


class SupervisedProcess:
    """
    The shared half of a supervised process.

    @param config: the process's configuration.
    @param reactor: C{seconds()} and C{callLater()}.
    @param policy: the restart policy object.
    @param events: the L{orchestrator.notify.events.EventBus}.
    @param random: draws the jitter sample of each restart decision.
    @param monitorFactory: C{monitorFactory(process)} returns a health
        monitor built from C{process.config.health}, or C{None}.
    @param counters: the L{ProcessCounters} of this process name (shared
        with the process objects a reload replaces, so counters never drop).
    """

    # Slots: with more than 29 attributes an instance's __dict__ stops
    # sharing its keys with the class and costs 1.6 KiB per process.
    __slots__ = ("config", "name", "waitingFor", "_reactor", "_events", "_monitorFactory",
                 "counters", "budget", "timers", "_output", "_monitor", "_retired", "status",
                 "pid", "startedAt", "readyAt", "_exits")

    log = Logger()
    managed = True
    _initial = Status.STOPPED

    def __init__(
        self,
        config: ProcessConfig,
        *,
        reactor,
        policy,
        events,
        random: Callable[[], float] = lambda: 0.5,
        monitorFactory: Callable[["SupervisedProcess"], Any] | None = None,
        counters: ProcessCounters | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        #: Why the supervisor has not started it yet (a dependency's
        #: condition), or C{None}.
        self.waitingFor: str | None = None
        self._reactor = reactor
        self._events = events
        self._monitorFactory = monitorFactory or (lambda process: None)
        self.counters = counters if counters is not None else ProcessCounters()
        self.budget = RestartBudget(config.restart, policy, random)
        self.timers = Timers(reactor)
        self._output = OutputCapture(self.name, config.output, reactor, self.counters)
        self._monitor = None
        self._retired: str | None = None
        self.status: str = self._initial.value
        self.pid: int | None = None
        self.startedAt: float | None = None
        self.readyAt: float | None = None
        # Made at the first exit: most processes never exit, and an empty
        # deque costs 760 bytes.
        self._exits: deque[ExitRecord] | None = None

    # -- what the API and metrics read -------------------------------------

    @property
    def health(self):
        """
        The health monitor, or C{None} without a probe.
        """
        return self._monitor

    @property
    def output(self) -> OutputCapture:
        return self._output

    @property
    def exits(self) -> Sequence[ExitRecord]:
        """
        The last L{EXITS_KEPT} exits, oldest first.
        """
        return self._exits if self._exits is not None else ()

    def _recordExit(self, record: ExitRecord) -> None:
        if self._exits is None:
            self._exits = deque(maxlen=EXITS_KEPT)
        self._exits.append(record)

    @property
    def restartCount(self) -> int:
        return self.counters.restarts

    @property
    def restartsByReason(self) -> dict[str, int]:
        return self.counters.restartsByReason

    @property
    def exitCounts(self) -> dict[bool, int]:
        return self.counters.exitCounts

    @property
    def attempts(self) -> int:
        return self.budget.attempts

    @property
    def gaveUp(self) -> bool:
        return self.budget.gaveUp

    @property
    def isAlive(self) -> bool:
        """
        Whether a child of ours is running.
        """
        return False

    @property
    def wanted(self) -> bool:
        """
        Whether the process is meant to run (started, and not stopped since).
        """
        return False

    def uptime(self) -> float:
        if self.startedAt is None or self.status not in _ALIVE:
            return 0.0
        return max(0.0, self._reactor.seconds() - self.startedAt)

    def stateKey(self) -> tuple:
        """
        Everything L{snapshot} shows but the clock (C{uptime},
        C{next_restart_in}) and the probe results (L{healthKey}), cheaply:
        equal keys, equal snapshots but for those.  The metrics and the API keep renderings of a process and
        compare this to know when one is old, instead of every change
        having to announce itself.
        """
        counters = self.counters
        return (self.status, self.pid, self.startedAt, counters.restarts,
                counters.exitCounts[True], counters.exitCounts[False], self.attempts, self.gaveUp,
                self.config, self.exits[-1] if self.exits else None, self._monitor)

    def healthKey(self) -> tuple | None:
        """
        What L{stateKey} leaves out of the C{health} snapshot: it changes
        with each probe result (and a new run's reset counters).
        """
        monitor = self._monitor
        if monitor is None:
            return None
        return (monitor.total, monitor.consecutiveFailures, monitor.consecutiveSuccesses)

    def snapshot(self) -> ProcessSnapshot:
        return ProcessSnapshot(
            name=self.name,
            status=self.status,
            pid=self.pid,
            started_at=self.startedAt if self.status in _ALIVE else None,
            uptime=self.uptime(),
            restart_count=self.restartCount,
            attempts=self.attempts,
            max_attempts=self.config.restart.max_attempts,
            gave_up=self.gaveUp,
            next_restart_in=self.timers.remaining("restart"),
            last_exit=self.exits[-1] if self.exits else None,
            exits=tuple(self.exits),
            managed=self.managed,
            health=self._monitor.snapshot() if self._monitor is not None else None,
            groups=self.config.groups,
            waiting_for=self.waitingFor if self.status == "stopped" else None,
        )

    # -- commands -----------------------------------------------------------------

    def start(self, wait: bool = True) -> Deferred:
        raise NotImplementedError

    def stop(self) -> Deferred:
        raise NotImplementedError

    def restart(self, wait: bool = True) -> Deferred:
        raise NotImplementedError

    def sendSignal(self, signal: int, toGroup: bool = True) -> "ProcessSnapshot":
        raise NotImplementedError

    def _refuseRetired(self, verb: str) -> None:
        if self._retired:
            raise StateError(f"cannot {verb} {self.name}: {self._retired}")

    # -- the state machine ----------------------------------------------------------

    def _transition(self, input: Input, reason: str = "", **fields) -> bool:
        """
        Move the status as L{orchestrator.supervision.status.TRANSITIONS}
        says and emit the event; an illegal input is logged as an error and
        changes nothing.

        @return: whether the status changed (or was re-entered).
        """
        target = outcome(self.status, input)
        if target is SAME:
            return False
        if target is ILLEGAL:
            self.log.error(
                "illegal transition: {process} is {status} and got {input} ({reason})",
                process=self.name, status=self.status, input=input.value, reason=reason,
                illegal_transition=(self.status, input.value))
            return False
        before, self.status = self.status, target.value
        self._emit(EVENT_TYPES[input], from_=before, to=self.status, reason=reason, **fields)
        return True

    def _emit(self, eventType: str, **fields) -> None:
        fields.setdefault("pid", self.pid)
        fields.setdefault("attempt", self.attempts)
        fields.setdefault("from_", self.status)
        fields.setdefault("to", self.status)
        self._events.emit(eventType, self.name, restart_count=self.restartCount, **fields)

    # -- reload in place --------------------------------------------------------------

    def reconfigure(self, config: ProcessConfig, policy, *, probe=None,
                    output: OutputCapture | None = None) -> Deferred:
        """
        Apply a reload's new supervision policy in place: the child (if
        any) keeps running with the same pid; counters, exit history and
        health statistics are kept.

        Only policy fields may differ from the current configuration (see
        L{orchestrator.supervision.reconfig}); the caller built everything
        that can fail beforehand, so this cannot fail half-way.

        @param policy: the restart policy object for C{config.restart}.
        @param probe: a probe built for C{config.health} to replace the
            running monitor's one, or C{None}.
        @param output: a new L{OutputCapture} for C{config.output}, or
            C{None} when the output settings did not change.
        @return: a Deferred firing once replaced resources (a probe's
            connection pool) are released.
        """
        old, self.config = self.config, config
        self.budget.reconfigure(config.restart, policy)
        if output is not None:
            self._swapOutput(output)
        self._policyChanged(old)
        if config.health == old.health:
            return succeed(None)
        return self._reconfigureHealth(probe)

    def _policyChanged(self, old: ProcessConfig) -> None:
        """
        Hook for what a new policy changes on the running child.
        """

    def _swapOutput(self, output: OutputCapture) -> None:
        previous, self._output = self._output, output
        previous.handOver(output)
        # Counted outcomes of the output's limits stay monotonic too.
        output.counters = self.counters
        previous.close()

    def _reconfigureHealth(self, probe) -> Deferred:
        health = self.config.health
        if self._monitor is not None and health.probe != "none":
            return self._monitor.reconfigure(health, probe)
        if self._monitor is not None:
            monitor, self._monitor = self._monitor, None
            self._probeRemoved()
            return monitor.close()
        try:
            self._monitor = self._monitorFactory(self)
        except Exception:
            self.log.failure("{process}: the {probe} probe failed to start; running without it",
                             process=self.name, probe=health.probe)
        if self._monitor is not None:
            self._probeAdded()
        return succeed(None)

    def _probeRemoved(self) -> None:
        """
        Hook: a reload took the probe away.
        """

    def _probeAdded(self) -> None:
        """
        Hook: a reload gave the process a probe.
        """

    # -- the end ------------------------------------------------------------------------

    def retire(self, why: str) -> None:
        """
        This process object is going away (shutdown, or a reload removes or
        replaces it): refuse new starts, no automatic restarts.
        """
        self._retired = why
        self.timers.cancel("restart")

    def _close(self, result=None):
        """
        Close the output file and let the probe release what it holds.
        """
        self._output.close()
        if self._monitor is None:
            return succeed(result)
        return self._monitor.close().addBoth(lambda _: result)
