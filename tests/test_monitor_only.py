"""
Monitor-only mode (C{orchestrator.enabled: false}): nothing is spawned, the
status comes from probes alone, and start/stop/restart are refused.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

from orchestrator.errors import ConfigError, StateError
from orchestrator.builtin.probes import HTTPProbe
from tests._memhttp import MemoryHTTP
from tests.fakes import FakeProcessReactor, ScriptedProbe, loadText
from tests.test_health import startOrchestrator

CONFIG = """
    orchestrator: {enabled: false}
    processes:
      backend:
        url: "http://backend.internal:8080"
        health: {interval: 1, timeout: 0.5, failure_threshold: 2}
    """


class MonitorOnlyTests(SynchronousTestCase):
    """
    The backend runs elsewhere; the orchestrator only watches it.
    """

    def setUp(self):
        self.probe = ScriptedProbe()
        self.orchestrator, self.reactor = startOrchestrator(CONFIG, self.probe)
        self.process = self.orchestrator.process("backend")

    def test_nothingSpawned(self):
        """No process is spawned, the pid is None and the status is C{unknown} before any probe."""
        self.assertEqual(self.reactor.spawned, [])
        snapshot = self.process.snapshot()
        self.assertEqual((snapshot.status, snapshot.pid, snapshot.managed), ("unknown", None, False))
        self.assertEqual(self.process.health.snapshot().last_health_check, "unknown")

    def test_runningFromProbe(self):
        """The first successful probe makes the status C{running}."""
        self.reactor.advance(0.01)
        self.probe.answer(True)
        self.assertEqual(self.process.status, "running")
        self.assertIsNone(self.process.pid)
        self.assertEqual(self.process.health.snapshot().last_health_check, "healthy")

    def test_unhealthyFromProbes(self):
        """C{failure_threshold} failures make it C{unhealthy}; recovery makes it C{running}; nothing is signalled."""
        events = []
        self.orchestrator.events.subscribe(lambda e: events.append((e.type, e.from_, e.to)))
        self.reactor.advance(0.01)
        self.probe.answer(True)
        self.reactor.advance(1)
        self.probe.answer(False, "Connection refused")
        self.assertEqual(self.process.status, "running")
        self.reactor.advance(1)
        self.probe.answer(False, "Connection refused")
        self.assertEqual(self.process.status, "unhealthy")
        self.reactor.advance(1)
        self.probe.answer(True)
        self.assertEqual(self.process.status, "running")
        self.assertEqual(events, [("running", "unknown", "running"),
                                  ("unhealthy", "running", "unhealthy"),
                                  ("running", "unhealthy", "running")])
        self.assertEqual((self.reactor.spawned, self.reactor.groupKills), ([], []))
        self.assertEqual(self.process.restartCount, 0)

    def test_unhealthyFromStart(self):
        """A backend that never answers goes from C{unknown} to C{unhealthy} after the threshold."""
        self.reactor.advance(0.01)
        self.probe.answer(False, "Connection refused")
        self.assertEqual(self.process.status, "unknown")
        self.reactor.advance(0.02)
        self.probe.answer(False, "Connection refused")
        self.assertEqual(self.process.status, "unhealthy")
        self.assertEqual(self.process.health.snapshot().last_health_check, "unhealthy")

    def test_commandsRefused(self):
        """start, stop and restart fail with StateError saying the process is managed elsewhere."""
        for command in (self.process.start, self.process.stop, self.process.restart):
            failure = self.failureResultOf(command(), StateError)
            message = failure.getErrorMessage()
            self.assertIn("monitor-only", message)
            self.assertIn("managed elsewhere", message)
        self.assertEqual(self.reactor.spawned, [])

    def test_seedHealthSaysNoAutoRestart(self):
        """The seed's health answer reports auto_restart false: monitor-only restarts nothing."""
        from orchestrator.web.views import seedHealth

        health = seedHealth(self.orchestrator.config, self.process)
        self.assertEqual((health["orchestrator_enabled"], health["auto_restart"]), (False, False))

    def test_shutdownStopsProbing(self):
        """stopService stops probing and leaves nothing scheduled."""
        self.reactor.advance(0.01)
        self.probe.answer(True)
        self.reactor.advance(1)
        self.successResultOf(self.orchestrator.stopService())
        self.assertEqual(self.reactor.getDelayedCalls(), [])


class MonitorOnlyHTTPTests(SynchronousTestCase):
    """
    Monitor-only with the real http probe against C{url}.
    """

    def test_probesURL(self):
        """The http probe requests the configured url's health path and sets the status."""
        class Health(Resource):
            isLeaf = True
            code = 200
            seen: list = []

            def render_GET(self, request):
                self.seen.append(request.getHeader(b"host"))
                request.setResponseCode(self.code)
                return b'{"status": "ok"}'

        health = Health()
        root = Resource()
        root.putChild(b"health", health)
        stub = MemoryHTTP(root)
        reactor = FakeProcessReactor()
        orchestrator, _ = startOrchestrator(
            CONFIG, probeFactory=lambda config: HTTPProbe(config, reactor, connect=stub.connect), reactor=reactor)
        process = orchestrator.process("backend")
        reactor.advance(0.01)
        stub.flush()
        self.assertEqual(process.status, "running")
        self.assertEqual(health.seen, [b"backend.internal:8080"])
        health.code = 503
        for _ in range(2):
            reactor.advance(1)
            stub.flush()
        self.assertEqual(process.status, "unhealthy")
        self.assertEqual(len(stub.connections), 1)  # one kept-alive connection for every probe
        self.assertEqual(process.health.snapshot().last.reason, "HTTP 503")


class MonitorOnlyConfigTests(SynchronousTestCase):
    """
    How monitor-only mode is selected and what it requires.
    """

    def test_seedVariable(self):
        """ORCHESTRATOR_ENABLED=false selects monitor-only mode."""
        text = CONFIG.replace("orchestrator: {enabled: false}", "")
        loaded = loadText(text, environ={"ORCHESTRATOR_ENABLED": "false"})
        self.assertFalse(loaded.config.enabled)
        self.assertEqual(loaded.config.processes["backend"].health.probe, "http")

    def test_needsURL(self):
        """Without a url there is nothing to probe: a configuration error."""
        text = """
            orchestrator: {enabled: false}
            processes:
              backend: {}
            """
        with self.assertRaises(ConfigError) as e:
            loadText(text)
        self.assertIn("monitor-only mode (orchestrator.enabled: false) needs a url to probe", str(e.exception))
