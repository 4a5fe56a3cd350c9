"""
The top-level service: the configuration, the plugins, the event bus, the
supervisor and the admin API, wired together.

L{Orchestrator} is also the object plugins and the admin API talk to: it
exposes the processes, the events, the configuration and C{reload()}.
"""

from __future__ import annotations

import gc
import os
import random as _random
import signal
from collections import Counter
from typing import Any, Callable, Mapping

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, DeferredLock, fail, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import ILogObserver, Logger

from orchestrator import __version__, tls
from orchestrator._deferreds import fireAll
from orchestrator.config.load import LoadedConfig
from orchestrator.errors import AlreadyRunning, ConfigError
from orchestrator.hooks.call import callHookDeferred, pluginNames
from orchestrator.lifecycle import EXIT_FAILURE, ExitStatus, Hangup, TerminalWatch
from orchestrator.notify.events import EventBus
from orchestrator.notify.registry import NotifierSet
from orchestrator.supervision.orphans import StateFile
from orchestrator.supervision.reconfig import describeChanges
from orchestrator.supervision.supervisor import Supervisor, defaultStateDir

__all__ = ["Orchestrator"]


def _loadInThread(call: Callable[[], Any]) -> Any:
    """
    Run the reloader in a worker thread without stalling the reactor
    thread, which shares the GIL with it.

    Python's cyclic garbage collector is paused meanwhile: a configuration
    may build up to 100,000 values (the YAML budget) and as many parser
    objects, and the full collections they trigger hold the GIL for 30-90
    ms each.  Everything a load makes is freed by reference counting, here,
    and the collector resumes as soon as the load ends (a bounded time,
    since the input is bounded).  A L{ConfigError} is raised afresh, so
    the loader's frames (and the document they hold) are freed in this
    thread rather than when the reactor thread drops the error.
    """
    paused = gc.isenabled()
    gc.disable()
    try:
        try:
            return call()
        except ConfigError as e:
            problems = e.problems
        raise ConfigError(problems)
    finally:
        if paused:
            gc.enable()


def _sourceOf(config, path: str) -> str:
    """
    Where the setting at the dotted C{path} came from, without unpacking
    the whole L{Config.sources} of a configuration that is kept running
    (see L{orchestrator.config.types.PackedMapping}).
    """
    sources = config.sources
    peek = getattr(sources, "peek", sources.get)
    return peek(path, "default")


def _forgetExitSignal(reactor) -> None:
    """
    Make a graceful shutdown by SIGTERM/SIGINT exit 0.

    twistd re-raises the signal that stopped the reactor when it exits (so
    the exit status says "killed by SIGTERM"); it reads that signal from the
    reactor's private C{_exitSignal}, and Twisted offers no public way to
    clear it.  Every child is stopped cleanly by the time this runs, and
    operators and process managers expect a supervisor's clean stop to exit
    0.  This is the only place that touches the attribute; a reactor
    without it (a test's fake, a future Twisted) is left alone.
    """
    if getattr(reactor, "_exitSignal", None) is not None:
        reactor._exitSignal = None


class Orchestrator(MultiService):
    """
    Everything one orchestrator runs.

    @param loaded: the validated configuration with its plugin manager.
    @param reactor: the reactor (time, processes, listening).
    @param spawner: how children are spawned (see L{orchestrator.supervision.spawn}).
    @param reload: C{reload()} -> a new L{LoadedConfig}, or raises
        L{ConfigError}; the default re-reads the same file the same way.
        It runs in the reactor's thread pool when the reactor has one, so
        parsing a large or hostile file never holds the reactor.
    @param logObserver: installed as the application's log observer by
        L{setServiceParent} (twistd then uses it instead of its own).
    @param handleSignals: install a SIGHUP handler that reloads.
    @param killGroup: C{killGroup(pgid, signal)}, how leftovers of a child's
        process group are ended (tests with fake children must pass a fake:
        their pids are not real process groups).
    @param reapOrphans: become a child subreaper on start and reap the
        orphans re-parented to us (the real orchestrator process only).
    @param exitStatus: where a failure to come up is recorded (twistd passes
        a L{orchestrator.lifecycle.ProcessExitStatus}: the process then
        exits with its code and one line on stderr).
    @param systemd: an L{orchestrator.sdnotify.SystemdLink} when a service
        manager listens on C{NOTIFY_SOCKET}.
    @param hangup: what a SIGHUP means (L{orchestrator.lifecycle.Hangup}).
    @param memory: C{memory(pgid)} -> resident bytes of a child's process
        group (default L{orchestrator.supervision.memory.groupMemory}; tests
        with fake children pass a fake: their pids are not real).
    @param heap: an L{orchestrator.heap.HeapSettler}: the heap built by
        then is frozen before the first spawn and settled after each
        reload (twistd passes one; tests leave their runner's heap alone).
    """

    log = Logger()

    def __init__(
        self,
        loaded: LoadedConfig,
        reactor,
        spawner: Callable,
        reload: Callable[[], LoadedConfig] | None = None,
        environ: Mapping[str, str] | None = None,
        random: Callable[[], float] = _random.random,
        logObserver=None,
        handleSignals: bool = False,
        stateFile: StateFile | None | bool = True,
        probeFactory: Callable | None = None,
        listen: bool = True,
        killGroup: Callable[[int, int], bool] | None = None,
        reapOrphans: bool = False,
        exitStatus: ExitStatus | None = None,
        systemd=None,
        hangup: Hangup | None = None,
        memory: Callable[[int], int | None] | None = None,
        heap=None,
    ) -> None:
        super().__init__()
        self._heap = heap
        self.exitStatus = exitStatus if exitStatus is not None else ExitStatus()
        self._systemd = systemd
        self._hangup = hangup
        self.reactor = reactor
        self.loaded = loaded
        self.pluginManager = loaded.pluginManager
        self.kinds = loaded.kinds
        self.version = __version__
        self._reloader = reload
        self._reloading = DeferredLock()
        # Callers of the reload waiting for the lock, not read yet: later
        # requests join it rather than queue reads of their own.
        self._queuedReload: list[Deferred] | None = None
        self._spawner = spawner
        self._logObserver = logObserver
        self._handleSignals = handleSignals
        self._previousHUP = None
        self._terminalWatch = None
        self.startedAt: float | None = None
        self.events = EventBus(reactor)
        self.notifiers = NotifierSet(self.events, reactor)
        #: (plugin name, hook) -> failures of its life-cycle hooks.
        self.pluginFailures: Counter = Counter()
        config = loaded.config
        if stateFile is True:
            # Only a path: the file is read by checkStateFile and written
            # once the supervisor starts (no file I/O while constructing).
            stateDir = config.state_dir or defaultStateDir(config.path)
            stateFile = StateFile(os.path.join(stateDir, "children.json"))
        self.stateFile: StateFile | None = stateFile or None
        self.supervisor = Supervisor(
            config, loaded.kinds, reactor, spawner, self.events,
            environ=environ, random=random, stateFile=self.stateFile,
            probeFactory=probeFactory, reapOrphans=reapOrphans,
            **({"killGroup": killGroup} if killGroup is not None else {}),
            **({"memory": memory} if memory is not None else {}),
        )
        self.supervisor.setServiceParent(self)
        from orchestrator.notify.metrics import MetricsCollector

        self.metrics = MetricsCollector(self)
        self.web = None
        if listen:
            from orchestrator.web import AdminService

            self.web = AdminService(self, reactor)
            self.web.setServiceParent(self)

    # -- what plugins and the API use ---------------------------------------

    @property
    def config(self):
        return self.supervisor.config

    @property
    def processes(self):
        return self.supervisor.processes

    def process(self, name: str):
        """
        @raise KeyError: no such configured process.
        """
        return self.supervisor.processes[name]

    # -- life cycle -----------------------------------------------------------

    def setServiceParent(self, parent):
        # twistd creates the application from makeService's result and only
        # then starts logging; an ILogObserver component on the application
        # is what it logs to, which is how logging.format/level/file apply.
        super().setServiceParent(parent)
        if self._logObserver is not None and hasattr(parent, "setComponent"):
            if parent.getComponent(ILogObserver, None) is None:
                parent.setComponent(ILogObserver, self._logObserver)

    def checkStateFile(self) -> None:
        """
        Refuse to run on a state file that another live orchestrator owns
        (it would end that one's children as leftovers).  Reads the file:
        C{makeService} calls it before the reactor runs, so twistd exits
        non-zero before any child is spawned; L{startService} checks again.

        @raise AlreadyRunning: naming the other orchestrator's pid.
        """
        if self.stateFile is None or not self.config.enabled:
            return
        owner = self.stateFile.liveOwner()
        if owner is not None:
            raise AlreadyRunning([
                f"another orchestrator (pid {owner}) is running with this configuration "
                f"(state file {self.stateFile.path}); stop it first or set orchestrator.state_dir"])

    def startService(self):
        """
        Bind the admin endpoint, run the plugins' C{startup} hooks, and only
        then start the supervisor (which spawns): a failure to come up that
        can be known first leaves no child behind.  Such a failure is
        recorded in L{exitStatus} and stops the reactor.
        """
        self.checkStateFile()
        self.startedAt = self.reactor.seconds()
        self.notifiers.start(self.config, self.kinds)
        Service.startService(self)
        if self._handleSignals:
            self._previousHUP = signal.signal(
                signal.SIGHUP, lambda *_: self.reactor.callFromThread(self._sighup)
            )
            if self._hangup is not None:
                self._terminalWatch = TerminalWatch(self._hangup, self.reactor, self._terminalLost)
                self._terminalWatch.start()
        if self._systemd is not None:
            self._systemd.start(self)
        listening = self.web.listen() if self.web is not None else succeed(None)
        listening.addCallbacks(self._serve, self._cannotListen)

    def _cannotListen(self, failure) -> None:
        self.fatal(EXIT_FAILURE, f"admin API cannot listen on {self.config.admin.listen}: "
                                 f"{failure.getErrorMessage()}")

    def _serve(self, _) -> None:
        if not self.running:
            return
        self._startup()
        if self.exitStatus.code is not None:
            return
        if self._heap is not None:
            self.log.info("start-up heap frozen: {n} objects kept out of full garbage collections",
                          n=self._heap.freeze())
        for service in self:
            if not service.running:
                service.startService()
        self.log.info("orchestrator {version} started ({n} processes, {mode}, children spawned by {how}, "
                      "reactor {reactor})",
                      version=self.version, n=len(self.processes),
                      mode="managing" if self.config.enabled else "monitor-only",
                      how=getattr(self._spawner, "mechanism", "a custom spawner"),
                      reactor=type(self.reactor).__name__)
        if tls.leftOut():
            self.log.info("TLS left out: the configuration uses no ssl: listener and no https:// URL "
                          "(set orchestrator.tls: always to load it)")
        for warning in self.loaded.warnings:
            self.log.warn("configuration: {warning}", warning=warning)
        if self._systemd is not None:
            self._systemd.serving()

    def _startup(self) -> None:
        """
        Call each plugin's C{startup} hook before anything is spawned.  A
        hook that raises (or whose Deferred fails, even later) is a failure
        to come up: logged with the plugin's name, counted, then L{fatal},
        exit code 1 (the other plugins' hooks still run).
        """
        self._callEach("startup", onFailure=self._startupFailed)

    def _startupFailed(self, plugin: str, failure) -> None:
        self.fatal(EXIT_FAILURE, f"plugin {plugin} failed in startup: {failure.getErrorMessage()}")

    def fatal(self, code: int, message: str) -> None:
        """
        The orchestrator cannot go on: say why (one log line, and under
        twistd one line on stderr), keep C{code} as the exit status, and
        stop everything gracefully.
        """
        if self.exitStatus.fail(code, message):
            self.log.critical("{message}", message=message)
        self._stopReactor()

    def _stopReactor(self) -> None:
        from twisted.internet.error import ReactorNotRunning

        def stop():
            try:
                self.reactor.stop()
            except ReactorNotRunning:
                pass

        if self._handleSignals:  # under twistd (tests never stop their reactor)
            self.reactor.callWhenRunning(stop)

    def stopService(self):
        if self._systemd is not None:
            self._systemd.stopping()
        if self._terminalWatch is not None:
            self._terminalWatch.stop()
        if self._heap is not None:
            self._heap.stop()
        if self._handleSignals and self._previousHUP is not None:
            signal.signal(signal.SIGHUP, self._previousHUP)
            self._previousHUP = None
        d = self._callEach("shutdown")
        d.addCallback(lambda _: MultiService.stopService(self))
        d.addCallback(lambda _: self.notifiers.close())
        if self._systemd is not None:
            d.addBoth(lambda result: (self._systemd.stop(), result)[1])
        if self._handleSignals:
            d.addCallback(self._stoppedGracefully)
        return d

    def _stoppedGracefully(self, result):
        _forgetExitSignal(self.reactor)
        if self.exitStatus.code:
            self.log.info("all processes stopped; orchestrator exiting with code {code}",
                          code=self.exitStatus.code)
        else:
            self.log.info("all processes stopped; orchestrator exiting")
        return result

    def _callEach(self, hookName: str, pm=None, only=None, onFailure=None) -> Deferred:
        """
        Call a life-cycle hook on each plugin separately (see
        L{orchestrator.hooks.call}): one that fails is logged and counted,
        the others still run; waits for returned Deferreds.
        """
        return callHookDeferred(pm or self.pluginManager, hookName, self.pluginFailures,
                                only=only, onFailure=onFailure, orchestrator=self)

    # -- reload ------------------------------------------------------------------

    def _terminalLost(self) -> None:
        self.log.info("the controlling terminal hung up (no SIGHUP reached us); stopping gracefully")
        self._stopReactor()

    def _sighup(self) -> None:
        meaning = self._hangup.meaning() if self._hangup is not None else Hangup.RELOAD
        if meaning == Hangup.STOP:
            self.log.info("SIGHUP: the controlling terminal hung up; stopping gracefully")
            self._stopReactor()
        elif meaning == Hangup.IGNORE:
            self.log.info("SIGHUP: the controlling terminal hung up; started under nohup, going on")
        else:
            self.log.info("SIGHUP: reloading the configuration")
            self.reload().addErrback(lambda f: None)

    def reload(self) -> Deferred:
        """
        Re-read the configuration and apply it by diff.  An invalid
        configuration is reported and the running one kept.  Reloads run
        one at a time, each read (off the reactor thread) and applied
        before the next is read, so an older read never wins.  Requests
        that arrive while a reload runs share one queued reload (which
        reads the file as it is when its turn comes): a storm of SIGHUPs
        or reload calls costs at most two reads, never a queue of them.

        @return: a Deferred firing with the diff summary, or failing with
            L{ConfigError} (its C{problems} list every error).
        """
        if self._reloader is None:
            return fail(ConfigError(["this orchestrator has no configuration file to reload"]))
        if self._systemd is None:
            return self._reload()
        self._systemd.reloading()
        return self._reload().addBoth(lambda result: (self._systemd.reloaded(), result)[1])

    def _reload(self) -> Deferred:
        if self._queuedReload is not None:
            joined: Deferred = Deferred()
            self._queuedReload.append(joined)
            return joined
        waiters: list[Deferred] = []
        self._queuedReload = waiters

        def start() -> Deferred:
            # Its turn: from now on a new request needs a read of its own.
            if self._queuedReload is waiters:
                self._queuedReload = None
            return self._parse().addCallbacks(self._applyLoaded, self._parseFailed)

        return self._reloading.run(start).addBoth(lambda result: fireAll(waiters, result))

    def _parse(self) -> Deferred:
        """
        Run the reloader: in the reactor's thread pool when it has one (a
        real reactor), else here (the fake reactors of the unit tests).
        """
        if IReactorThreads.providedBy(self.reactor):
            return deferToThreadPool(self.reactor, self.reactor.getThreadPool(),
                                     _loadInThread, self._reloader)
        return maybeDeferred(self._reloader)

    def _parseFailed(self, failure):
        if failure.check(ConfigError):
            raise self._rejected(failure.value)
        # A loader bug must not take the running configuration down.
        self.log.failure("reading the configuration failed", failure)
        raise self._rejected(ConfigError([f"cannot read the configuration: {failure.value!r}"]))

    def _applyLoaded(self, loaded: LoadedConfig) -> Deferred:
        if self.config.processes and not loaded.config.processes \
                and _sourceOf(loaded.config, "processes") == "default":
            return fail(self._rejected(ConfigError([
                f"{loaded.config.path or 'the configuration'}: configures no process, which "
                "would stop every running one; write `processes: {}` to mean that"])))
        for warning in loaded.warnings:
            self.log.warn("configuration: {warning}", warning=warning)
        if loaded.config.admin != self.config.admin:
            self.log.warn("admin settings changed; they apply at the next start of the orchestrator")
        d = self.supervisor.apply(loaded.config, loaded.kinds)

        def applied(summary):
            self.loaded = loaded
            previousPM, self.pluginManager = self.pluginManager, loaded.pluginManager
            self.kinds = loaded.kinds
            self._reloadPlugins(previousPM, loaded.pluginManager)
            notifiers = self.notifiers.apply(loaded.config, loaded.kinds)
            self.log.info("notifiers reloaded: kept {kept}, replaced {replaced}, added {added}, "
                          "removed {removed}", **{k: ", ".join(v) or "-" for k, v in notifiers.items()})
            outcome = describeChanges(summary["processes"])
            self.log.info("configuration reloaded: {outcome}", outcome=outcome,
                          changes={n: c.toJSON() for n, c in summary["processes"].items()})
            self.events.emit("config_reloaded", None, reason=outcome)
            if self._heap is not None:
                self._heap.settle()
            return summary

        def notApplied(failure):
            failure.trap(ConfigError)
            raise self._rejected(failure.value)

        return d.addCallbacks(applied, notApplied)

    def _reloadPlugins(self, previous, current) -> None:
        # Plugins are told about their own life only: a module the reload
        # added gets startup, one it removed gets shutdown (from the
        # manager it was registered on); the others hear nothing.  A
        # failure here is logged and counted, never fatal: the
        # orchestrator is up already.
        if previous is current:
            return
        before, after = pluginNames(previous), pluginNames(current)
        if before - after:
            self._callEach("shutdown", previous, only=before - after)
        if after - before:
            self._callEach("startup", current, only=after - before)

    def _rejected(self, error: ConfigError) -> ConfigError:
        for problem in error.problems:
            self.log.error("reload rejected: {problem}", problem=problem)
        self.events.emit("config_rejected", None, reason=f"{len(error.problems)} problem(s)")
        return error
