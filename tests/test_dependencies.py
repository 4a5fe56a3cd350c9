"""
C{depends_on}: a process starts only once its dependencies are running
(healthy), is stopped before them, and a dependency cycle is a
configuration error.
"""

from __future__ import annotations

import signal

from twisted.trial.unittest import SynchronousTestCase

from orchestrator.errors import ConfigError
from tests.fakes import ScriptedProbe, loadText
from tests.test_health import startOrchestrator

# "api" is listed first: the order comes from depends_on, not from the file.
CONFIG = """
    processes:
      api:
        command: ["{python}", "-c", "api"]
        url: "http://127.0.0.1:3000"
        depends_on: [db]
        health: {interval: 1, start_timeout: 0}
      db:
        command: ["{python}", "-c", "db"]
        url: "http://127.0.0.1:5432"
        health: {interval: 1, start_timeout: 0}
    """


def spawnedNames(reactor) -> list[str]:
    return [transport.args[-1] for transport in reactor.spawned]


def byName(reactor, name: str):
    return next(t for t in reactor.spawned if t.args[-1] == name)


class StartOrderTests(SynchronousTestCase):
    """
    Dependents wait for their dependencies to be running.
    """

    def setUp(self):
        self.probes = {"api": ScriptedProbe(), "db": ScriptedProbe()}

    def test_dependentWaitsForRunning(self):
        """B (api) depending on A (db) is spawned only once A is C{running}, not when A is spawned."""
        orchestrator, reactor = startOrchestrator(CONFIG, probes=self.probes)
        self.assertEqual(spawnedNames(reactor), ["db"])
        self.assertEqual(orchestrator.process("api").status, "stopped")
        reactor.advance(0.01)
        self.probes["db"].answer(False, "Connection refused")
        for _ in range(20):
            reactor.advance(0.5)
            if self.probes["db"].pending:
                self.probes["db"].answer(False, "Connection refused")
        self.assertEqual(orchestrator.process("db").status, "starting")
        self.assertEqual(spawnedNames(reactor), ["db"])
        reactor.advance(1)
        self.probes["db"].answer(True)
        self.assertEqual(orchestrator.process("db").status, "running")
        self.assertEqual(spawnedNames(reactor), ["db", "api"])
        self.assertEqual(orchestrator.process("api").status, "starting")

    def test_chain(self):
        """A chain web -> api -> db starts one link at a time, each once the previous is running."""
        text = CONFIG + """
      web:
        command: ["{python}", "-c", "web"]
        url: "http://127.0.0.1:8080"
        depends_on: [api]
        health: {interval: 1, start_timeout: 0}
    """
        self.probes["web"] = ScriptedProbe()
        orchestrator, reactor = startOrchestrator(text, probes=self.probes)
        for name, expected in (("db", ["db", "api"]), ("api", ["db", "api", "web"])):
            reactor.advance(0.01)
            self.probes[name].answer(True)
            self.assertEqual(spawnedNames(reactor), expected)
        reactor.advance(0.01)
        self.probes["web"].answer(True)
        self.assertEqual({n: p.status for n, p in orchestrator.processes.items()},
                         {"api": "running", "db": "running", "web": "running"})

    def test_severalDependencies(self):
        """A process depending on two others waits for both."""
        text = CONFIG.replace("depends_on: [db]", "depends_on: [db, cache]") + """
      cache:
        command: ["{python}", "-c", "cache"]
        url: "http://127.0.0.1:6379"
        health: {interval: 1, start_timeout: 0}
    """
        self.probes["cache"] = ScriptedProbe()
        orchestrator, reactor = startOrchestrator(text, probes=self.probes)
        self.assertEqual(sorted(spawnedNames(reactor)), ["cache", "db"])
        reactor.advance(0.01)
        self.probes["db"].answer(True)
        self.assertNotIn("api", spawnedNames(reactor))
        self.probes["cache"].answer(True)
        self.assertEqual(spawnedNames(reactor)[-1], "api")

    def test_dependencyWithoutProbe(self):
        """A dependency without a probe counts as running after C{start.ready_after}."""
        text = CONFIG.replace('url: "http://127.0.0.1:5432"', "start: {ready_after: 2}")
        orchestrator, reactor = startOrchestrator(text, probes=self.probes)
        self.assertIsNone(orchestrator.process("db").health)
        reactor.advance(1.99)
        self.assertEqual(spawnedNames(reactor), ["db"])
        reactor.advance(0.01)
        self.assertEqual(spawnedNames(reactor), ["db", "api"])


class StopOrderTests(SynchronousTestCase):
    """
    Dependents are stopped before their dependencies.
    """

    def test_stopServiceDependentsFirst(self):
        """stopService stops B (api) and waits until it is gone before stopping A (db)."""
        probes = {"api": ScriptedProbe(auto=True), "db": ScriptedProbe(auto=True)}
        orchestrator, reactor = startOrchestrator(CONFIG, probes=probes)
        reactor.advance(0.01)
        reactor.advance(0.01)
        api, db = byName(reactor, "api"), byName(reactor, "db")
        self.assertEqual({n: p.status for n, p in orchestrator.processes.items()},
                         {"api": "running", "db": "running"})
        d = orchestrator.stopService()
        self.assertEqual((api.signals, db.signals), ([signal.SIGTERM], []))
        reactor.advance(3)
        self.assertEqual(db.signals, [])
        api.exited(0)
        self.assertEqual(db.signals, [signal.SIGTERM])
        self.assertNoResult(d)
        db.exited(0)
        self.successResultOf(d)
        self.assertEqual(reactor.getDelayedCalls(), [])

    def test_stopServiceWhileDependentWaits(self):
        """Stopping while a dependent still waits for its dependency never starts the dependent."""
        probes = {"api": ScriptedProbe(), "db": ScriptedProbe()}
        orchestrator, reactor = startOrchestrator(CONFIG, probes=probes)
        reactor.advance(0.01)
        d = orchestrator.stopService()
        byName(reactor, "db").exited(0)
        self.successResultOf(d)
        self.assertEqual(spawnedNames(reactor), ["db"])


class CycleTests(SynchronousTestCase):
    """
    Bad dependency graphs are configuration errors.
    """

    def problems(self, text: str) -> str:
        with self.assertRaises(ConfigError) as e:
            loadText(text)
        return str(e.exception)

    def test_cycleRejected(self):
        """A cycle a -> b -> a is rejected with the cycle spelled out and located."""
        text = """
            processes:
              a:
                command: ["{python}"]
                depends_on: [b]
              b:
                command: ["{python}"]
                depends_on: [a]
            """
        message = self.problems(text)
        self.assertIn("dependency cycle: a -> b -> a", message)
        self.assertRegex(message, r"orchestrator\.yaml:\d+:\d+: processes\.a\.depends_on: dependency cycle")

    def test_longCycleRejected(self):
        """A longer cycle through three processes is rejected too."""
        text = """
            processes:
              a: {command: ["{python}"], depends_on: [c]}
              b: {command: ["{python}"], depends_on: [a]}
              c: {command: ["{python}"], depends_on: [b]}
            """
        self.assertIn("dependency cycle: a -> c -> b -> a", self.problems(text))

    def test_selfDependency(self):
        """A process depending on itself is rejected."""
        text = """
            processes:
              a: {command: ["{python}"], depends_on: [a]}
            """
        self.assertIn("processes.a.depends_on[0]: a process cannot depend on itself", self.problems(text))

    def test_unknownDependency(self):
        """Depending on a process that is not configured is rejected."""
        text = """
            processes:
              a: {command: ["{python}"], depends_on: [nope]}
            """
        self.assertIn("processes.a.depends_on[0]: unknown process 'nope'", self.problems(text))

    def test_acyclicAccepted(self):
        """A diamond (d on b and c, both on a) is not a cycle."""
        text = """
            processes:
              a: {command: ["{python}"]}
              b: {command: ["{python}"], depends_on: [a]}
              c: {command: ["{python}"], depends_on: [a]}
              d: {command: ["{python}"], depends_on: [b, c]}
            """
        loaded = loadText(text)
        self.assertEqual(dict(loaded.config.processes["d"].depends_on), {"b": "running", "c": "running"})
