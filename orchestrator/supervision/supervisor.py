"""
The supervisor service: every configured process, started in dependency
order, stopped in reverse, reconfigured by diffing.
"""

from __future__ import annotations

import os
import random as _random
from dataclasses import replace
from typing import Any, Callable, Mapping

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, DeferredLock, fail, maybeDeferred, succeed
from twisted.logger import Logger

from orchestrator._interning import Interner
from orchestrator.config.types import Config, freeze
from orchestrator.errors import ConfigError
from orchestrator.health.monitor import HealthMonitor, ProbeGate
from orchestrator.supervision.counters import ProcessCounters
from orchestrator.supervision.memory import groupMemory
from orchestrator.supervision.monitored import MonitoredProcess
from orchestrator.supervision.orphans import (OrphanReaper, StateFile, becomeSubreaper,
                                              escapedChildren, reapLeftovers)
from orchestrator.supervision.output import OutputCapture
from orchestrator.supervision.process import ManagedProcess, childEnvironment
from orchestrator.supervision.reconfig import (
    ADDED, REMOVED, REPLACED, UNCHANGED, UPDATED, ProcessChange, diffProcess,
)
from orchestrator.supervision.spawn import killGroup as _killGroup
from orchestrator.supervision.supervised import SupervisedProcess

__all__ = ["Supervisor", "dependencyRanks", "dependencyState", "defaultStateDir"]


def dependencyRanks(processes: Mapping[str, Any]) -> dict[str, int]:
    """
    Rank each process by the length of its dependency chain: a process
    starts after every lower rank and stops before them.  The configuration
    has already rejected cycles.
    """
    ranks: dict[str, int] = {}

    def rank(name: str) -> int:
        if name not in ranks:
            ranks[name] = 0
            deps = [d for d in processes[name].depends_on if d in processes]
            ranks[name] = 1 + max((rank(d) for d in deps), default=-1)
        return ranks[name]

    for name in processes:
        rank(name)
    return ranks


#: Events after which a waiting process's dependencies are looked at again.
_DEPENDENCY_EVENTS = frozenset({"starting", "running", "unhealthy", "crashed", "exited",
                                "gave_up", "stopped", "spawn_failed"})


def dependencyState(process, condition: str) -> tuple[bool, str | None]:
    """
    Whether C{process} meets a dependent's C{condition} (C{started},
    C{running}, C{healthy}, C{completed_successfully}), and if it never
    will by itself, why (C{"exited with code 1"}, C{"gave up"}).

    @return: C{(met, failure)}; C{failure} is C{None} while it may still
        be met.
    """
    status = process.status
    last = process.exits[-1] if process.exits else None
    completed = (status == "stopped" and last is not None and last.clean
                 and last.cause == "exit")
    settled = process.gaveUp or not process.wanted  # nothing will run it again by itself
    if condition == "completed_successfully":
        if completed:
            return True, None
        if status in ("stopped", "crashed") and last is not None and settled:
            return False, _failure(last)
        return False, None
    if condition == "started":
        return status in ("starting", "running", "unhealthy") or completed, None
    if status == "running":  # running, or healthy: a probed process runs once its probe passed
        return True, None
    if status in ("stopped", "crashed") and process.gaveUp and last is not None:
        return False, f"gave up ({_failure(last)})"
    return False, None


def _failure(record) -> str:
    if record.signal is not None:
        return f"killed by signal {record.signal}"
    if record.exit_code is not None:
        return f"exited with code {record.exit_code}"
    return record.describe()


def defaultStateDir(configPath: str | None, environ: Mapping[str, str] | None = None,
                    euid: int | None = None) -> str:
    """
    Where the state file of a configuration lives when
    C{orchestrator.state_dir} is not set: C{<base>/<file name>-<hash>},
    the hash taken of the configuration file's absolute path.

    It never depends on the working directory: an orchestrator killed and
    started again from another folder (or by systemd, or by hand) must find
    the leftovers of the previous run.  One folder per configuration file,
    so two orchestrators with different configurations never end each
    other's children.

    C{<base>} is C{$XDG_STATE_HOME/orchestrator} when that is set to an
    absolute path, else C{/var/lib/orchestrator} for root, else
    C{~/.local/state/orchestrator}.
    """
    import hashlib

    environ = os.environ if environ is None else environ
    euid = os.geteuid() if euid is None else euid
    path = os.path.abspath(configPath) if configPath else "<none>"
    key = hashlib.sha256(path.encode()).hexdigest()[:16]
    name = os.path.basename(path) if configPath else "no-config"
    xdg = environ.get("XDG_STATE_HOME", "")
    if os.path.isabs(xdg):
        base = os.path.join(xdg, "orchestrator")
    elif euid == 0:
        base = "/var/lib/orchestrator"
    else:
        base = os.path.join(os.path.expanduser("~"), ".local", "state", "orchestrator")
    return os.path.join(base, f"{name}-{key}")


class Supervisor(Service):
    """
    Owns the process object of every configured process (a L{ManagedProcess}, or a
    L{orchestrator.supervision.monitored.MonitoredProcess} in monitor-only mode).

    @param config: the validated L{Config}.
    @param kinds: the registered probe, policy and notifier kinds.
    @param reactor: time and scheduling (C{seconds}, C{callLater}).
    @param spawner: see L{orchestrator.supervision.spawn.sessionSpawner}.
    @param events: the L{orchestrator.notify.events.EventBus}.
    @param environ: the orchestrator's environment, filtered into children's.
    @param random: the random source for policy jitter.
    @param stateFile: where children are recorded (C{None}: not at all).
    @param probeFactory: C{probeFactory(healthConfig)} -> probe; default
        builds the configured kind with the reactor.
    @param reapOrphans: on start, make the orchestrator a child subreaper
        and reap the orphans re-parented to it (see
        L{orchestrator.supervision.orphans.OrphanReaper}); only for a real
        orchestrator process, never in tests of a fake reactor.
    @param memory: C{memory(pgid)} -> resident bytes of a process group
        (L{orchestrator.supervision.memory.groupMemory}; tests inject one).
    """

    name = "supervisor"
    log = Logger()

    def __init__(
        self,
        config: Config,
        kinds,
        reactor,
        spawner: Callable,
        events,
        environ: Mapping[str, str] | None = None,
        random: Callable[[], float] = _random.random,
        stateFile: StateFile | None = None,
        probeFactory: Callable | None = None,
        killGroup: Callable[[int, int], bool] = _killGroup,
        reapGrace: float = 5.0,
        reapOrphans: bool = False,
        memory: Callable[[int], int | None] = groupMemory,
    ) -> None:
        self._config = config
        self._memory = memory
        self._kinds = kinds
        self._reactor = reactor
        self._spawner = spawner
        self._events = events
        self._environ = dict(os.environ if environ is None else environ)
        self._random = random
        self._stateFile = stateFile
        self._probeFactory = probeFactory
        self._killGroup = killGroup
        self._reapGrace = reapGrace
        self.orphanReaper = OrphanReaper(reactor, owner=self._groupOwner) if reapOrphans else None
        self.probeObservers: list[Callable] = []
        self._batch: list[tuple[str, int | None]] | None = None
        #: Caps the probes in flight at once (orchestrator.max_concurrent_probes).
        self.probeGate = ProbeGate(config.max_concurrent_probes)
        self._flushCall = None
        self._reloadLock = DeferredLock()
        self.processes: dict[str, SupervisedProcess] = {}
        # Per process name, kept when a reload replaces or removes the
        # process object: counters never go back (a re-added name goes on).
        self._counters: dict[str, ProcessCounters] = {}
        self._pending: set[str] = set()
        self._unsubscribe = None
        self._started = None
        self._sharedEnvironment = Interner()
        for name, pconfig in config.processes.items():
            self.processes[name] = self._makeProcess(pconfig, config, kinds)

    @property
    def config(self) -> Config:
        return self._config

    def _environment(self, pconfig, config: Config) -> dict[str, str]:
        return childEnvironment(pconfig, self._environ, config.dotenv, set(config.secret_env))

    def _withProbeEnvironment(self, pconfig, config: Config):
        # An exec probe runs with its process's environment: never the
        # orchestrator's secrets.  (C{health.env} does not take part in
        # comparisons, so reload diffs are unaffected.)  Without a probe
        # nothing reads it: no copy of the configuration is made.
        if pconfig.health.probe == "none":
            return pconfig
        # Processes of one load with equal environments share one copy.
        environment = self._sharedEnvironment(freeze(self._environment(pconfig, config)))
        return replace(pconfig, health=replace(pconfig.health, env=environment))

    def counters(self, name: str) -> ProcessCounters:
        """
        The counters of process C{name}, shared by every process object a
        reload builds under that name.
        """
        counters = self._counters.get(name)
        if counters is None:
            counters = self._counters[name] = ProcessCounters()
        return counters

    def _makeProcess(self, pconfig, config: Config, kinds) -> SupervisedProcess:
        policy = kinds.policies[pconfig.restart.policy](pconfig.restart)
        managed = config.enabled
        pconfig = self._withProbeEnvironment(pconfig, config)

        def monitorFactory(process):
            health = process.config.health
            if health.probe == "none":
                return None
            return HealthMonitor(process, health, self._buildProbe(health, kinds), self._reactor,
                                 managed=managed, onResult=self._probeResult,
                                 random=self._random, gate=self.probeGate,
                                 limitHits=process.counters.probeLimitHits)

        common = dict(reactor=self._reactor, policy=policy, events=self._events,
                      random=self._random, monitorFactory=monitorFactory,
                      counters=self.counters(pconfig.name))
        if not managed:
            return MonitoredProcess(pconfig, **common)
        process = ManagedProcess(
            pconfig,
            spawner=self._spawner,
            # Computed for every spawn from the configuration current then.
            environment=lambda: self._environment(process.config, self._config),
            recorder=self._record,
            killGroup=self._killGroup,
            escaped=self._escapedFrom,
            memory=self._memory,
            **common,
        )
        return process

    def _buildProbe(self, health, kinds):
        if self._probeFactory is not None:
            return self._probeFactory(health)
        return kinds.probes[health.probe](health, self._reactor)

    def _probeResult(self, name, result) -> None:
        for observer in list(self.probeObservers):
            try:
                observer(name, result)
            except Exception:
                self.log.failure("probe observer failed")

    #: A child that is gone is forgotten in the state file this many
    #: seconds later, so a crash and its immediate restart cost one write,
    #: made after the new child exists.  A new child is recorded at once:
    #: the parent-death signal is set by C{setpriv} a few milliseconds after
    #: the spawn, and a child spawned just before an orchestrator SIGKILL
    #: must still be found (and ended) by the next start.
    stateFileDelay = 0.05

    def _record(self, name: str, pid: int | None) -> None:
        if self._stateFile is not None and self._batch is not None:
            # Recorded (and written) once the batch is spawned, see
            # _startReady: reading a child's start time from /proc waits
            # while that child is still exec'ing its wrapper, and a
            # child cannot be reaped before the batch ends.
            self._batch.append((name, pid))
            return
        if self._stateFile is None or not self._stateFile.update(name, pid):
            return
        if pid is not None:
            self._flushStateFile()
        elif self._flushCall is None or not self._flushCall.active():
            self._flushCall = self._reactor.callLater(self.stateFileDelay, self._flushStateFile)

    def _flushStateFile(self) -> None:
        if self._flushCall is not None and self._flushCall.active():
            self._flushCall.cancel()
        self._flushCall = None
        if self._stateFile is None:
            return
        try:
            self._stateFile.flush()
        except OSError as e:
            self.log.warn("cannot write state file {path}: {e}", path=self._stateFile.path, e=e)

    # -- life cycle -----------------------------------------------------------

    def startService(self):
        """
        End leftovers of a killed predecessor, then start the processes in
        dependency order (a process starts once all its dependencies are
        running).  Monitor-only: start probing.
        """
        super().startService()
        self._unsubscribe = self._events.subscribe(self._onEvent)
        if not self._config.enabled:
            for process in self.processes.values():
                process.startMonitoring()
            return
        if self.orphanReaper is not None:
            if not becomeSubreaper():
                self.log.warn("cannot become a child subreaper (not Linux?): grandchildren "
                              "orphaned by a dying child are reaped by init, not accounted for")
            self.orphanReaper.start()
        leftovers = self._stateFile.load() if self._stateFile is not None else []
        d = reapLeftovers(leftovers, self._reactor, grace=self._reapGrace) if leftovers else succeed([])
        if self._stateFile is not None:
            d.addCallback(lambda _: self._claimStateFile())
        d.addCallback(lambda _: self._autostart(
            n for n, p in self.processes.items() if p.config.autostart))
        self._started = d

    def _escapedFrom(self, name: str) -> list[tuple[int, int]]:
        """
        What the child of process C{name} that just exited left running
        outside its process group (see L{escapedChildren}): seen only while
        the orchestrator is a subreaper and the child is still recorded.
        """
        record = self._stateFile.recorded(name) if self._stateFile is not None else None
        if self.orphanReaper is None or record is None:
            return []
        return escapedChildren(record.start_time)

    def _groupOwner(self, pgid: int) -> str | None:
        """
        The process whose child led process group C{pgid} (each child leads
        its own), now or in its recent exits: who left an orphan behind.
        """
        for process in self.processes.values():
            if process.pid == pgid or any(e.pid == pgid for e in process.exits):
                return process.name
        return None

    def _claimStateFile(self) -> None:
        try:
            self._stateFile.claim()
        except OSError as e:
            self.log.warn("cannot write state file {path}: {e}", path=self._stateFile.path, e=e)

    def _autostart(self, names) -> None:
        """
        Start these processes, each once its dependencies are running.
        """
        self._pending |= set(names)
        self._startReady()

    def _startReady(self) -> None:
        if not self.running:
            return
        ranks = dependencyRanks({n: p.config for n, p in self.processes.items()})
        # The children spawned here in one go are written to the state file
        # once, after the last spawn: one write per child rewrote the whole
        # file each time (quadratic, and seconds for a hundred processes on
        # a busy disk).  An orchestrator SIGKILLed meanwhile still takes
        # them along: each child's parent-death signal is set by setpriv
        # milliseconds after its spawn.
        outermost = self._batch is None  # (a child ready at once starts its dependents here)
        if outermost:
            self._batch = []
        try:
            for name in sorted(self._pending, key=lambda n: (ranks[n], n)):
                process = self.processes.get(name)
                if process is None:
                    self._pending.discard(name)
                    continue
                waiting, failed = [], []
                for dep, condition in process.config.depends_on.items():
                    if dep not in self.processes:
                        continue
                    met, failure = dependencyState(self.processes[dep], condition)
                    if failure is not None:
                        failed.append(f"{dep}: {failure}")
                    elif not met:
                        waiting.append(f"{dep} ({condition})" if condition != "running" else dep)
                if not waiting and not failed:
                    self._pending.discard(name)
                    process.waitingFor = None
                    process.start(wait=False).addErrback(self._startFailed, name)
                    continue
                reason = ("waiting for " + "; ".join(failed)) if failed else \
                    ("waiting for " + ", ".join(waiting))
                if reason == process.waitingFor:
                    continue
                process.waitingFor = reason
                if failed:
                    # Kept pending: a dependency that runs again (an operator
                    # re-runs the migration) releases it.
                    self.log.error("{process} is not started: {reason}", process=name, reason=reason)
                    self._events.emit("dependency_failed", name, reason=reason, from_=process.status,
                                      to=process.status, pid=None)
                else:
                    self.log.info("{process} {reason}", process=name, reason=reason)
        finally:
            if outermost:
                batch, self._batch = self._batch, None
                changed = [self._stateFile.update(name, pid) for name, pid in batch]
                if any(changed):
                    self._flushStateFile()

    def _startFailed(self, failure, name: str) -> None:
        self.log.error("could not start {process}: {why}", process=name,
                       why=failure.getErrorMessage())

    def _onEvent(self, event) -> None:
        # Any change of a process's status may meet (or fail for good)
        # a waiting process's condition.
        if self._pending and event.process is not None and event.type in _DEPENDENCY_EVENTS:
            self._startReady()

    def stopService(self):
        """
        Stop every process, dependents before their dependencies; fires once
        every child is reaped.
        """
        super().stopService()
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self._pending.clear()
        d = self._stopAll(list(self.processes.values()), "the orchestrator is shutting down")
        # A bound on the whole shutdown: whatever still runs then is killed,
        # so twistd (and systemd's TimeoutStopSec) is never left waiting.
        deadline = self._reactor.callLater(self._config.shutdown_timeout, self._killAll)

        def done(result):
            if deadline.active():
                deadline.cancel()
            self._flushStateFile()
            if self.orphanReaper is not None:
                self.orphanReaper.stop()
            return result

        return d.addBoth(done)

    def _killAll(self) -> None:
        alive = [p for p in self.processes.values() if p.isAlive]
        if alive:
            self.log.warn(
                "shutdown took longer than orchestrator.shutdown_timeout ({timeout}s): "
                "killing {names}", timeout=self._config.shutdown_timeout,
                names=", ".join(p.name for p in alive))
        for process in alive:
            process.kill()

    def _stopAll(self, processes, why: str) -> Deferred:
        ranks = dependencyRanks({p.name: p.config for p in processes} | {
            n: p.config for n, p in self.processes.items()})
        byRank: dict[int, list] = {}
        for process in processes:
            byRank.setdefault(ranks[process.name], []).append(process)
        d = succeed(None)
        for rank in sorted(byRank, reverse=True):
            group = byRank[rank]
            d.addCallback(lambda _, group=group: DeferredList(
                [maybeDeferred(p.shutdown, why) for p in group], consumeErrors=True))
        return d.addCallback(lambda _: None)

    # -- reload -----------------------------------------------------------------

    def apply(self, config: Config, kinds) -> Deferred:
        """
        Apply a new configuration with the smallest change, process by
        process (see L{orchestrator.supervision.reconfig}): removed ones
        stop; added ones start; a change to what defines the child (its
        command, working directory, environment) replaces the child
        (stopped, then started with the new settings if it was running or
        meant to run); a change to supervision policy only (health,
        restart, stop, output, dependencies) is applied in place, same pid,
        counters and health history kept; unchanged ones are untouched.
        Reloads are serialised.

        @return: a Deferred firing with C{{"added": [...], "removed": [...],
            "changed": [...], "unchanged": [...], "updated": [...],
            "replaced": [...], "processes": {name: ProcessChange}}} once
            removed and replaced processes are stopped and the new ones are
            launched (C{changed} is C{updated} plus C{replaced}), or failing
            with L{ConfigError} (nothing changed) when something new cannot
            be built.
        """
        return self._reloadLock.run(self._apply, config, kinds)

    def diff(self, config: Config) -> dict[str, ProcessChange]:
        """
        What applying C{config} would do to each process, by name (removed
        ones included), in the new configuration's order.
        """
        old = self._config
        modeChanged = old.enabled != config.enabled
        changes: dict[str, ProcessChange] = {}
        for name, pconfig in config.processes.items():
            if name not in self.processes:
                changes[name] = ProcessChange(name, ADDED)
                continue
            before = old.processes.get(name, self.processes[name].config)
            changes[name] = diffProcess(
                before, pconfig, modeChanged=modeChanged,
                oldEnvironment=self._environment(before, old),
                newEnvironment=self._environment(pconfig, config))
        for name in self.processes:
            if name not in config.processes:
                changes[name] = ProcessChange(name, REMOVED)
        return changes

    def _apply(self, config: Config, kinds) -> Deferred:
        self._sharedEnvironment = Interner()  # (the previous load's are not kept alive)
        changes = self.diff(config)
        names = lambda outcome: [n for n, c in changes.items() if c.outcome == outcome]
        added, removed, replaced, updated = names(ADDED), names(REMOVED), names(REPLACED), names(UPDATED)
        # Build everything new before touching anything old: a process or
        # an output file that cannot be built rejects the whole reload and
        # the running configuration stays.
        fresh: dict[str, SupervisedProcess] = {}
        updates: dict[str, tuple] = {}
        try:
            for name in replaced + added:
                fresh[name] = self._makeProcess(config.processes[name], config, kinds)
            for name in updated:
                updates[name] = self._prepareUpdate(self.processes[name], config, kinds)
        except Exception as e:
            for _, _, probe, output in updates.values():
                if output is not None:
                    output.close()
                if probe is not None and hasattr(probe, "close"):
                    maybeDeferred(probe.close).addErrback(lambda f: None)
            for process in fresh.values():
                process.output.close()
            return fail(ConfigError([f"cannot apply the configuration: {type(e).__name__}: {e}"]))
        # A replaced process keeps what the operator did: it comes back if
        # it was running or meant to run, stays down if it was stopped.
        toStart = [n for n in replaced
                   if self.processes[n].isAlive or self.processes[n].wanted]
        toStart += [n for n in added if config.processes[n].autostart]
        self._config = config
        self._kinds = kinds
        self.probeGate.setLimit(config.max_concurrent_probes)
        for name, (pconfig, policy, probe, output) in updates.items():
            self.processes[name].reconfigure(pconfig, policy, probe=probe, output=output) \
                .addErrback(lambda f, name=name: self.log.failure(
                    "{process}: releasing the replaced probe failed", f, process=name))
        goners = [self.processes[n] for n in removed + replaced]
        d = self._stopAll(goners, "replaced by a configuration reload") if goners else succeed(None)

        def swap(_):
            for name in removed:
                del self.processes[name]
            self.processes.update(fresh)
            self.processes = {n: self.processes[n] for n in config.processes}  # configured order
            if self.running:
                if config.enabled:
                    self._autostart(toStart)
                else:
                    for process in fresh.values():
                        process.startMonitoring()
                if updated:
                    self._startReady()  # a changed depends_on may release a waiting start
            changed = [n for n in changes if n in updated or n in replaced]
            return {"added": added, "removed": removed, "changed": changed,
                    "unchanged": names(UNCHANGED), "updated": updated, "replaced": replaced,
                    "processes": changes}

        return d.addCallback(swap)

    def _prepareUpdate(self, process: SupervisedProcess, config: Config, kinds):
        """
        Build what an in-place update needs (the policy object, a new probe,
        a new output capture); raises if any of it cannot be built.
        """
        pconfig = self._withProbeEnvironment(config.processes[process.name], config)
        policy = kinds.policies[pconfig.restart.policy](pconfig.restart)
        probe = None
        if (pconfig.health != process.config.health and process.health is not None
                and pconfig.health.probe != "none"):
            probe = self._buildProbe(pconfig.health, kinds)
        output = None
        if pconfig.output != process.config.output:
            output = OutputCapture(process.name, pconfig.output, self._reactor, process.counters)
        return pconfig, policy, probe, output
