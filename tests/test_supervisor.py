"""
Unit tests for L{orchestrator.supervision.supervisor.Supervisor} and the supervision
side of L{orchestrator.app.Orchestrator}: dependency order, shutdown,
reload by diff.  Fake process reactor and clock; no sleeps.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time

from twisted.internet.defer import Deferred
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from orchestrator.config.load import loadConfig
from orchestrator.errors import ConfigError
from orchestrator.notify.events import EventBus
from orchestrator.supervision.orphans import StateFile
from orchestrator.supervision.supervisor import Supervisor, dependencyRanks
from tests.fakes import FakeProcessReactor, loadText, writeConfig, makeOrchestrator

_CHAIN = """
processes:
  db:
    command: ["{python}", "-c", "db"]
    start: {ready_after: 1}
  api:
    command: ["{python}", "-c", "api"]
    depends_on: [db]
    start: {ready_after: 1}
  web:
    command: ["{python}", "-c", "web"]
    depends_on: [api]
    start: {ready_after: 1}
  worker:
    command: ["{python}", "-c", "worker"]
    depends_on: [db]
    start: {ready_after: 1}
"""


def _name(transport) -> str:
    """
    The process a fake child belongs to (its C{-c} argument).
    """
    return transport.args[2]


def _load(text: str, directory: str):
    """
    Load C{text} as the configuration file in C{directory} (the same folder
    for a configuration and its reload: relative paths resolve there).
    """
    return loadConfig(writeConfig(text, directory), envFile=os.devnull, environ={},
                      entryPoints=False)


def _supervisor(text: str, reactor: FakeProcessReactor | None = None, directory=None, **kwargs):
    loaded = _load(text, directory or tempfile.mkdtemp(prefix="orch-sup-"))
    reactor = reactor or FakeProcessReactor()
    bus = EventBus(reactor)
    supervisor = Supervisor(loaded.config, loaded.kinds, reactor, reactor.spawner, bus,
                            environ={"PATH": "/usr/bin:/bin"}, killGroup=reactor.killGroup,
                            random=lambda: 0.5, **kwargs)
    return supervisor, reactor, bus, loaded


def _alive(reactor) -> dict[str, object]:
    return {_name(t): t for t in reactor.spawned if t.alive}


class DependencyTests(SynchronousTestCase):
    """
    Processes start after their dependencies are running.
    """

    def test_ranks(self) -> None:
        """Each process ranks one above its deepest dependency."""
        loaded = loadText(_CHAIN)
        self.assertEqual(dependencyRanks(loaded.config.processes),
                         {"db": 0, "api": 1, "web": 2, "worker": 1})

    def test_startInDependencyOrder(self) -> None:
        """A process is spawned only once every dependency is running."""
        supervisor, reactor, _, _ = _supervisor(_CHAIN)
        supervisor.startService()
        self.assertEqual([_name(t) for t in reactor.spawned], ["db"])
        reactor.advance(1)  # db running
        self.assertEqual([_name(t) for t in reactor.spawned], ["db", "api", "worker"])
        reactor.advance(1)  # api running
        self.assertEqual([_name(t) for t in reactor.spawned], ["db", "api", "worker", "web"])
        reactor.advance(1)
        self.assertEqual({n: p.status for n, p in supervisor.processes.items()},
                         dict.fromkeys(["db", "api", "web", "worker"], "running"))

    def test_dependentWaitsForARestartedDependency(self) -> None:
        """A dependency that crashes before it is ready holds its dependents back until it runs."""
        supervisor, reactor, _, _ = _supervisor(_CHAIN)
        supervisor.startService()
        reactor.last.exited(1)  # db dies while starting
        reactor.advance(0.0625)
        self.assertEqual([_name(t) for t in reactor.spawned], ["db"])
        reactor.advance(0.0625)  # backoff.initial 0.1 s: db respawned
        self.assertEqual([_name(t) for t in reactor.spawned], ["db", "db"])
        reactor.advance(0.5)
        self.assertEqual(sorted(_alive(reactor)), ["db"])
        reactor.advance(0.5)  # db ready
        self.assertEqual(sorted(_alive(reactor)), ["api", "db", "worker"])

    def test_autostartFalse(self) -> None:
        """A process with autostart: false is not started with the others."""
        supervisor, reactor, _, _ = _supervisor(
            "processes:\n"
            "  a: {command: ['{python}', '-c', 'a']}\n"
            "  b: {command: ['{python}', '-c', 'b'], autostart: false}\n")
        supervisor.startService()
        reactor.advance(5)
        self.assertEqual([_name(t) for t in reactor.spawned], ["a"])
        self.assertEqual(supervisor.processes["b"].status, "stopped")


class ShutdownTests(SynchronousTestCase):
    """
    stopService stops dependents first and fires when the last child is
    reaped.
    """

    def startAll(self, supervisor, reactor) -> None:
        supervisor.startService()
        for _ in range(3):
            reactor.advance(1)
        self.assertEqual(len(_alive(reactor)), 4)

    def test_stopServiceDependentsFirstAndFiresWhenAllReaped(self) -> None:
        """stopService signals web, then api and worker, then db, each after the previous are reaped, and fires only after db is."""
        supervisor, reactor, _, _ = _supervisor(_CHAIN)
        self.startAll(supervisor, reactor)
        alive = _alive(reactor)
        d = supervisor.stopService()
        signalled = lambda: sorted(n for n, t in alive.items() if t.signals)
        self.assertEqual(signalled(), ["web"])
        alive["web"].exited(0)
        self.assertEqual(signalled(), ["api", "web", "worker"])
        alive["api"].exited(0)
        self.assertEqual(signalled(), ["api", "web", "worker"])
        self.assertNoResult(d)
        alive["worker"].exited(0)
        self.assertEqual(signalled(), ["api", "db", "web", "worker"])
        self.assertNoResult(d)
        alive["db"].exited(0)
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual({p.status for p in supervisor.processes.values()}, {"stopped"})
        self.assertEqual(reactor.getDelayedCalls(), [])

    def test_stopServiceEscalatesToKill(self) -> None:
        """A child ignoring TERM during shutdown is SIGKILLed at stop.timeout and the shutdown then completes."""
        supervisor, reactor, _, _ = _supervisor(
            "processes:\n  a:\n    command: ['{python}', '-c', 'a']\n    stop: {timeout: 4}\n")
        supervisor.startService()
        child = reactor.last
        d = supervisor.stopService()
        reactor.advance(4)
        self.assertEqual(child.signals, [signal.SIGTERM, signal.SIGKILL])
        self.assertNoResult(d)
        child.killed(signal.SIGKILL)
        self.successResultOf(d)
        self.assertEqual(reactor.getDelayedCalls(), [])

    def test_shutdownTimeoutKillsWhatIsLeft(self) -> None:
        """When stopping takes longer than orchestrator.shutdown_timeout, every child still there is SIGKILLed."""
        supervisor, reactor, _, _ = _supervisor(
            "orchestrator: {shutdown_timeout: 3}\n"
            "processes:\n  a:\n    command: ['{python}', '-c', 'a']\n    stop: {timeout: 30}\n")
        supervisor.startService()
        child = reactor.last
        d = supervisor.stopService()
        reactor.advance(2.9)
        self.assertEqual(child.signals, [signal.SIGTERM])
        reactor.advance(0.1)
        self.assertEqual(child.signals, [signal.SIGTERM, signal.SIGKILL])
        self.assertNoResult(d)
        child.killed(signal.SIGKILL)
        self.successResultOf(d)
        self.assertEqual(reactor.getDelayedCalls(), [])

    def test_shutdownClosesProbes(self) -> None:
        """Stopping for good closes each process's probe (its connection pool), once."""
        closed = []

        class Probe:
            def check(self):
                return Deferred()

            def close(self):
                closed.append(True)

        supervisor, reactor, _, _ = _supervisor(
            "processes:\n  a:\n    command: ['{python}', '-c', 'a']\n    health: {probe: tcp, port: 9}\n",
            probeFactory=lambda health: Probe())
        supervisor.startService()
        d = supervisor.stopService()
        reactor.last.exited(0)
        self.successResultOf(d)
        self.assertEqual(closed, [True])

    def test_stopServiceCancelsPendingRestarts(self) -> None:
        """A crashed process waiting for its restart is not restarted after shutdown."""
        supervisor, reactor, _, _ = _supervisor(
            "processes:\n  a:\n    command: ['{python}', '-c', 'a']\n"
            "    restart: {policy: always, interval: 10}\n")
        supervisor.startService()
        reactor.last.exited(1)
        self.successResultOf(supervisor.stopService())
        self.assertEqual(reactor.getDelayedCalls(), [])
        reactor.advance(60)
        self.assertEqual(len(reactor.spawned), 1)

    def test_orchestratorStopServiceWaitsForChildren(self) -> None:
        """Orchestrator.stopService (what twistd waits for) fires only after the last child is reaped."""
        loaded = loadText(_CHAIN)
        reactor = FakeProcessReactor()
        orchestrator = makeOrchestrator(loaded, reactor,
                                        environ={"PATH": "/bin"},
                                        random=lambda: 0.5)
        orchestrator.startService()
        for _ in range(3):
            reactor.advance(1)
        alive = _alive(reactor)
        self.assertEqual(len(alive), 4)
        d = orchestrator.stopService()
        for name in ["web", "api", "worker"]:
            self.assertNoResult(d)
            alive[name].exited(0)
        self.assertNoResult(d)
        alive["db"].exited(0)
        self.successResultOf(d)
        self.assertFalse(orchestrator.running)
        self.assertEqual(_alive(reactor), {})
        self.assertEqual(reactor.getDelayedCalls(), [])


_BEFORE = """
processes:
  keep:
    command: ["{python}", "-c", "keep"]
  change:
    command: ["{python}", "-c", "change"]
    env: {MODE: old}
  remove:
    command: ["{python}", "-c", "remove"]
"""

_AFTER = """
processes:
  keep:
    command: ["{python}", "-c", "keep"]
  change:
    command: ["{python}", "-c", "change"]
    env: {MODE: new}
  add:
    command: ["{python}", "-c", "add"]
"""


class ApplyTests(SynchronousTestCase):
    """
    Supervisor.apply: reload by diffing named processes.
    """

    def test_applyDiff(self) -> None:
        """Added processes start, removed stop, changed restart with the new settings, unchanged keep their pid."""
        directory = tempfile.mkdtemp(prefix="orch-apply-")
        supervisor, reactor, _, _ = _supervisor(_BEFORE, directory=directory)
        supervisor.startService()
        reactor.advance(1)
        before = _alive(reactor)
        keepProcess = supervisor.processes["keep"]
        keepPid = keepProcess.pid
        new = _load(_AFTER, directory)
        d = supervisor.apply(new.config, new.kinds)
        self.assertNoResult(d)
        self.assertEqual(before["remove"].signals, [signal.SIGTERM])
        self.assertEqual(before["change"].signals, [signal.SIGTERM])
        self.assertEqual([_name(t) for t in reactor.spawned].count("change"), 1)
        self.assertNotIn("add", [_name(t) for t in reactor.spawned])
        before["remove"].exited(0)
        before["change"].exited(0)
        summary = self.successResultOf(d)
        processes = summary.pop("processes")
        self.assertEqual(summary, {"added": ["add"], "removed": ["remove"],
                                   "changed": ["change"], "unchanged": ["keep"],
                                   "updated": [], "replaced": ["change"]})
        self.assertEqual({n: c.describe() for n, c in processes.items()},
                         {"keep": "unchanged", "change": "replaced (env)", "add": "added",
                          "remove": "removed"})
        self.assertEqual(list(supervisor.processes), ["keep", "change", "add"])
        self.assertIs(supervisor.processes["keep"], keepProcess)
        self.assertEqual(supervisor.processes["keep"].pid, keepPid)
        self.assertEqual(before["keep"].signals, [])
        alive = _alive(reactor)
        self.assertEqual(sorted(alive), ["add", "change", "keep"])
        self.assertEqual(alive["change"].env["MODE"], "new")
        self.assertNotEqual(supervisor.processes["change"].pid, None)
        self.assertEqual(supervisor.config, new.config)

    def test_applyUnchangedTouchesNothing(self) -> None:
        """Applying an identical configuration changes no process."""
        directory = tempfile.mkdtemp(prefix="orch-apply-")
        supervisor, reactor, _, _ = _supervisor(_BEFORE, directory=directory)
        supervisor.startService()
        pids = {n: p.pid for n, p in supervisor.processes.items()}
        same = _load(_BEFORE, directory)
        summary = self.successResultOf(supervisor.apply(same.config, same.kinds))
        self.assertEqual(summary["unchanged"], ["keep", "change", "remove"])
        self.assertEqual({n: p.pid for n, p in supervisor.processes.items()}, pids)
        self.assertEqual(len(reactor.spawned), 3)
        self.assertTrue(all(not t.signals for t in reactor.spawned))

    def test_changedKeepsRestartCount(self) -> None:
        """A changed process keeps its restart count across the replacement."""
        directory = tempfile.mkdtemp(prefix="orch-apply-")
        supervisor, reactor, _, _ = _supervisor(_BEFORE, directory=directory)
        supervisor.startService()
        reactor.advance(1)
        _alive(reactor)["change"].exited(1)
        reactor.advance(0)
        self.assertEqual(supervisor.processes["change"].restartCount, 1)
        new = _load(_AFTER, directory)
        d = supervisor.apply(new.config, new.kinds)
        for name in ("change", "remove"):
            _alive(reactor)[name].exited(0)
        self.successResultOf(d)
        self.assertEqual(supervisor.processes["change"].restartCount, 1)


class ApplyRaceTests(SynchronousTestCase):
    """
    Reloads that overlap each other or commands never leave an untracked child.
    """

    def test_overlappingReloadsAreSerialised(self) -> None:
        """Two reloads in a row apply one after the other: one child per process, all tracked."""
        directory = tempfile.mkdtemp(prefix="orch-apply-")
        supervisor, reactor, _, _ = _supervisor(_BEFORE, directory=directory)
        supervisor.startService()
        reactor.advance(1)
        new = _load(_AFTER, directory)
        first = supervisor.apply(new.config, new.kinds)
        second = supervisor.apply(new.config, new.kinds)
        for name in ("change", "remove"):
            _alive(reactor)[name].exited(0)
        self.successResultOf(first)
        self.assertEqual(self.successResultOf(second)["unchanged"], ["keep", "change", "add"])
        alive = [t for t in reactor.spawned if t.alive]
        self.assertEqual(sorted(_name(t) for t in alive), ["add", "change", "keep"])
        tracked = {p.pid for p in supervisor.processes.values()}
        self.assertEqual({t.pid for t in alive}, tracked)

    def test_commandOnAReplacedProcessIsRefused(self) -> None:
        """A restart sent to a process while a reload replaces it is refused (409) and spawns nothing."""
        from orchestrator.errors import StateError

        directory = tempfile.mkdtemp(prefix="orch-apply-")
        supervisor, reactor, _, _ = _supervisor(_BEFORE, directory=directory)
        supervisor.startService()
        reactor.advance(1)
        old = supervisor.processes["change"]
        new = _load(_AFTER, directory)
        d = supervisor.apply(new.config, new.kinds)
        self.failureResultOf(old.restart(wait=False), StateError)
        for name in ("change", "remove"):
            _alive(reactor)[name].exited(0)
        self.successResultOf(d)
        self.assertEqual(sorted(_name(t) for t in reactor.spawned if t.alive), ["add", "change", "keep"])

    def test_unbuildableProcessRejectsTheWholeReload(self) -> None:
        """A reload whose new process cannot be built (its log file cannot be opened) changes nothing."""
        directory = tempfile.mkdtemp(prefix="orch-apply-")
        supervisor, reactor, _, _ = _supervisor(_BEFORE, directory=directory)
        supervisor.startService()
        before = dict(supervisor.processes)
        broken = _load(_AFTER.replace('    env: {MODE: new}\n',
                                      '    env: {MODE: new}\n    log: {file: logs/x.log}\n'),
                       directory)
        with open(os.path.join(directory, "logs"), "w") as f:  # valid when checked, not any more
            f.write("a file where the log folder should be")
        self.failureResultOf(supervisor.apply(broken.config, broken.kinds), ConfigError)
        self.assertEqual(supervisor.processes, before)
        self.assertTrue(all(not t.signals for t in reactor.spawned))
        self.assertNotEqual(supervisor.config, broken.config)

    def test_changedProcessStoppedByHandStaysStopped(self) -> None:
        """A changed process that the operator had stopped is replaced but not started."""
        directory = tempfile.mkdtemp(prefix="orch-apply-")
        supervisor, reactor, _, _ = _supervisor(_BEFORE, directory=directory)
        supervisor.startService()
        reactor.advance(1)
        stopping = supervisor.processes["change"].stop()
        _alive(reactor)["change"].exited(0)
        self.successResultOf(stopping)
        new = _load(_AFTER, directory)
        d = supervisor.apply(new.config, new.kinds)
        _alive(reactor)["remove"].exited(0)
        self.successResultOf(d)
        self.assertEqual(supervisor.processes["change"].status, "stopped")
        self.assertEqual(sorted(_name(t) for t in reactor.spawned if t.alive), ["add", "keep"])


class ReloadTests(SynchronousTestCase):
    """
    Orchestrator.reload: re-read the file, apply by diff, or keep the old
    configuration when the new one is invalid.
    """

    def setUp(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="orch-reload-")
        self.path = writeConfig(_BEFORE, self.directory)
        load = lambda: loadConfig(self.path, envFile=os.devnull, environ={}, entryPoints=False)
        self.reactor = FakeProcessReactor()
        self.orchestrator = makeOrchestrator(load(), self.reactor,
                                             reload=load,
                                             environ={"PATH": "/bin"})
        self.orchestrator.startService()
        self.reactor.advance(1)
        self.logs: list[dict] = []
        globalLogPublisher.addObserver(self.logs.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.logs.append)

    def test_reloadAppliesTheEditedFile(self) -> None:
        """After the file is edited, reload adds, removes and restarts processes; the unchanged keeps its pid."""
        keepPid = self.orchestrator.process("keep").pid
        old = _alive(self.reactor)
        writeConfig(_AFTER, self.directory)
        d = self.orchestrator.reload()
        old["remove"].exited(0)
        old["change"].exited(0)
        summary = self.successResultOf(d)
        self.assertEqual(summary["added"], ["add"])
        self.assertEqual(sorted(self.orchestrator.processes), ["add", "change", "keep"])
        self.assertEqual(self.orchestrator.process("keep").pid, keepPid)
        self.assertEqual(sorted(_alive(self.reactor)), ["add", "change", "keep"])
        self.assertEqual(self.orchestrator.events.recent[-1].type, "config_reloaded")
        self.assertTrue([e for e in self.logs
                         if "configuration reloaded" in (formatEvent(e) or "")])

    def test_invalidReloadKeepsTheOldConfiguration(self) -> None:
        """A reload of an invalid file fails with every problem, logs them, and changes nothing."""
        pids = {n: p.pid for n, p in self.orchestrator.processes.items()}
        config = self.orchestrator.config
        writeConfig(_AFTER.replace("env: {MODE: new}", "stop: {timeout: -1}"), self.directory)
        failure = self.failureResultOf(self.orchestrator.reload(), ConfigError)
        self.assertIn("processes.change.stop.timeout", "\n".join(failure.value.problems))
        self.assertIs(self.orchestrator.config, config)
        self.assertEqual({n: p.pid for n, p in self.orchestrator.processes.items()}, pids)
        self.assertTrue(all(not t.signals for t in self.reactor.spawned))
        self.assertEqual(self.orchestrator.events.recent[-1].type, "config_rejected")
        rejected = [e for e in self.logs if "reload rejected" in (formatEvent(e) or "")]
        self.assertEqual(len(rejected), len(failure.value.problems))


class LeftoverTests(SynchronousTestCase):
    """
    Supervisor.startService ends a killed predecessor's children before it
    spawns anything.
    """

    def test_leftoversEndedBeforeSpawning(self) -> None:
        """A live child recorded in the state file is ended before the first new child is spawned."""
        leftover = subprocess.Popen(["sleep", "60"], start_new_session=True)
        self.addCleanup(leftover.wait, 10)
        self.addCleanup(lambda: leftover.poll() is None and leftover.kill())
        state = StateFile(os.path.join(tempfile.mkdtemp(prefix="orch-state-"), "children.json"))
        _waitExec(leftover.pid, "sleep")
        state.record("a", leftover.pid)
        supervisor, reactor, _, _ = _supervisor(
            "processes:\n  a: {command: ['{python}', '-c', 'a']}\n",
            stateFile=StateFile(state.path), reapGrace=5)
        supervisor.startService()
        for _ in range(100):  # bounded: about 2 s of real time
            if reactor.spawned:
                break
            time.sleep(0.02)
            reactor.advance(0.05)
        self.assertEqual(leftover.wait(5), -signal.SIGTERM)
        self.assertEqual([_name(t) for t in reactor.spawned], ["a"])


def _waitExec(pid: int, comm: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() == comm:
                    return
        except OSError:
            pass
        time.sleep(0.005)
    raise AssertionError(f"pid {pid} did not exec {comm}")


class StateFileWriteTests(SynchronousTestCase):
    """
    The orphan state file is written off the respawn path, coalesced.
    """

    def recordingStateFile(self, *pids: int):
        """
        A L{StateFile} in a temporary folder (removed after the test) over a
        fake C{/proc} holding C{pids}, and the list each of its writes
        appends the recorded children to.
        """
        directory = tempfile.mkdtemp(prefix="orch-state-")
        self.addCleanup(shutil.rmtree, directory, True)
        proc = os.path.join(directory, "proc")
        for pid in pids:
            os.makedirs(os.path.join(proc, str(pid)))
            with open(os.path.join(proc, str(pid), "stat"), "w") as f:
                f.write(f"{pid} (x) S 1 {pid} " + " ".join(["0"] * 16) + f" {pid * 10} 0 0\n")
        state = StateFile(os.path.join(directory, "children.json"), proc=proc)
        writes: list = []
        original = state.flush
        state.flush = lambda: (writes.append(dict(state._children)), original())[1]
        return state, writes

    def test_childrenStartedTogetherAreWrittenOnce(self) -> None:
        """Processes started together at start-up are written to the state file once, after the last spawn, all of them."""
        import json as _json

        state, writes = self.recordingStateFile(1001, 1002, 1003)
        supervisor, reactor, _, _ = _supervisor(
            "processes:\n" + "".join(f"  {n}:\n    command: ['{{python}}', '-c', '{n}']\n" for n in "abc"),
            stateFile=state)
        supervisor.startService()
        self.assertEqual(len(reactor.spawned), 3)
        self.assertEqual([sorted(w) for w in writes], [[], ["a", "b", "c"]])  # the claim, then one write
        with open(state.path) as f:
            self.assertEqual(sorted(_json.load(f)["children"]), ["a", "b", "c"])
        d = supervisor.stopService()
        for child in reactor.spawned:
            child.exited(0)
        self.successResultOf(d)

    def test_crashAndRestartCoalesceIntoOneWrite(self) -> None:
        """A new child is recorded at once (after it exists); forgetting the crashed one costs no write of its own."""
        import json as _json

        state, writes = self.recordingStateFile(1001, 1002)
        supervisor, reactor, _, _ = _supervisor(
            "processes:\n  a:\n    command: ['{python}', '-c', 'a']\n", stateFile=state)
        supervisor.startService()
        self.assertEqual(len(writes), 2)  # the claim at start-up, then the first child at once
        self.assertEqual(list(writes[1]), ["a"])
        reactor.advance(1)  # ready
        reactor.last.exited(1)  # crash: the first restart after a ready run is immediate
        self.assertEqual(len(reactor.spawned), 2)  # respawned as the exit was handled
        self.assertEqual(len(writes), 3)  # the new child, recorded as soon as it exists
        reactor.advance(Supervisor.stateFileDelay)
        self.assertEqual(len(writes), 3)  # the pending "forget" had nothing left to write
        with open(state.path) as f:
            self.assertEqual(_json.load(f)["children"],
                             {"a": {"pid": 1002, "pgid": 1002, "start_time": 10020}})
        d = supervisor.stopService()
        reactor.last.exited(0)
        self.successResultOf(d)
        with open(state.path) as f:
            self.assertEqual(_json.load(f)["children"], {})
        self.assertEqual(reactor.getDelayedCalls(), [])
