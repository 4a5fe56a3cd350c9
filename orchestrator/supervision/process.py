"""
One supervised process: its state machine, its child, its restarts.

L{ManagedProcess} owns everything about one configured process: spawning a
child (in its own session, through an injected spawner), noticing its exit
through C{processExited}, deciding with the restart policy what happens
next, stopping it (stop signal to the group, SIGKILL after the timeout) and
serialising the commands the API sends.  Time comes from the injected
reactor, so every transition is exact under L{twisted.internet.task.Clock}.

Statuses: C{stopped}, C{starting}, C{running}, C{unhealthy}, C{crashed},
C{stopping}; plus C{unknown} for a monitor-only process before its first
probe.
"""

from __future__ import annotations

import os
import signal as _signal
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from twisted.internet.defer import CancelledError, Deferred, DeferredLock, fail, succeed
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger

from orchestrator.config.types import ProcessConfig
from orchestrator.errors import SpawnError, StartFailed, StateError
from orchestrator.supervision.counters import ProcessCounters
from orchestrator.supervision.output import OutputCapture
from orchestrator.supervision.policy import ExitRecord, RestartHistory
from orchestrator.supervision.spawn import killGroup as _killGroup
from orchestrator.supervision.spawn import signalNumber

__all__ = [
    "STATUSES",
    "ManagedProcess",
    "ProcessSnapshot",
    "childEnvironment",
]

STATUSES = ("stopped", "starting", "running", "unhealthy", "crashed", "stopping")
_ALIVE = frozenset({"starting", "running", "unhealthy", "stopping"})
#: A failed start's error and a give-up event carry at most this many of
#: the child's last output lines, each cut at this many characters.
FAILURE_OUTPUT_LINES = 20
FAILURE_OUTPUT_CHARS = 500


@dataclass(frozen=True)
class ProcessSnapshot:
    """
    A process's state at one moment, for the API and metrics.
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


def childEnvironment(
    config: ProcessConfig, environ: Mapping[str, str], dotenv: Mapping[str, str], blocked
) -> dict[str, str]:
    """
    Build a child's environment deliberately (Twisted's default is empty).

    The orchestrator's own environment is passed when C{inherit_env} is set,
    less the variables that must never reach a child (the admin token,
    webhook secrets, systemd's socket-activation and notify variables);
    C{.env} values only by name through C{env_from_dotenv}; then the
    process's own C{env}.
    """
    env: dict[str, str] = {}
    if config.inherit_env:
        env.update((k, v) for k, v in environ.items() if k not in blocked)
    else:
        env["PATH"] = environ.get("PATH", os.defpath)
    for name in config.env_from_dotenv:
        if name in dotenv and name not in blocked:
            env[name] = dotenv[name]
    env.update(config.env)
    return env


class _ChildProtocol(ProcessProtocol):
    """
    Forwards one child's output and exit to its L{ManagedProcess}.
    """

    def __init__(self, owner: "ManagedProcess", run: int) -> None:
        self._owner = owner
        self._run = run
        # This child's own line buffers (set once it is spawned): its last
        # output may still be read after a new child was started.
        self.output = None
        self.pid: int | None = None
        # Twisted reaps a child that is already gone from inside
        # spawnProcess and reports its exit before the transport is even
        # returned; the owner takes such an exit once it has adopted us.
        self.adopted = False
        self.earlyExit = None

    def connectionMade(self) -> None:
        # The transport forgets the pid once the child is reaped.
        self.pid = self.transport.pid

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        (self.output or self._owner._output).received(childFD, data)

    def processExited(self, reason) -> None:
        # Not processEnded: that waits until every holder of the pipes
        # (a grandchild too) has closed them.
        if not self.adopted:
            self.earlyExit = reason.value
            return
        self._owner._childExited(self._run, reason.value)

    def processEnded(self, reason) -> None:
        (self.output or self._owner._output).ended()


class ManagedProcess:
    """
    The supervision state machine of one process.

    @param config: the process's configuration.
    @param reactor: provides C{seconds} and C{callLater} (and nothing else is
        used: spawning goes through C{spawner}).
    @param spawner: C{spawner(protocol, executable, args, env, path)} returning
        an L{IProcessTransport}; the real one puts the child in its own session.
    @param policy: the restart policy object (C{next_delay(history)}).
    @param events: the L{orchestrator.notify.events.EventBus}.
    @param environment: the child's complete environment, or a
        zero-argument callable computing it, called for every spawn (so a
        reload that declares a new secret reaches no later child).
    @param managed: C{False} in monitor-only mode: nothing is spawned.
    @param random: a zero-argument callable returning a float in [0, 1),
        drawn for each policy decision (jitter).
    @param monitorFactory: C{monitorFactory(process)} returns a health
        monitor for a new run, or C{None} when the process is not probed.
    @param recorder: called with C{(name, pid)} when a child starts and
        C{(name, None)} when it is gone (the orphan state file).
    @param killGroup: C{killGroup(pgid, signal)}, to end what is left of a
        child's process group once the child itself has exited.
    @param counters: the L{ProcessCounters} of this process name (shared
        with the process objects a reload replaces, so counters never drop).
    """

    log = Logger()

    def __init__(
        self,
        config: ProcessConfig,
        *,
        reactor,
        spawner: Callable,
        policy,
        events,
        environment: Mapping[str, str] | Callable[[], Mapping[str, str]],
        managed: bool = True,
        random: Callable[[], float] = lambda: 0.5,
        monitorFactory: Callable[["ManagedProcess"], Any] | None = None,
        recorder: Callable[[str, int | None], None] = lambda name, pid: None,
        killGroup: Callable[[int, int], bool] = _killGroup,
        counters: ProcessCounters | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self._reactor = reactor
        self._spawner = spawner
        self._policy = policy
        self._events = events
        self._environment = environment if callable(environment) else (lambda: dict(environment))
        self.managed = managed
        self._random = random
        self._monitorFactory = monitorFactory or (lambda process: None)
        self._recorder = recorder
        self._killGroup = killGroup
        self._lock = DeferredLock()
        self._output = OutputCapture(self.name, config.output, reactor)

        self.status = "stopped" if managed else "unknown"
        self.pid: int | None = None
        self.startedAt: float | None = None
        self.readyAt: float | None = None
        self.counters = counters if counters is not None else ProcessCounters()
        self.attempts = 0
        self.gaveUp = False
        self.exits: deque[ExitRecord] = deque(maxlen=20)
        self._windowExits: list[ExitRecord] = []
        self._transport = None
        self._protocol = None
        self._run = 0
        self._wanted = False
        self._wasReady = False
        self._monitor = None
        self._readyCall = None
        self._resetCall = None
        self._restartCall = None
        self._restartAt: float | None = None
        self._killCall = None
        self._pendingCause: str | None = None
        self._readyWaiters: list[Deferred] = []
        self._pause: Deferred | None = None
        self._interruptedBy: str | None = None
        self._retired: str | None = None
        self._stopWaiters: list[Deferred] = []

    # -- what the API and metrics read -------------------------------------

    @property
    def health(self):
        """
        The current run's health monitor, or C{None}.
        """
        return self._monitor

    @property
    def output(self) -> OutputCapture:
        return self._output

    @property
    def restartCount(self) -> int:
        return self.counters.restarts

    @property
    def restartsByReason(self) -> dict[str, int]:
        return self.counters.restartsByReason

    @property
    def exitCounts(self) -> dict[bool, int]:
        return self.counters.exitCounts

    def uptime(self) -> float:
        if self.startedAt is None or self.status not in _ALIVE:
            return 0.0
        return max(0.0, self._reactor.seconds() - self.startedAt)

    def snapshot(self) -> ProcessSnapshot:
        now = self._reactor.seconds()
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
            next_restart_in=max(0.0, self._restartAt - now) if self._restartAt is not None else None,
            last_exit=self.exits[-1] if self.exits else None,
            exits=tuple(self.exits),
            managed=self.managed,
            health=self._monitor.snapshot() if self._monitor is not None else None,
        )

    @property
    def isAlive(self) -> bool:
        return self._transport is not None

    # -- commands (serialised) ------------------------------------------------

    def start(self, wait: bool = True) -> Deferred:
        """
        Start the process unless it is already up.

        @param wait: fire only once it is ready (or failed to become ready);
            otherwise fire as soon as it is spawned.
        @return: a Deferred firing with the L{ProcessSnapshot}, or failing with
            L{StartFailed}, L{SpawnError} or L{StateError}.
        """
        if not self.managed:
            return fail(StateError(self._elsewhere("start")))
        if self._retired:
            return fail(StateError(f"cannot start {self.name}: {self._retired}"))
        return self._lock.run(self._doStart, wait)

    def stop(self) -> Deferred:
        """
        Stop the process: the stop signal to its group, SIGKILL after
        C{stop.timeout}.  Fires once the child is reaped.
        """
        if not self.managed:
            return fail(StateError(self._elsewhere("stop")))
        self._preempt("stop requested")
        return self._lock.run(self._doStop)

    def restart(self, wait: bool = True) -> Deferred:
        """
        Stop, wait C{restart.delay}, start; clears C{gave_up}.
        """
        if not self.managed:
            return fail(StateError(self._elsewhere("restart")))
        if self._retired:
            return fail(StateError(f"cannot restart {self.name}: {self._retired}"))
        return self._lock.run(self._doRestart, wait)

    def _preempt(self, why: str) -> None:
        """
        A stop must not wait behind a start or restart that is waiting for
        readiness (up to C{start_timeout}, or for ever) or pausing between
        its stop and start: interrupt them, so the queued stop runs now.
        Their callers are told why (409).
        """
        self._interruptedBy = why
        interrupted = StateError(f"{self.name}: interrupted before it was ready ({why})")
        waiters, self._readyWaiters = self._readyWaiters, []
        for d in waiters:
            d.errback(interrupted)
        if self._pause is not None:
            pause, self._pause = self._pause, None
            pause.cancel()

    def _elsewhere(self, verb: str) -> str:
        return (
            f"cannot {verb} {self.name}: the orchestrator is in monitor-only mode "
            "(orchestrator.enabled: false); the process is managed elsewhere"
        )

    def _doStart(self, wait: bool) -> Deferred:
        self._interruptedBy = None
        self._cancelRestart()
        if self.status in ("starting", "running", "unhealthy"):
            return self._waitReady(wait)
        self._clearGaveUp()
        self._wanted = True
        try:
            self._spawn()
        except SpawnError as e:
            return fail(e)
        return self._waitReady(wait)

    def _doStop(self) -> Deferred:
        self._interruptedBy = None
        self._wanted = False
        self._cancelRestart()
        if self._transport is None:
            if self.status != "stopped":
                self._setStatus("stopped", "stopped", reason="stop requested")
            return succeed(self.snapshot())
        return self._terminate("stop requested").addCallback(lambda _: self.snapshot())

    def _doRestart(self, wait: bool) -> Deferred:
        self._interruptedBy = None
        self._cancelRestart()
        self._clearGaveUp()
        d = self._terminate("restart requested") if self._transport is not None else succeed(None)

        def pause(_):
            if self.status != "stopped":
                self._setStatus("stopped", "stopped", reason="restart requested")
            if self._interruptedBy:
                raise StateError(f"restart of {self.name} interrupted: {self._interruptedBy}")
            from twisted.internet.task import deferLater

            self._pause = deferLater(self._reactor, self.config.restart.delay, lambda: None)

            def interrupted(failure):
                failure.trap(CancelledError)
                raise StateError(f"restart of {self.name} interrupted: stop requested")

            return self._pause.addErrback(interrupted)

        def spawn(_):
            self._pause = None
            if self._retired:
                raise StateError(f"cannot restart {self.name}: {self._retired}")
            self._wanted = True
            self._countRestart("manual")
            self._spawn()
            return self._waitReady(wait)

        def done(snapshot):
            self._emit("restarted", reason="restart requested")
            return snapshot

        return d.addCallback(pause).addCallback(spawn).addCallback(done)

    def _waitReady(self, wait: bool) -> Deferred:
        if not wait or self.status == "running" or self.status == "unhealthy":
            return succeed(self.snapshot())
        if self.status != "starting":  # the child exited as it was spawned
            return fail(StartFailed(self.name, self._crashReason(self.exits[-1])))
        d = Deferred()
        self._readyWaiters.append(d)
        return d

    def _clearGaveUp(self) -> None:
        self.gaveUp = False
        self.attempts = 0
        self._windowExits = []

    # -- spawning -----------------------------------------------------------------

    def _spawn(self) -> None:
        executable = self.config.command[0]
        problem = None
        if not os.path.exists(executable):
            problem = f"No such file or directory: {executable}"
        elif not os.access(executable, os.X_OK) or os.path.isdir(executable):
            problem = f"Permission denied (not executable): {executable}"
        elif self.config.working_dir and not os.path.isdir(self.config.working_dir):
            problem = f"No such working directory: {self.config.working_dir}"
        if problem is None:
            self._run += 1
            self.log.info(
                "Starting {process} process: {command}",
                process=self.name, command=" ".join(self.config.command),
            )
            protocol = _ChildProtocol(self, self._run)
            try:
                transport = self._spawner(
                    protocol, executable, list(self.config.command),
                    dict(self._environment()), self.config.working_dir,
                )
            except OSError as e:
                problem = f"{e.strerror or e}: {executable}"
            except Exception as e:  # e.g. ValueError: embedded null byte
                problem = f"{type(e).__name__}: {e}: {executable}"
        if problem is not None:
            self._spawnFailed(problem)
            raise SpawnError(problem)
        self._transport = transport
        self._protocol = protocol
        self.pid = protocol.pid if protocol.pid is not None else transport.pid
        self.startedAt = self._reactor.seconds()
        self.readyAt = None
        self._wasReady = False
        self._pendingCause = None
        protocol.output = self._output.newRun(self.pid, transport)
        self._recorder(self.name, self.pid)
        self.log.info("{process} started (PID: {pid})", process=self.name, pid=self.pid)
        protocol.adopted = True
        try:
            self._setStatus("starting", "starting", reason="spawned")
            if self._monitor is None:
                try:
                    self._monitor = self._monitorFactory(self)
                except Exception:
                    # A probe plugin that cannot be built must not lose the
                    # child: it runs unprobed (ready after start.ready_after).
                    self.log.failure("{process}: the {probe} probe failed to start; running without it",
                                     process=self.name, probe=self.config.health.probe)
            if self._monitor is not None:
                self._monitor.start()
            else:
                self._readyCall = self._reactor.callLater(self.config.ready_after, self._becameReady)
        finally:
            if protocol.earlyExit is not None:
                self._childExited(self._run, protocol.earlyExit)

    def _spawnFailed(self, problem: str) -> None:
        """
        The child could not be spawned at all.  This goes through the
        restart policy like an exit (same budget, same backoff): a
        C{working_dir} that appears a moment later, or a transient EAGAIN,
        recovers by itself.
        """
        self.log.error("Failed to start {process}: {problem}", process=self.name, problem=problem)
        now = self._reactor.seconds()
        record = ExitRecord(pid=None, exit_code=None, signal=None, at=now, uptime=0.0,
                            cause="spawn_failed")
        self.exits.append(record)
        self._wasReady = False
        self._setStatus("crashed", "spawn_failed", reason=problem)
        if self._wanted and not self._retired:
            self._windowExits.append(record)
            self._scheduleRestart(record)

    # -- readiness and health (called by the health monitor) ----------------------

    def _becameReady(self) -> None:
        self._readyCall = None
        if self.status != "starting":
            return
        self._wasReady = True
        self.readyAt = self._reactor.seconds()
        self._setStatus("running", "running", reason="ready")
        self._scheduleReset()
        self._fireReady(None)

    def _resetAttempts(self) -> None:
        self._resetCall = None
        if self.status == "running":
            self.log.info(
                "{process} ran healthy for {seconds}s: restart attempts reset",
                process=self.name, seconds=self.config.restart.reset_after,
            )
            self.attempts = 0
            self._windowExits = []

    def healthReady(self) -> None:
        """
        The probe reports the process ready (C{success_threshold} successes).
        """
        if self.status == "starting":
            self._becameReady()
        elif self.status == "unhealthy" and self._pendingCause is None:
            # (Not once a restart for unhealthiness has begun.)
            self._setStatus("running", "running", reason="health recovered")
            self._scheduleReset()

    def _scheduleReset(self) -> None:
        if self._resetCall is None and self.attempts:
            self._resetCall = self._reactor.callLater(
                self.config.restart.reset_after, self._resetAttempts
            )

    def healthFailed(self, reason: str) -> None:
        """
        The probe reports C{failure_threshold} consecutive failures.
        """
        if self.status != "running":
            return
        self._cancel("_resetCall")
        self._setStatus("unhealthy", "unhealthy", reason=reason)
        if self.config.health.restart_on_unhealthy and self.config.restart.auto:
            self._kill("unhealthy", f"unhealthy: {reason}")

    def startTimedOut(self, reason: str) -> None:
        """
        The process did not become ready within C{health.start_timeout}.
        """
        if self.status == "starting":
            self._kill("start_timeout", reason)

    def _kill(self, cause: str, reason: str) -> None:
        """
        End the current child because it is unhealthy or never became
        ready; its exit is then handled like a crash with this cause.
        """
        self._pendingCause = cause
        self._signal(self.config.stop.signal)
        self._cancel("_killCall")  # a second call must not leave one to SIGKILL the next child
        self._killCall = self._reactor.callLater(
            self.config.stop.timeout, self._escalate
        )
        self.log.warn("{process}: {reason}; stopping it for a restart",
                      process=self.name, reason=reason)

    # -- stopping ---------------------------------------------------------------------

    def _terminate(self, reason: str) -> Deferred:
        d = Deferred()
        self._stopWaiters.append(d)
        if self.status != "stopping":
            self._stopMonitor()
            self._cancel("_readyCall")
            self._cancel("_resetCall")
            self._setStatus("stopping", "stopping", reason=reason)
            self._signal(self.config.stop.signal)
            self._cancel("_killCall")
            self._killCall = self._reactor.callLater(self.config.stop.timeout, self._escalate)
        return d

    def _signal(self, signal: str | int) -> None:
        if self._transport is None:
            return
        try:
            self._transport.signalProcess(signalNumber(signal))
        except ProcessExitedAlready:
            pass

    def kill(self) -> None:
        """
        SIGKILL the child's whole process group now (a shutdown that ran
        out of time); its exit is handled as usual.
        """
        self._signal(_signal.SIGKILL)

    def _escalate(self) -> None:
        self._killCall = None
        if self._transport is None:
            return
        self.log.warn(
            "{process} (PID: {pid}) did not exit within {timeout}s of SIG{signal}: sending SIGKILL",
            process=self.name, pid=self.pid, timeout=self.config.stop.timeout,
            signal=self.config.stop.signal,
        )
        self._signal(_signal.SIGKILL)

    # -- exits ---------------------------------------------------------------------------

    def _childExited(self, run: int, reason) -> None:
        if run != self._run or self._transport is None:
            return
        pid = self.pid
        code = getattr(reason, "exitCode", None)
        sig = getattr(reason, "signal", None)
        now = self._reactor.seconds()
        uptime = now - self.startedAt if self.startedAt is not None else 0.0
        self._transport = None
        self._protocol = None
        self.pid = None
        self._cancel("_killCall")
        self._cancel("_readyCall")
        self._cancel("_resetCall")
        self._stopMonitor()
        # The child led its process group: end whatever it left behind
        # (a grandchild holding the port must not outlive it).
        if pid is not None:
            self._killGroup(pid, _signal.SIGKILL)
        self._recorder(self.name, None)
        clean = sig is None and code in self.config.restart.success_exit_codes
        stopping = self.status == "stopping"
        cause = "stop" if stopping else (self._pendingCause or "exit")
        record = ExitRecord(pid=pid, exit_code=code, signal=sig, at=now, uptime=uptime,
                            cause=cause, clean=clean)
        self.exits.append(record)
        self.counters.countExit(clean)
        if stopping:
            self.log.info("{process} stopped (PID: {pid}, {how})",
                          process=self.name, pid=pid, how=record.describe())
            self._setStatus("stopped", "stopped", reason=record.describe(),
                            pid=pid, exit_code=code, signal=sig)
            waiters, self._stopWaiters = self._stopWaiters, []
            for d in waiters:
                d.callback(record)
            return
        if cause == "exit" and clean and not getattr(self._policy, "restart_on_success", True):
            self.log.info("{process} exited cleanly ({how}); not restarting (policy {policy})",
                          process=self.name, how=record.describe(),
                          policy=self.config.restart.policy)
            self._wanted = False
            self._setStatus("stopped", "exited", reason=record.describe(),
                            pid=pid, exit_code=code, signal=sig)
        else:
            self._setStatus("crashed", "crashed", reason=self._crashReason(record),
                            pid=pid, exit_code=code, signal=sig)
            self._windowExits.append(record)
            self._scheduleRestart(record)
        # Last: failing a waiting start releases the command lock, and a
        # queued command (a stop) must see the crash already handled.
        self._fireReady(StartFailed(self.name, self._crashReason(record), self._lastOutput(pid)))

    def _lastOutput(self, pid: int | None) -> tuple[str, ...]:
        """
        The last output lines of the child C{pid}: at most
        L{FAILURE_OUTPUT_LINES}, each cut at L{FAILURE_OUTPUT_CHARS}.
        """
        if pid is None:
            return ()
        return tuple(line.text[:FAILURE_OUTPUT_CHARS]
                     for line in self._output.tail(FAILURE_OUTPUT_LINES) if line.pid == pid)

    def _crashReason(self, record: ExitRecord) -> str:
        if record.cause == "unhealthy":
            return "restarted because unhealthy"
        if record.cause == "start_timeout":
            return f"not ready within {self.config.health.start_timeout}s"
        return record.describe()

    def _scheduleRestart(self, record: ExitRecord) -> None:
        restart = self.config.restart
        if not restart.auto:
            self.log.error("{process} crashed! Auto-restart is disabled ({how})",
                           process=self.name, how=record.describe())
            return
        attempt = self.attempts + 1
        if attempt > restart.max_attempts:
            self._giveUp(f"Maximum restart attempts ({restart.max_attempts}) exceeded")
            return
        history = RestartHistory(
            attempt=attempt,
            exits=tuple(self._windowExits) or (record,),
            was_ready=self._wasReady,
            sample=self._random(),
        )
        try:
            delay = self._policy.next_delay(history)
        except Exception:
            self.log.failure("restart policy {policy} failed", policy=restart.policy)
            delay = None
        if delay is None:
            self._giveUp(f"restart policy {restart.policy!r} gave up")
            return
        delay = max(0.0, float(delay))
        self.attempts = attempt
        self.log.error(
            "{process} crashed! Auto-restart attempt {attempt}/{max}{when}",
            process=self.name, attempt=attempt, max=restart.max_attempts,
            when=f" in {delay:.3g}s" if delay else "",
            how=record.describe(),
        )
        self._restartAt = self._reactor.seconds() + delay
        self._emit("restart_scheduled", reason=f"in {delay:.3g}s", attempt=attempt)
        self._restartCall = self._reactor.callLater(delay, self._autoRestart)

    def _giveUp(self, why: str) -> None:
        self.gaveUp = True
        self.log.error("{process} crashed! {why}", process=self.name, why=why)
        self._emit("gave_up", reason=why, attempt=self.attempts,
                   output=self._lastOutput(self.exits[-1].pid if self.exits else None))

    def _autoRestart(self) -> None:
        self._restartCall = None
        self._restartAt = None
        if self._lock.locked or self._transport is not None or not self._wanted or self._retired:
            return  # a command in progress (or a shutdown) decides what happens next
        last = self.exits[-1] if self.exits else None
        self._countRestart("crash" if last is None or last.cause == "exit" else last.cause)
        try:
            self._spawn()
        except SpawnError:
            pass  # already handed to the restart policy by _spawnFailed

    def _countRestart(self, reason: str) -> None:
        self.counters.countRestart(reason)

    def _cancelRestart(self) -> None:
        self._cancel("_restartCall")
        self._restartAt = None

    # -- helpers ---------------------------------------------------------------------------

    def _cancel(self, attr: str) -> None:
        call = getattr(self, attr)
        if call is not None:
            if call.active():
                call.cancel()
            setattr(self, attr, None)

    def _stopMonitor(self) -> None:
        if self._monitor is not None:
            self._monitor.stop()

    def _fireReady(self, error: Exception | None) -> None:
        waiters, self._readyWaiters = self._readyWaiters, []
        for d in waiters:
            if error is None:
                d.callback(self.snapshot())
            else:
                d.errback(error)

    def _setStatus(self, status: str, eventType: str, reason: str = "", **fields) -> None:
        before = self.status
        self.status = status
        self._emit(eventType, from_=before, to=status, reason=reason, **fields)

    def _emit(self, eventType: str, **fields) -> None:
        fields.setdefault("pid", self.pid)
        fields.setdefault("attempt", self.attempts)
        fields.setdefault("from_", self.status)
        fields.setdefault("to", self.status)
        self._events.emit(eventType, self.name, restart_count=self.restartCount, **fields)

    # -- reload in place --------------------------------------------------------------------

    def reconfigure(self, config: ProcessConfig, policy, *, probe=None,
                    output: OutputCapture | None = None) -> Deferred:
        """
        Apply a reload's new supervision policy to this process in place:
        the child (if any) keeps running with the same pid, and the
        counters, exit history and health statistics are kept.

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
        self._policy = policy
        if output is not None:
            self._swapOutput(output)
        if not config.restart.auto and self._restartCall is not None:
            self.log.info("{process}: automatic restarts turned off by a reload; "
                          "the pending restart is cancelled", process=self.name)
            self._cancelRestart()
        if config.restart.reset_after != old.restart.reset_after and self._resetCall is not None:
            self._cancel("_resetCall")
            self._scheduleReset()
        if (self.gaveUp and config.restart != old.restart and self._wanted
                and self._transport is None and not self._retired):
            # The operator changed the budget of a process that had given
            # up: that is what a new chance looks like.
            self.log.info("{process}: restart settings changed by a reload; starting it "
                          "again with a new budget", process=self.name)
            self.start(wait=False).addErrback(lambda f: self.log.error(
                "could not start {process}: {why}", process=self.name, why=f.getErrorMessage()))
        if config.health == old.health:
            return succeed(None)
        return self._reconfigureHealth(probe)

    def _swapOutput(self, output: OutputCapture) -> None:
        previous, self._output = self._output, output
        output.lines.extend(previous.lines)
        if self._protocol is not None and self._transport is not None:
            # What the child wrote so far (a partial line) stays with the
            # old capture; from now on its output goes to the new one.
            if self._protocol.output is not None:
                self._protocol.output.ended()
            self._protocol.output = output.newRun(self.pid)
        previous.close()

    def _reconfigureHealth(self, probe) -> Deferred:
        health = self.config.health
        if self._monitor is not None and health.probe != "none":
            return self._monitor.reconfigure(health, probe)
        if self._monitor is not None:  # the probe was removed
            monitor, self._monitor = self._monitor, None
            if self.status == "starting":
                elapsed = self._reactor.seconds() - (self.startedAt or 0.0)
                self._readyCall = self._reactor.callLater(
                    max(0.0, self.config.ready_after - elapsed), self._becameReady)
            elif self.status == "unhealthy" and self._pendingCause is None:
                self._setStatus("running", "running", reason="health probe removed")
                self._scheduleReset()
            return monitor.close()
        try:
            self._monitor = self._monitorFactory(self)
        except Exception:
            self.log.failure("{process}: the {probe} probe failed to start; running without it",
                             process=self.name, probe=health.probe)
        if self._monitor is None:
            return succeed(None)
        if not self.managed:
            self._monitor.start()
        elif self.status == "starting":
            self._cancel("_readyCall")
            self._monitor.start()
        elif self.status in ("running", "unhealthy"):
            self._monitor.resume()
        return succeed(None)

    # -- monitor-only and shutdown ----------------------------------------------------------

    def startMonitoring(self) -> None:
        """
        Monitor-only mode: probe the process that runs elsewhere.
        """
        if self._monitor is None:
            self._monitor = self._monitorFactory(self)
        if self._monitor is not None:
            self._monitor.start()

    def monitorStatus(self, status: str, reason: str) -> None:
        """
        Monitor-only mode: the probe decides the status.
        """
        if status != self.status:
            self._setStatus(status, status, reason=reason)

    @property
    def wanted(self) -> bool:
        """
        Whether the process is meant to run (started, and not stopped since).
        """
        return self._wanted

    def shutdown(self, why: str = "the orchestrator is shutting down") -> Deferred:
        """
        Stop for good (the orchestrator is stopping): cancel restarts and
        probes, stop the child, close the output file.
        """
        def close(result):
            self._output.close()
            if self._monitor is None:
                return result
            return self._monitor.close().addBoth(lambda _: result)

        self.retire(why)
        if not self.managed:
            return succeed(None).addBoth(close)
        return self._lock.run(self._doStop).addBoth(close)

    def retire(self, why: str) -> None:
        """
        This process object is going away (shutdown, or a reload removes or
        replaces it): refuse new starts, no automatic restarts, and
        interrupt a start waiting for readiness so a stop can run now.
        """
        self._retired = why
        self._cancelRestart()
        self._preempt(why)
