"""
Reload applies the smallest change: for every field of a process, whether a
reload applies it to the running child in place (same pid, counters and
health history kept) or replaces the child; counters stay monotonic across
many reloads; the child's environment is computed afresh for every spawn.

Fake process reactor and clock; no sleeps.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import shutil
import signal
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from orchestrator.config.load import loadConfig
from orchestrator.config.types import ProcessConfig
from orchestrator.health.results import ProbeResult
from orchestrator.notify.events import EventBus
from orchestrator.supervision.supervisor import Supervisor
from tests.fakes import EXECUTABLE, FakeProcessReactor, ScriptedProbe, resultOf


def _base(directory: str) -> dict:
    """
    A configuration that sets every process key explicitly, so each can be
    changed on its own.
    """
    workdir = os.path.join(directory, "work")
    os.makedirs(workdir, exist_ok=True)
    return {
        "processes": {
            "db": {"command": [EXECUTABLE, "-c", "db"], "start": {"ready_after": 1}},
            "backend": {
                "command": [EXECUTABLE, "-c", "backend"],
                "url": "http://127.0.0.1:3000",
                "working_dir": workdir,
                "env": {"MODE": "one"},
                "inherit_env": True,
                "env_from_dotenv": [],
                "depends_on": ["db"],
                "autostart": True,
                "start": {"ready_after": 1},
                "stop": {"signal": "TERM", "timeout": 10},
                "restart": {"policy": "backoff", "auto": True, "max_attempts": 3, "delay": 2,
                            "reset_after": 60, "success_exit_codes": [0],
                            "backoff": {"initial": 0.5, "factor": 2, "max": 30}},
                "health": {"probe": "http", "path": "/health", "interval": 30, "timeout": 5,
                           "failure_threshold": 3, "success_threshold": 1, "start_period": 0,
                           "start_interval": 1, "start_timeout": 60,
                           "restart_on_unhealthy": True, "history": 20},
                "log": {"file": None, "max_bytes": 1048576, "backups": 5, "lines": 1000,
                        "max_line_bytes": 16384, "echo": False},
            },
        },
    }


def _otherDir(directory: str) -> str:
    other = os.path.join(directory, "other")
    os.makedirs(other, exist_ok=True)
    return other


#: (key path in the YAML, new value, outcome, field reported).  A callable
#: value gets the test's folder.
MATRIX = [
    (("command",), [EXECUTABLE, "-c", "backend", "v2"], "replaced", "command"),
    (("working_dir",), _otherDir, "replaced", "working_dir"),
    (("env",), {"MODE": "two"}, "replaced", "env"),
    (("inherit_env",), False, "replaced", "inherit_env"),
    (("env_from_dotenv",), ["DB_URL"], "replaced", "env_from_dotenv"),
    (("url",), "http://127.0.0.1:3001", "updated", "url"),
    (("depends_on",), [], "updated", "depends_on"),
    (("groups",), ["web", "api"], "updated", "groups"),
    (("autostart",), False, "updated", "autostart"),
    (("start", "ready_after"), 2, "updated", "ready_after"),
    (("stop", "signal"), "INT", "updated", "stop.signal"),
    (("stop", "timeout"), 3, "updated", "stop.timeout"),
    (("restart",), {"policy": "always", "max_attempts": 3, "delay": 2, "reset_after": 60},
     "updated", "restart.policy"),
    (("restart", "auto"), False, "updated", "restart.auto"),
    (("restart", "max_attempts"), 7, "updated", "restart.max_attempts"),
    (("restart", "delay"), 1, "updated", "restart.delay"),
    (("restart", "reset_after"), 30, "updated", "restart.reset_after"),
    (("restart", "success_exit_codes"), [0, 3], "updated", "restart.success_exit_codes"),
    (("restart", "backoff", "max"), 10, "updated", "restart.options"),
    (("health",), {"probe": "tcp", "interval": 30}, "updated", "health.probe"),
    (("health", "path"), "/ready", "updated", "health.options"),
    (("health", "interval"), 5, "updated", "health.interval"),
    (("health", "timeout"), 2, "updated", "health.timeout"),
    (("health", "failure_threshold"), 5, "updated", "health.failure_threshold"),
    (("health", "success_threshold"), 2, "updated", "health.success_threshold"),
    (("health", "start_period"), 3, "updated", "health.start_period"),
    (("health", "start_interval"), 0.5, "updated", "health.start_interval"),
    (("health", "start_timeout"), 30, "updated", "health.start_timeout"),
    (("health", "restart_on_unhealthy"), False, "updated", "health.restart_on_unhealthy"),
    (("health", "history"), 50, "updated", "health.history"),
    (("log", "file"), lambda d: os.path.join(d, "logs", "backend.log"), "updated", "output.file"),
    (("log", "max_bytes"), 2048, "updated", "output.max_bytes"),
    (("log", "backups"), 2, "updated", "output.backups"),
    (("log", "lines"), 10, "updated", "output.lines"),
    (("log", "max_line_bytes"), 1024, "updated", "output.max_line_bytes"),
    (("log", "echo"), True, "updated", "output.echo"),
    (("log", "stdout"), lambda d: os.path.join(d, "logs", "backend.out"), "updated", "output.stdout"),
    (("log", "stderr"), lambda d: os.path.join(d, "logs", "backend.err"), "updated", "output.stderr"),
    (("depends_on",), {"db": {"condition": "started"}}, "updated", "depends_on"),
    (("max_memory",), "512MiB", "updated", "max_memory"),
    (("memory_check_interval",), 2, "updated", "memory_check_interval"),
    (("port",), 3000, "replaced", "port"),
    (("umask",), "027", "replaced", "umask"),
    (("rlimits",), {"nofile": 1024}, "replaced", "rlimits"),
    # Need root (the configuration refuses them otherwise): skipped below when not.
    (("user",), "nobody", "replaced", "user"),
    (("group",), "nogroup", "replaced", "group"),
]

#: Fields a process-by-process reload cannot show on one process: each
#: instance of a replicated process is its own process (ReplicaReloadTests).
INSTANCE_FIELDS = {"replicas"}


class _World:
    """
    A supervisor on a fake reactor whose configuration file the test
    rewrites, with probes that answer healthy at once.
    """

    def __init__(self, testCase, environ=None, mutate=None) -> None:
        self.directory = tempfile.mkdtemp(prefix="orch-matrix-")
        testCase.addCleanup(shutil.rmtree, self.directory, True)
        self.document = _base(self.directory)
        if mutate:
            mutate(self.document)
        self.reactor = FakeProcessReactor()
        self.bus = EventBus(self.reactor)
        self.probes: list[ScriptedProbe] = []
        loaded = self.load()
        self.supervisor = Supervisor(
            loaded.config, loaded.kinds, self.reactor, self.reactor.spawner, self.bus,
            environ=dict(environ or {"PATH": "/usr/bin:/bin"}), killGroup=self.reactor.killGroup,
            random=lambda: 0.5, probeFactory=self._probe)

    def _probe(self, health):
        probe = ScriptedProbe(auto=True)
        probe.health = health
        self.probes.append(probe)
        return probe

    def load(self, document=None):
        path = os.path.join(self.directory, "orchestrator.yaml")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(document or self.document, f)  # JSON is YAML
        return loadConfig(path, envFile=os.devnull, environ={}, entryPoints=False)

    def start(self) -> None:
        self.supervisor.startService()
        self.reactor.advance(1)      # db ready
        self.reactor.advance(0.125)  # backend's first quick probe: ready
        assert self.backend.status == "running", self.backend.status

    @property
    def backend(self):
        return self.supervisor.processes["backend"]

    def child(self, name: str = "backend"):
        alive = [t for t in self.reactor.spawned if t.alive and t.args[2] == name]
        return alive[-1] if alive else None

    def reload(self, document):
        """
        Apply C{document}; a child that is asked to stop exits at once.
        """
        loaded = self.load(document)
        before = [t for t in self.reactor.spawned if t.alive]
        d = self.supervisor.apply(loaded.config, loaded.kinds)
        for _ in range(len(before)):  # dependents stop first, then their dependencies
            for transport in before:
                if transport.alive and transport.signals:
                    transport.exited(0)
        summary = resultOf(d)
        self.document = document
        return summary



def _set(document: dict, path: tuple, value) -> dict:
    document = copy.deepcopy(document)
    block = document["processes"]["backend"]
    for key in path[:-1]:
        block = block.setdefault(key, {})
    block[path[-1]] = value
    return document


class ReloadMatrixTests(SynchronousTestCase):
    """
    Every field of a process: applied in place, or a new child.
    """

    def test_everyFieldIsClassified(self) -> None:
        """The matrix covers every field of ProcessConfig, so a new field cannot go untested."""
        covered = {field.split(".")[0] for *_, field in MATRIX}
        fields = {f.name for f in dataclasses.fields(ProcessConfig) if f.compare} - {"name"}
        self.assertEqual(fields - covered - INSTANCE_FIELDS, set())

    def test_eachFieldInPlaceOrReplaced(self) -> None:
        """For each field, a reload reports it, keeps the pid for policy and spawns a new child for the child's definition."""
        for path, value, outcome, field in MATRIX:
            if path[0] in ("user", "group") and os.geteuid() != 0:
                continue  # a configuration error when not root (ConfigTests in test_toolbox)
            with self.subTest(field=field):
                world = _World(self)
                world.start()
                old = world.child()
                pid = world.backend.pid
                process = world.backend
                if callable(value):
                    value = value(world.directory)
                summary = world.reload(_set(world.document, path, value))
                change = summary["processes"]["backend"]
                self.assertEqual(change.outcome, outcome, change)
                self.assertIn(field, change.fields)
                self.assertEqual(summary["processes"]["db"].outcome, "unchanged")
                if outcome == "updated":
                    self.assertIs(world.backend, process)
                    self.assertEqual(world.backend.pid, pid)
                    self.assertTrue(old.alive)
                    self.assertEqual(old.signals, [])
                    self.assertEqual(summary["updated"], ["backend"])
                    self.assertEqual(_field(world.backend.config, field),
                                     _field(world.supervisor.config.processes["backend"], field))
                else:
                    self.assertFalse(old.alive)
                    self.assertEqual(old.signals, [signal.SIGTERM])
                    self.assertEqual(summary["replaced"], ["backend"])
                    self.assertIsNot(world.backend, process)
                    self.assertNotEqual(world.child().pid, pid)
                self.assertEqual(world.child("db").signals, [])

    def test_unchangedReloadTouchesNothing(self) -> None:
        """Reloading the same file reports every process unchanged and sends no signal."""
        world = _World(self)
        world.start()
        summary = world.reload(world.document)
        self.assertEqual({n: c.describe() for n, c in summary["processes"].items()},
                         {"db": "unchanged", "backend": "unchanged"})
        self.assertTrue(all(not t.signals for t in world.reactor.spawned))


def _field(config, dotted: str):
    value = config
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


class InPlaceBehaviourTests(SynchronousTestCase):
    """
    What an in-place update changes on the running child.
    """

    def test_shorterIntervalReschedulesTheNextProbe(self) -> None:
        """health.interval 30 -> 5 probes the same child 5 s after the last probe, not 30 s; history is kept."""
        world = _World(self)
        world.start()
        world.reactor.advance(30)  # steady probes (at a random phase of the interval)
        monitor = world.backend.health
        world.reload(_set(world.document, ("health", "interval"), 5))
        world.reactor.advance(0)  # a slot already past under the new interval is probed now
        total = monitor.total
        self.assertIs(world.backend.health, monitor)
        for i in range(1, 4):
            world.reactor.advance(5)
            self.assertEqual(monitor.total, total + i)
        self.assertEqual(monitor.snapshot().results[0].healthy, True)

    def test_probeOptionsSwapTheProbeKeepTheHistory(self) -> None:
        """health.path changed: the next probes go to a probe built for the new path, on the same monitor and child."""
        world = _World(self)
        world.start()
        world.reactor.advance(30)
        monitor, old = world.backend.health, world.probes[-1]
        total, checks = monitor.total, old.checks
        world.reload(_set(world.document, ("health", "path"), "/ready"))
        new = world.probes[-1]
        self.assertIsNot(new, old)
        self.assertEqual(new.health.options["path"], "/ready")
        world.reactor.advance(30)
        self.assertEqual((old.checks, new.checks), (checks, 1))
        self.assertIs(world.backend.health, monitor)
        self.assertEqual(monitor.total, total + 1)

    def test_newBudgetAppliesToTheNextDecision(self) -> None:
        """restart.max_attempts raised in place lets a crash loop go on past the old cap, on the same counters."""
        world = _World(self, mutate=lambda d: d["processes"]["backend"].update(
            health={"probe": "none"}))
        world.supervisor.startService()
        world.reactor.advance(2)
        world.reload(_set(world.document, ("restart", "max_attempts"), 5))
        for _ in range(5):
            world.child().exited(1)
            world.reactor.advance(60)
        self.assertFalse(world.backend.gaveUp)
        self.assertEqual(world.backend.snapshot().max_attempts, 5)
        self.assertEqual(world.backend.restartsByReason["crash"], 5)

    def test_gaveUpProcessGetsANewBudget(self) -> None:
        """A reload that changes the restart settings of a process that gave up starts it again; its counters go on."""
        world = _World(self, mutate=lambda d: d["processes"]["backend"].update(
            health={"probe": "none"}))
        world.supervisor.startService()
        world.reactor.advance(2)
        for _ in range(4):
            world.child().exited(1)
            world.reactor.advance(60)
        self.assertTrue(world.backend.gaveUp)
        restarts = world.backend.restartCount
        summary = world.reload(_set(world.document, ("restart", "max_attempts"), 10))
        self.assertEqual(summary["processes"]["backend"].outcome, "updated")
        self.assertFalse(world.backend.gaveUp)
        self.assertEqual(world.backend.status, "starting")
        self.assertEqual(world.backend.restartCount, restarts)

    def test_autoOffCancelsThePendingRestart(self) -> None:
        """Turning restart.auto off while a restart is pending cancels it: the crashed process stays down."""
        world = _World(self)
        world.start()
        world.child().exited(1)
        world.reactor.advance(0)   # the immediate first restart
        world.child().exited(1)    # second crash: a backoff pause is pending
        self.assertIsNotNone(world.backend.snapshot().next_restart_in)
        world.reload(_set(world.document, ("restart", "auto"), False))
        world.reactor.advance(60)
        self.assertEqual(world.backend.status, "crashed")
        self.assertIsNone(world.child())

    def test_probeAddedToARunningProcess(self) -> None:
        """A reload that gives a running process a probe starts probing the same child at once."""
        world = _World(self, mutate=lambda d: d["processes"]["backend"].update(
            health={"probe": "none"}))
        world.supervisor.startService()
        world.reactor.advance(2)
        pid = world.backend.pid
        self.assertIsNone(world.backend.health)
        world.reload(_set(world.document, ("health",), _base(world.directory)
                          ["processes"]["backend"]["health"]))
        world.reactor.advance(0.125)
        self.assertEqual(world.backend.pid, pid)
        self.assertEqual(world.backend.health.total, 1)
        self.assertEqual(world.backend.status, "running")

    def test_outputSettingsKeepTheLines(self) -> None:
        """A new log.lines keeps the lines already captured and captures the same child's next ones."""
        world = _World(self)
        world.start()
        world.child().output(b"one\ntwo\n")
        world.reload(_set(world.document, ("log", "lines"), 10))
        world.child().output(b"three\n")
        self.assertEqual([line.text for line in world.backend.output.tail(10)],
                         ["one", "two", "three"])

    def test_brokenOutputFileRejectsTheReload(self) -> None:
        """An in-place update whose log file cannot be opened rejects the whole reload; nothing changes."""
        from orchestrator.errors import ConfigError

        world = _World(self)
        world.start()
        blocker = os.path.join(world.directory, "blocked")
        document = _set(world.document, ("log", "file"), os.path.join(blocker, "x.log"))
        loaded = world.load(document)
        with open(blocker, "w") as f:  # a file where the folder should be
            f.write("x")
        config = world.supervisor.config
        failure = self.failureResultOf(world.supervisor.apply(loaded.config, loaded.kinds))
        failure.trap(ConfigError)
        self.assertIs(world.supervisor.config, config)
        self.assertIsNone(world.backend.config.output.file)


class MonitorReconfigureTests(SynchronousTestCase):
    """
    HealthMonitor.reconfigure with a probe in flight under the probe cap.
    """

    def test_swappedProbeInFlightGivesItsSlotBack(self) -> None:
        """A probe in flight when its probe object is replaced is cancelled, its slot under the cap freed, and the next check goes to the new probe one new interval later."""
        from dataclasses import replace
        from twisted.internet.task import Clock

        from orchestrator.config.types import HealthConfig
        from orchestrator.health.monitor import HealthMonitor, ProbeGate

        class _Process:
            name = "backend"

            def healthReady(self):
                pass

            def healthFailed(self, reason):
                pass

        clock, gate = Clock(), ProbeGate(limit=1)
        health = HealthConfig(probe="scripted", interval=30, start_timeout=0)
        old, new = ScriptedProbe(), ScriptedProbe(auto=True)
        monitor = HealthMonitor(_Process(), health, old, clock, gate=gate)
        monitor.resume()
        clock.advance(0.01)
        self.assertEqual((len(old.pending), gate.inFlight), (1, 1))
        monitor.reconfigure(replace(health, interval=10), new)
        self.assertEqual(gate.inFlight, 0)
        clock.advance(9.99)
        self.assertEqual(new.checks, 0)
        clock.advance(0.01)
        self.assertEqual((new.checks, monitor.total, gate.inFlight), (1, 1, 0))
        monitor.stop()
        self.assertEqual(clock.getDelayedCalls(), [])


class CounterTests(SynchronousTestCase):
    """
    Counters are per process name and never go back.
    """

    def test_countersMonotonicAcrossTenReloads(self) -> None:
        """Ten reloads, alternately in place and replacing, each after a crash: every counter only grows and restart_count equals the sum by reason."""
        world = _World(self)
        world.start()
        seen = []
        for i in range(10):
            world.child().exited(1)
            world.reactor.advance(1)       # restarted
            world.reactor.advance(0.125)   # ready again
            if i % 2:
                document = _set(world.document, ("health", "interval"), 10 + i)
            else:
                document = _set(world.document, ("env",), {"MODE": f"run{i}"})
            summary = world.reload(document)
            self.assertEqual(summary["processes"]["backend"].outcome,
                             "updated" if i % 2 else "replaced")
            world.reactor.advance(0.125)
            backend = world.backend
            seen.append((backend.restartCount, sum(backend.restartsByReason.values()),
                         backend.exitCounts[True], backend.exitCounts[False]))
        for before, after in zip(seen, seen[1:]):
            self.assertTrue(all(b <= a for b, a in zip(before, after)), (before, after))
        restarts, byReason, clean, unclean = seen[-1]
        self.assertEqual(restarts, byReason)
        self.assertEqual(unclean, 10)
        self.assertEqual(clean, 5)  # the five replacements stopped the old child cleanly
        self.assertEqual(world.backend.restartsByReason["crash"], 10)

    def test_probeLimitHitsSurviveAReplacement(self) -> None:
        """Probe answers that hit a bound stay counted after a reload replaces the process and its monitor."""
        world = _World(self)
        world.start()
        world.probes[-1].autoResult = ProbeResult(True, "HTTP 200", limit="body_bytes")
        world.reactor.advance(world.backend.config.health.interval)
        hits = dict(world.backend.health.limitHits)
        self.assertGreaterEqual(hits.get("body_bytes", 0), 1)
        summary = world.reload(_set(world.document, ("env",), {"MODE": "new"}))
        self.assertEqual(summary["processes"]["backend"].outcome, "replaced")
        world.reactor.advance(0.125)
        self.assertEqual(world.backend.health.limitHits, hits)

    def test_removedAndReaddedNameGoesOn(self) -> None:
        """A process removed by one reload and added back by another continues its counters."""
        world = _World(self)
        world.start()
        world.child().exited(1)
        world.reactor.advance(1)
        before = dict(world.backend.restartsByReason)
        full = world.document
        without = copy.deepcopy(full)
        del without["processes"]["backend"]
        world.reload(without)
        self.assertNotIn("backend", world.supervisor.processes)
        world.reload(full)
        self.assertEqual(world.backend.restartsByReason, before)


class EnvironmentPerSpawnTests(SynchronousTestCase):
    """
    The child's environment is computed for each spawn from the current
    configuration.
    """

    def test_secretDeclaredByAReloadReachesNoChild(self) -> None:
        """A reload that declares a webhook secret_env replaces a child that inherited it; no later child gets it."""
        world = _World(self, environ={"PATH": "/bin", "HOOK_SECRET": "hmac-key"})
        world.start()
        self.assertEqual(world.child().env.get("HOOK_SECRET"), "hmac-key")
        document = copy.deepcopy(world.document)
        document["notifiers"] = [{"type": "webhook", "url": "http://127.0.0.1:9/hook",
                                  "secret_env": "HOOK_SECRET"}]
        summary = world.reload(document)
        self.assertEqual(summary["processes"]["backend"].describe(), "replaced (environment)")
        world.reactor.advance(1)  # db (replaced too) ready, then backend spawned
        self.assertNotIn("HOOK_SECRET", world.child().env)
        world.child().exited(1)
        world.reactor.advance(1)
        self.assertNotIn("HOOK_SECRET", world.child().env)
        self.assertNotIn("HOOK_SECRET", world.child("db").env)
        self.assertTrue(all("HOOK_SECRET" not in p.health.env for p in world.probes[-1:]))


class ReplicaReloadTests(SynchronousTestCase):
    """
    C{replicas} changed by a reload adds or removes only the instances concerned.
    """

    def _world(self, replicas: int) -> _World:
        def mutate(document):
            document["processes"]["worker"] = {"command": [EXECUTABLE, "-c", "worker-{replica}"],
                                               "replicas": replicas, "start": {"ready_after": 1}}
        world = _World(self, mutate=mutate)
        world.start()
        return world

    def _document(self, world: _World, replicas: int) -> dict:
        document = copy.deepcopy(world.document)
        document["processes"]["worker"]["replicas"] = replicas
        return document

    def test_scalingUpAddsOnlyNewInstances(self) -> None:
        """replicas 2 -> 3 starts worker-2 and leaves worker-0 and worker-1 running with the same pids."""
        world = self._world(2)
        pids = {n: world.supervisor.processes[n].pid for n in ("worker-0", "worker-1")}
        summary = world.reload(self._document(world, 3))
        self.assertEqual(summary["added"], ["worker-2"])
        self.assertEqual(summary["removed"], [])
        self.assertEqual(summary["processes"]["worker-0"].outcome, "updated")
        for name, pid in pids.items():
            self.assertEqual(world.supervisor.processes[name].pid, pid)
        self.assertEqual(world.child("worker-2").args, [EXECUTABLE, "-c", "worker-2"])

    def test_scalingDownRemovesOnlyTheLastInstances(self) -> None:
        """replicas 3 -> 1 stops worker-1 and worker-2; worker-0 keeps its child."""
        world = self._world(3)
        pid = world.supervisor.processes["worker-0"].pid
        summary = world.reload(self._document(world, 1))
        self.assertEqual(sorted(summary["removed"]), ["worker-1", "worker-2"])
        self.assertEqual(summary["added"], [])
        self.assertEqual(world.supervisor.processes["worker-0"].pid, pid)
        self.assertNotIn("worker-2", world.supervisor.processes)
