"""
The life cycle of one managed process's child.

L{ManagedProcess} spawns a child (in its own session, through an injected
spawner), notices its exit through C{processExited}, asks its
L{orchestrator.supervision.budget.RestartBudget} what happens next, and
stops it (stop signal to the group, SIGKILL after the timeout).  Its
statuses move only through the table in
L{orchestrator.supervision.status}; its pending calls live in one
L{orchestrator.supervision.timers.Timers}; operators' commands are
serialised by a L{orchestrator.supervision.commands.CommandQueue}.  Time
comes from the injected reactor, so every transition is exact under
L{twisted.internet.task.Clock}.
"""

from __future__ import annotations

import os
import signal as _signal
from typing import Any, Callable, Mapping

from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.protocol import ProcessProtocol

from orchestrator.config.types import ProcessConfig
from orchestrator.errors import SpawnError, StartFailed, StateError
from orchestrator.supervision.budget import Decision
from orchestrator.supervision.commands import CommandQueue
from orchestrator.supervision.counters import ProcessCounters
from orchestrator.supervision.memory import groupMemory
from orchestrator.supervision.output import OutputCapture
from orchestrator.supervision.policy import ExitRecord
from orchestrator.supervision.spawn import killGroup as _killGroup
from orchestrator.supervision.spawn import ChildSetup, signalNumber
from orchestrator.supervision.status import Input
from orchestrator.supervision.supervised import STATUSES, ProcessSnapshot, SupervisedProcess

__all__ = [
    "STATUSES",
    "ManagedProcess",
    "ProcessSnapshot",
    "childEnvironment",
]

# The names of a process's timers (see Timers).
_RESTART = "restart"    # an automatic restart after the policy's delay
_ESCALATE = "escalate"  # SIGKILL when the stop signal was not enough
_READY = "ready"        # running once the child survived ready_after (no probe)
_RESET = "reset"        # the restart window starts over after reset_after healthy
_PAUSE = "pause"        # an API restart's pause between its stop and its start
_MEMORY = "memory"      # the next max_memory check of the running child

_RESTART_COMMAND = "restart"  # the CommandQueue key that coalesces API restarts

#: A failed start's error and a give-up event carry at most this many of
#: the child's last output lines, each cut at this many characters.
FAILURE_OUTPUT_LINES = 20
FAILURE_OUTPUT_CHARS = 500


def childEnvironment(
    config: ProcessConfig, environ: Mapping[str, str], dotenv: Mapping[str, str], blocked
) -> dict[str, str]:
    """
    Build a child's environment deliberately (Twisted's default is empty).

    The orchestrator's own environment is passed when C{inherit_env} is set,
    less the variables that must never reach a child (the admin token,
    webhook secrets, systemd's socket-activation and notify variables);
    C{.env} values only by name through C{env_from_dotenv}; then the
    process's own C{env}.  A process run as another C{user} gets that
    user's C{HOME}, C{USER} and C{LOGNAME} unless its C{env} sets them.
    """
    env: dict[str, str] = {}
    if config.inherit_env:
        env.update((k, v) for k, v in environ.items() if k not in blocked)
    else:
        env["PATH"] = environ.get("PATH", os.defpath)
    for name in config.env_from_dotenv:
        if name in dotenv and name not in blocked:
            env[name] = dotenv[name]
    identity = config.identity
    if identity is not None and identity.name is not None:
        # What a login as that user would set; the process's env wins.
        env.update(HOME=identity.home or "/", USER=identity.name, LOGNAME=identity.name)
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
        (self.output or self._owner.output).received(childFD, data)

    def processExited(self, reason) -> None:
        # Not processEnded: that waits until every holder of the pipes
        # (a grandchild too) has closed them.
        if not self.adopted:
            self.earlyExit = reason.value
            return
        self._owner._childExited(self._run, reason.value)

    def processEnded(self, reason) -> None:
        (self.output or self._owner.output).ended()


class ManagedProcess(SupervisedProcess):
    """
    One process whose child the orchestrator spawns, watches and restarts.

    @param spawner: C{spawner(protocol, executable, args, env, path)} returning
        an L{IProcessTransport}; the real one puts the child in its own session.
    @param environment: the child's complete environment, or a
        zero-argument callable computing it, called for every spawn (so a
        reload that declares a new secret reaches no later child).
    @param recorder: called with C{(name, pid)} when a child starts and
        C{(name, None)} when it is gone (the orphan state file).
    @param killGroup: C{killGroup(pgid, signal)} -> whether any process
        was there: ends what is left of a child's process group once the
        child itself has exited (signal 0 only asks).
    @param memory: C{memory(pgid)} -> the resident bytes of a child's
        process group, or C{None} if it is gone (see
        L{orchestrator.supervision.memory.groupMemory}); read every
        C{memory_check_interval} when C{max_memory} is set, and for the
        C{memory_bytes} of a metrics scrape.

    The other parameters are L{SupervisedProcess}'s.
    """

    __slots__ = ("_memory", "_spawner", "_environment", "_recorder", "_killGroup", "_escaped",
                 "_commands", "_transport", "_protocol", "_run", "_wanted", "_wasReady",
                 "_pendingCause", "_stopWaiters", "_restartWaits", "_restartingNow")

    def __init__(
        self,
        config: ProcessConfig,
        *,
        reactor,
        spawner: Callable,
        policy,
        events,
        environment: Mapping[str, str] | Callable[[], Mapping[str, str]],
        random: Callable[[], float] = lambda: 0.5,
        monitorFactory: Callable[["ManagedProcess"], Any] | None = None,
        recorder: Callable[[str, int | None], None] = lambda name, pid: None,
        killGroup: Callable[[int, int], bool] = _killGroup,
        counters: ProcessCounters | None = None,
        escaped: Callable[[str], list[tuple[int, int]]] = lambda name: [],
        memory: Callable[[int], int | None] = groupMemory,
    ) -> None:
        super().__init__(config, reactor=reactor, policy=policy, events=events, random=random,
                         monitorFactory=monitorFactory, counters=counters)
        self._memory = memory
        self._spawner = spawner
        self._environment = environment if callable(environment) else (lambda: dict(environment))
        self._recorder = recorder
        self._killGroup = killGroup
        # What a child that exited left running outside its group (a
        # double-forking daemon re-parented to the subreaper orchestrator).
        self._escaped = escaped
        self._commands = CommandQueue(self.name)
        self._transport = None
        self._protocol: _ChildProtocol | None = None
        self._run = 0
        self._wanted = False
        self._wasReady = False
        self._pendingCause: str | None = None
        self._stopWaiters: list[Deferred] = []
        self._restartWaits = True
        self._restartingNow = False

    @property
    def isAlive(self) -> bool:
        return self._transport is not None

    @property
    def wanted(self) -> bool:
        return self._wanted

    # -- commands (serialised) ------------------------------------------------

    def start(self, wait: bool = True) -> Deferred:
        """
        Start the process unless it is already up.

        @param wait: fire only once it is ready (or failed to become ready);
            otherwise fire as soon as it is spawned.
        @return: a Deferred firing with the L{ProcessSnapshot}, or failing with
            L{StartFailed}, L{SpawnError} or L{StateError}.
        """
        try:
            self._refuseRetired("start")
        except StateError as e:
            return fail(e)
        self._commands.forget(_RESTART_COMMAND)
        return self._commands.run(self._doStart, wait)

    def stop(self) -> Deferred:
        """
        Stop the process: the stop signal to its group, SIGKILL after
        C{stop.timeout}.  Fires once the child is reaped.
        """
        self._preempt("stop requested")
        self._commands.forget(_RESTART_COMMAND)
        return self._commands.run(self._doStop)

    def restart(self, wait: bool = True) -> Deferred:
        """
        Stop, wait C{restart.delay}, start; clears C{gave_up}.

        A restart asked while another is queued or in progress joins it
        and fires with its outcome (once ready, if this caller C{wait}s).
        """
        try:
            self._refuseRetired("restart")
        except StateError as e:
            return fail(e)
        d, joined = self._commands.runShared(_RESTART_COMMAND, self._doRestart, wait)
        if not joined:
            self._restartWaits = wait
        elif wait and not self._restartWaits:
            d.addCallback(lambda _: self._waitReady(True))
        return d

    def sendSignal(self, signal: int, toGroup: bool = True) -> ProcessSnapshot:
        """
        Send C{signal} to the running child's process group (or, without
        C{toGroup}, to the child alone).  Nothing else changes: if the
        signal ends the child, its exit is handled as usual (a crash
        unless its code is a success, then the restart policy).

        @raise StateError: no child is running.
        """
        transport = self._transport
        if transport is None or self.status == "stopping":
            raise StateError(f"{self.name} is not running (status {self.status})")
        send = transport.signalProcess if toGroup else getattr(
            transport, "signalLeader", transport.signalProcess)
        try:
            send(signal)
        except ProcessExitedAlready:
            raise StateError(f"{self.name} is not running (it just exited)")
        self.log.info("{process}: signal {signal} sent to its {target} (PID: {pid})",
                      process=self.name, signal=_signal.Signals(signal).name,
                      target="process group" if toGroup else "process", pid=self.pid)
        return self.snapshot()

    def _preempt(self, why: str) -> None:
        """
        A stop must not wait behind a start or restart that is waiting for
        readiness (up to C{start_timeout}, or for ever) or pausing between
        its stop and start: interrupt them, so the queued stop runs now.
        Their callers are told why (409).
        """
        self._commands.interrupt(why)
        self.timers.cancel(_PAUSE)

    def _doStart(self, wait: bool) -> Deferred:
        self.timers.cancel(_RESTART)
        if self.status in ("starting", "running", "unhealthy"):
            return self._waitReady(wait)
        self.budget.clear()
        self._wanted = True
        try:
            self._spawn()
        except SpawnError as e:
            return fail(e)
        return self._waitReady(wait)

    def _doStop(self) -> Deferred:
        self._wanted = False
        self.timers.cancel(_RESTART)
        if self._transport is None:
            self._transition(Input.STOPPED, reason="stop requested")
            return succeed(self.snapshot())
        return self._terminate("stop requested").addCallback(lambda _: self.snapshot())

    def _doRestart(self, wait: bool) -> Deferred:
        self.timers.cancel(_RESTART)
        self.budget.clear()
        d = self._terminate("restart requested") if self._transport is not None else succeed(None)

        def pause(_):
            self._transition(Input.STOPPED, reason="restart requested")
            if self._commands.interruptedBy:
                raise StateError(f"restart of {self.name} interrupted: {self._commands.interruptedBy}")

            def interrupted(failure):
                failure.trap(CancelledError)
                raise StateError(f"restart of {self.name} interrupted: stop requested")

            return self.timers.sleep(_PAUSE, self.config.restart.delay).addErrback(interrupted)

        def spawn(_):
            self._refuseRetired("restart")
            self._wanted = True
            self.counters.countRestart("manual")
            self._spawn()
            return self._waitReady(wait)

        def done(snapshot):
            self._emit("restarted", reason="restart requested")
            return snapshot

        return d.addCallback(pause).addCallback(spawn).addCallback(done)

    def _waitReady(self, wait: bool) -> Deferred:
        if not wait or self.status in ("running", "unhealthy"):
            return succeed(self.snapshot())
        if self.status != "starting":  # the child exited as it was spawned
            return fail(StartFailed(self.name, self._crashReason(self.exits[-1])))
        return self._commands.waitReady()

    # -- spawning -----------------------------------------------------------------

    def _problem(self) -> str | None:
        executable = self.config.command[0]
        if not os.path.exists(executable):
            return f"No such file or directory: {executable}"
        if not os.access(executable, os.X_OK) or os.path.isdir(executable):
            return f"Permission denied (not executable): {executable}"
        if self.config.working_dir and not os.path.isdir(self.config.working_dir):
            return f"No such working directory: {self.config.working_dir}"
        return None

    def _spawn(self) -> None:
        executable = self.config.command[0]
        problem = self._problem()
        if problem is None:
            self._run += 1
            self.log.info(
                "Starting {process} process: {command}",
                process=self.name, command=" ".join(self.config.command),
            )
            protocol = _ChildProtocol(self, self._run)
            try:
                setup = ChildSetup.of(self.config)
                extra = {"setup": setup} if setup is not None else {}
                transport = self._spawner(
                    protocol, executable, list(self.config.command),
                    dict(self._environment()), self.config.working_dir, **extra,
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
            self._transition(Input.SPAWNED, reason="spawned")
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
                self.timers.start(_READY, self.config.ready_after, self._becameReady)
            self._scheduleMemoryCheck()
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
        record = ExitRecord(pid=None, exit_code=None, signal=None, at=self._reactor.seconds(),
                            uptime=0.0, cause="spawn_failed")
        self._recordExit(record)
        self._wasReady = False
        self._transition(Input.SPAWN_FAILED, reason=problem)
        if self._wanted and not self._retired:
            self._scheduleRestart(record)

    # -- readiness and health (called by the health monitor) ----------------------

    def _becameReady(self) -> None:
        if self._transition(Input.READY, reason="ready"):
            self._wasReady = True
            self.readyAt = self._reactor.seconds()
            self._scheduleReset()
            self._commands.ready(self.snapshot())

    def _resetAttempts(self) -> None:
        if self.status == "running":
            self.log.info(
                "{process} ran healthy for {seconds}s: restart attempts reset",
                process=self.name, seconds=self.config.restart.reset_after,
            )
            self.budget.reset()

    def healthReady(self) -> None:
        """
        The probe reports the process ready (C{success_threshold} successes).
        """
        if self.status == "starting":
            self._becameReady()
        elif self.status == "unhealthy" and self._pendingCause is None:
            # (Not once a restart for unhealthiness has begun.)
            if self._transition(Input.READY, reason="health recovered"):
                self._scheduleReset()

    def _scheduleReset(self) -> None:
        if not self.timers.active(_RESET) and self.attempts:
            self.timers.start(_RESET, self.config.restart.reset_after, self._resetAttempts)

    def healthFailed(self, reason: str) -> None:
        """
        The probe reports C{failure_threshold} consecutive failures.
        """
        if not self._transition(Input.HEALTH_FAILED, reason=reason):
            return
        self.timers.cancel(_RESET)
        if self.config.health.restart_on_unhealthy and self.config.restart.auto:
            self._kill("unhealthy", f"unhealthy: {reason}")

    def startTimedOut(self, reason: str) -> None:
        """
        The process did not become ready within C{health.start_timeout}.
        """
        if self.status == "starting":
            self._kill("start_timeout", reason)

    # -- memory ----------------------------------------------------------------------

    def memoryBytes(self) -> int | None:
        """
        The resident memory of the child's process group now, or C{None}
        when there is no child (or it could not be read).
        """
        if self.pid is None:
            return None
        try:
            return self._memory(self.pid)
        except Exception:
            self.log.failure("{process}: reading its memory failed", process=self.name)
            return None

    def _scheduleMemoryCheck(self) -> None:
        """
        Armed only for a process that sets C{max_memory}: an orchestrator
        whose processes set none never wakes up for it.
        """
        if self.config.max_memory is not None and self._transport is not None:
            self.timers.start(_MEMORY, self.config.memory_check_interval, self._checkMemory)
        else:
            self.timers.cancel(_MEMORY)

    def _checkMemory(self) -> None:
        limit = self.config.max_memory
        if limit is None or self._transport is None:
            return
        used = self.memoryBytes()
        if (used is not None and used > limit and self._pendingCause is None
                and self.status in ("starting", "running", "unhealthy")):
            self._kill("memory", f"memory {_size(used)} above max_memory {_size(limit)}")
            return
        self._scheduleMemoryCheck()

    def _kill(self, cause: str, reason: str) -> None:
        """
        End the current child because it is unhealthy or never became
        ready; its exit is then handled like a crash with this cause.
        """
        self._pendingCause = cause
        self._signal(self.config.stop.signal)
        # (Replacing any pending escalation: none may SIGKILL the next child.)
        self.timers.start(_ESCALATE, self.config.stop.timeout, self._escalate)
        self.log.warn("{process}: {reason}; stopping it for a restart",
                      process=self.name, reason=reason)

    # -- stopping ---------------------------------------------------------------------

    def _terminate(self, reason: str) -> Deferred:
        d = Deferred()
        self._stopWaiters.append(d)
        if self._transition(Input.STOP_REQUESTED, reason=reason):
            self._stopMonitor()
            self.timers.cancel(_READY)
            self.timers.cancel(_RESET)
            self._signal(self.config.stop.signal)
            self.timers.start(_ESCALATE, self.config.stop.timeout, self._escalate)
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
        for name in (_ESCALATE, _READY, _RESET, _MEMORY):
            self.timers.cancel(name)
        self._stopMonitor()
        escaped: list[tuple[int, int]] = []
        daemonized = False
        if self.status == "starting" and sig is None and code == 0 and pid is not None:
            escaped = self._escaped(self.name)
            daemonized = bool(escaped) or self._groupLivesOn(pid)
        # The child led its process group: end whatever it left behind
        # (a grandchild holding the port must not outlive it), and the
        # groups of a daemon that left it.
        if pid is not None:
            self._killGroup(pid, _signal.SIGKILL)
        for pgid in sorted({pgid for _, pgid in escaped}):
            self._killGroup(pgid, _signal.SIGKILL)
        self._recorder(self.name, None)
        clean = sig is None and code in self.config.restart.success_exit_codes
        stopping = self.status == "stopping"
        cause = "stop" if stopping else (self._pendingCause or "exit")
        record = ExitRecord(pid=pid, exit_code=code, signal=sig, at=now, uptime=uptime,
                            cause=cause, clean=clean)
        self._recordExit(record)
        self.counters.countExit(clean)
        fields = dict(pid=pid, exit_code=code, signal=sig)
        if stopping:
            self.log.info("{process} stopped (PID: {pid}, {how})",
                          process=self.name, pid=pid, how=record.describe())
            self._transition(Input.STOPPED, reason=record.describe(), **fields)
            waiters, self._stopWaiters = self._stopWaiters, []
            for d in waiters:
                d.callback(record)
            return
        if daemonized:
            left = (f"PIDs {sorted(p for p, _ in escaped)} it forked lived on in a session of "
                    "their own" if escaped else "its process group lived on")
            why = (f"{self.name} daemonized: its command exited 0 (PID {pid}) before it was "
                   f"ready while {left}. A supervised command must stay "
                   "in the foreground: run it without forking into the background "
                   "(e.g. its --foreground / --no-daemon / 'daemon off' option)")
            self.log.error("{why}", why=why)
            self._transition(Input.CRASHED, reason=why, **fields)
            self.budget.gaveUp = True
            self._emit("gave_up", reason=why, output=self._lastOutput(pid))
            self._commands.failed(StartFailed(self.name, why, self._lastOutput(pid)))
            return
        if cause == "exit" and clean and not self.budget.restartsOnSuccess:
            self.log.info("{process} exited cleanly ({how}); not restarting (policy {policy})",
                          process=self.name, how=record.describe(),
                          policy=self.config.restart.policy)
            self._wanted = False
            self._transition(Input.EXITED, reason=record.describe(), **fields)
        else:
            self._transition(Input.CRASHED, reason=self._crashReason(record), **fields)
            self._scheduleRestart(record)
        # Last: failing a waiting start releases the command queue, and a
        # queued command (a stop) must see the crash already handled.
        self._commands.failed(StartFailed(self.name, self._crashReason(record), self._lastOutput(pid)))
        self._restartIfDueNow()

    def _restartIfDueNow(self) -> None:
        """
        An automatic restart the policy wants at once (the first crash
        after a healthy run) is done now, in the turn that handled the
        exit: at the reactor's next turn it would wait for every other
        descriptor ready in this one (a batch of API requests).  Not while
        a command is in progress (it decides what happens next, and its
        queue must see the crash first: the timer stays, and
        L{_autoRestart} declines), and not for a child that exited while
        such a restart spawned it (no recursion: that one waits a turn).
        """
        if self._restartingNow or self._commands.busy:
            return
        self._restartingNow = True
        try:
            self.timers.fireDue(_RESTART)
        finally:
            self._restartingNow = False

    def _lastOutput(self, pid: int | None) -> tuple[str, ...]:
        """
        The last output lines of the child C{pid}: at most
        L{FAILURE_OUTPUT_LINES}, each cut at L{FAILURE_OUTPUT_CHARS}.
        """
        if pid is None:
            return ()
        return tuple(line.text[:FAILURE_OUTPUT_CHARS]
                     for line in self._output.tail(FAILURE_OUTPUT_LINES) if line.pid == pid)

    def _groupLivesOn(self, pgid: int) -> bool:
        try:
            return bool(self._killGroup(pgid, 0))
        except Exception:
            return False

    def _crashReason(self, record: ExitRecord) -> str:
        if record.cause == "unhealthy":
            return "restarted because unhealthy"
        if record.cause == "start_timeout":
            return f"not ready within {self.config.health.start_timeout}s"
        if record.cause == "memory":
            return f"restarted because its memory was above max_memory {_size(self.config.max_memory or 0)}"
        return record.describe()

    def _scheduleRestart(self, record: ExitRecord) -> None:
        restart = self.config.restart
        if not restart.auto:
            self.log.error("{process} crashed! Auto-restart is disabled ({how})",
                           process=self.name, how=record.describe())
            return
        decision: Decision = self.budget.decide(record, self._wasReady)
        if decision.delay is None:
            self.log.error("{process} crashed! {why}", process=self.name, why=decision.why)
            self._emit("gave_up", reason=decision.why, attempt=decision.attempt,
                       output=self._lastOutput(record.pid))
            return
        delay = decision.delay
        self.log.error(
            "{process} crashed! Auto-restart attempt {attempt}/{max}{when}",
            process=self.name, attempt=decision.attempt, max=restart.max_attempts,
            when=f" in {delay:.3g}s" if delay else "",
            how=record.describe(),
        )
        self.timers.start(_RESTART, delay, self._autoRestart)
        self._emit("restart_scheduled", reason=f"in {delay:.3g}s", attempt=decision.attempt)

    def _autoRestart(self) -> None:
        if self._commands.busy or self._transport is not None or not self._wanted or self._retired:
            return  # a command in progress (or a shutdown) decides what happens next
        last = self.exits[-1] if self.exits else None
        self.counters.countRestart("crash" if last is None or last.cause == "exit" else last.cause)
        try:
            self._spawn()
        except SpawnError:
            pass  # already handed to the restart policy by _spawnFailed

    # -- reload in place ------------------------------------------------------------------

    def _policyChanged(self, old: ProcessConfig) -> None:
        config = self.config
        if (config.max_memory, config.memory_check_interval) != (old.max_memory, old.memory_check_interval):
            self._scheduleMemoryCheck()
        if not config.restart.auto and self.timers.cancel(_RESTART):
            self.log.info("{process}: automatic restarts turned off by a reload; "
                          "the pending restart is cancelled", process=self.name)
        if config.restart.reset_after != old.restart.reset_after and self.timers.cancel(_RESET):
            self._scheduleReset()
        if (self.gaveUp and config.restart != old.restart and self._wanted
                and self._transport is None and not self._retired):
            # The operator changed the budget of a process that had given
            # up: that is what a new chance looks like.
            self.log.info("{process}: restart settings changed by a reload; starting it "
                          "again with a new budget", process=self.name)
            self.start(wait=False).addErrback(lambda f: self.log.error(
                "could not start {process}: {why}", process=self.name, why=f.getErrorMessage()))

    def _swapOutput(self, output: OutputCapture) -> None:
        protocol, current = self._protocol, self._output
        super()._swapOutput(output)
        if protocol is not None and self._transport is not None:
            # What the child wrote so far (a partial line) stays with the
            # old capture; from now on its output goes to the new one.
            if protocol.output is not None and protocol.output is not current:
                protocol.output.ended()
            protocol.output = output.newRun(self.pid, self._transport)

    def _probeRemoved(self) -> None:
        if self.status == "starting":
            elapsed = self._reactor.seconds() - (self.startedAt or 0.0)
            self.timers.start(_READY, self.config.ready_after - elapsed, self._becameReady)
        elif self.status == "unhealthy" and self._pendingCause is None:
            if self._transition(Input.READY, reason="health probe removed"):
                self._scheduleReset()

    def _probeAdded(self) -> None:
        if self.status == "starting":
            self.timers.cancel(_READY)
            self._monitor.start()
        elif self.status in ("running", "unhealthy"):
            self._monitor.resume()

    # -- shutdown ---------------------------------------------------------------------------

    def _stopMonitor(self) -> None:
        if self._monitor is not None:
            self._monitor.stop()

    def shutdown(self, why: str = "the orchestrator is shutting down") -> Deferred:
        """
        Stop for good (the orchestrator is stopping, or a reload removes or
        replaces this process): cancel restarts and probes, stop the child,
        close the output file.
        """
        self.retire(why)
        return self._commands.run(self._doStop).addBoth(self._close)

    def retire(self, why: str) -> None:
        """
        Refuse new starts, no automatic restarts, and interrupt a start
        waiting for readiness so a stop can run now.
        """
        super().retire(why)
        self._preempt(why)


def _size(value: int) -> str:
    """
    C{536870912} -> C{"512.0MiB"}: sizes in log lines and reasons.
    """
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return str(value)  # pragma: no cover
