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

from orchestrator.config.types import Config, freeze
from orchestrator.errors import ConfigError
from orchestrator.health.monitor import HealthMonitor, ProbeGate
from orchestrator.supervision.orphans import OrphanReaper, StateFile, becomeSubreaper, reapLeftovers
from orchestrator.supervision.process import ManagedProcess, childEnvironment
from orchestrator.supervision.spawn import killGroup as _killGroup

__all__ = ["Supervisor", "dependencyRanks", "defaultStateDir"]


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
    Owns the L{ManagedProcess} of every configured process.

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
    ) -> None:
        self._config = config
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
        #: Caps the probes in flight at once (orchestrator.max_concurrent_probes).
        self.probeGate = ProbeGate(config.max_concurrent_probes)
        self._flushCall = None
        self._reloadLock = DeferredLock()
        self.processes: dict[str, ManagedProcess] = {}
        self._pending: set[str] = set()
        self._unsubscribe = None
        self._started = None
        for name, pconfig in config.processes.items():
            self.processes[name] = self._makeProcess(pconfig, config, kinds)

    @property
    def config(self) -> Config:
        return self._config

    def _makeProcess(self, pconfig, config: Config, kinds) -> ManagedProcess:
        policy = kinds.policies[pconfig.restart.policy](pconfig.restart)
        managed = config.enabled
        environment = childEnvironment(pconfig, self._environ, config.dotenv, set(config.secret_env))
        # An exec probe runs with its process's environment: never the
        # orchestrator's secrets.
        health = replace(pconfig.health, env=freeze(environment))

        def monitorFactory(process):
            if health.probe == "none":
                return None
            probe = (self._probeFactory or self._defaultProbe(kinds))(health)
            return HealthMonitor(process, health, probe, self._reactor,
                                 managed=managed, onResult=self._probeResult,
                                 random=self._random, gate=self.probeGate)

        return ManagedProcess(
            pconfig,
            reactor=self._reactor,
            spawner=self._spawner,
            policy=policy,
            events=self._events,
            environment=environment,
            managed=managed,
            random=self._random,
            monitorFactory=monitorFactory,
            recorder=self._record,
            killGroup=self._killGroup,
        )

    def _defaultProbe(self, kinds):
        return lambda health: kinds.probes[health.probe](health, self._reactor)

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
        for name in sorted(self._pending, key=lambda n: (ranks[n], n)):
            process = self.processes.get(name)
            if process is None:
                self._pending.discard(name)
                continue
            deps = [self.processes[d] for d in process.config.depends_on if d in self.processes]
            if all(d.status == "running" for d in deps):
                self._pending.discard(name)
                process.start(wait=False).addErrback(self._startFailed, name)
            else:
                waiting = [d.name for d in deps if d.status != "running"]
                self.log.info("{process} waits for {deps} to be running",
                              process=name, deps=", ".join(waiting))

    def _startFailed(self, failure, name: str) -> None:
        self.log.error("could not start {process}: {why}", process=name,
                       why=failure.getErrorMessage())

    def _onEvent(self, event) -> None:
        if event.type == "running" and self._pending:
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
        Apply a new configuration by diffing processes: removed ones stop,
        added ones start, changed ones are replaced (stopped, then started
        with the new settings if they were running or meant to run),
        unchanged ones keep running untouched.  Reloads are serialised.

        @return: a Deferred firing with C{{"added": [...], "removed": [...],
            "changed": [...], "unchanged": [...]}} once removed and changed
            processes are stopped and the new ones are launched, or failing
            with L{ConfigError} (nothing changed) when a new process cannot
            be built.
        """
        return self._reloadLock.run(self._apply, config, kinds)

    def _apply(self, config: Config, kinds) -> Deferred:
        old = self._config
        modeChanged = old.enabled != config.enabled
        added = [n for n in config.processes if n not in self.processes]
        removed = [n for n in self.processes if n not in config.processes]
        changed = [
            n for n in config.processes
            if n in self.processes and (modeChanged or config.processes[n] != old.processes.get(n)
                                        or self._envChanged(n, old, config))
        ]
        unchanged = [n for n in config.processes if n in self.processes and n not in changed]
        # Build everything new before touching anything old: a process that
        # cannot be built (its output file cannot be opened) rejects the
        # whole reload and the running configuration stays.
        try:
            fresh = {n: self._makeProcess(config.processes[n], config, kinds) for n in changed + added}
        except Exception as e:
            return fail(ConfigError([f"cannot apply the configuration: {type(e).__name__}: {e}"]))
        # A changed process keeps what the operator did: it comes back if it
        # was running or meant to run, stays down if it was stopped.
        toStart = [n for n in changed
                   if self.processes[n].isAlive or self.processes[n].wanted]
        toStart += [n for n in added if config.processes[n].autostart]
        self._config = config
        self._kinds = kinds
        self.probeGate.setLimit(config.max_concurrent_probes)
        goners = [self.processes[n] for n in removed + changed]
        d = self._stopAll(goners, "replaced by a configuration reload") if goners else succeed(None)

        def replace(_):
            for name in removed:
                del self.processes[name]
            for name, process in fresh.items():
                previous = self.processes.get(name)
                if previous is not None:
                    process.restartCount = previous.restartCount
                self.processes[name] = process
            self.processes = {n: self.processes[n] for n in config.processes}  # configured order
            if self.running:
                if config.enabled:
                    self._autostart(toStart)
                else:
                    for process in fresh.values():
                        process.startMonitoring()
            return {"added": added, "removed": removed, "changed": changed, "unchanged": unchanged}

        return d.addCallback(replace)

    def _envChanged(self, name: str, old: Config, new: Config) -> bool:
        p = new.processes[name]
        return {k: old.dotenv.get(k) for k in p.env_from_dotenv} != {
            k: new.dotenv.get(k) for k in p.env_from_dotenv}
