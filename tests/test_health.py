"""
Health scheduling and what probe results do to a process: readiness,
thresholds, start period and start timeout, non-overlap, unhealthy
restarts, give-up, statistics and log lines.

Everything runs on a fake process reactor and a scripted probe (or the
real http probe over an in-memory L{tests._memhttp.MemoryHTTP}); time moves only with
C{Clock.advance}.
"""

from __future__ import annotations

import signal

from twisted.internet.defer import Deferred, succeed
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from orchestrator.health.results import ProbeResult
from orchestrator.builtin.probes import HTTPProbe
from tests._memhttp import MemoryHTTP
from tests.fakes import FakeProcessReactor, ScriptedProbe, loadText, makeOrchestrator

CONFIG = """
    processes:
      backend:
        command: ["{python}", "-c", "pass"]
        url: "http://127.0.0.1:3000"
        stop: {timeout: 5}
        restart: {max_attempts: 3, delay: 1, backoff: {initial: 0.5, factor: 2, max: 4}}
        health: {HEALTH}
    """


def config(health: str = "{}", text: str = CONFIG) -> str:
    return text.replace("{HEALTH}", health)


def startOrchestrator(text: str, probe=None, probes=None, reactor=None, probeFactory=None):
    """
    Build and start an L{Orchestrator} on a L{FakeProcessReactor}.

    @param probe: the probe every process gets, or
    @param probes: a mapping of process name to its probe, or
    @param probeFactory: C{probeFactory(healthConfig)} -> probe.
    @return: C{(orchestrator, reactor)}.
    """
    loaded = loadText(text)
    reactor = reactor or FakeProcessReactor()
    factory = probeFactory or (
        (lambda health: probes[health.process]) if probes is not None else (lambda health: probe))
    # Fake pids must never reach os.killpg; random 0: no phase spread, exact times.
    orchestrator = makeOrchestrator(loaded, reactor, probeFactory=factory, random=lambda: 0.0)
    orchestrator.startService()
    return orchestrator, reactor


def captureLog(testCase) -> list[dict]:
    """
    Collect every log event until the test ends.
    """
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    testCase.addCleanup(globalLogPublisher.removeObserver, events.append)
    return events


def healthLines(events) -> list[str]:
    return [formatEvent(e) for e in events
            if e.get("log_namespace") == "orchestrator.health.monitor.HealthMonitor"]


class TimedProbe:
    """
    Answers at once: healthy from C{readyAt} (reactor seconds) on, and
    remembers when each check went out.
    """

    def __init__(self, clock, readyAt: float) -> None:
        self.clock = clock
        self.readyAt = readyAt
        self.times: list[float] = []

    def check(self):
        now = self.clock.seconds()
        self.times.append(now)
        ready = now >= self.readyAt - 1e-9
        return succeed(ProbeResult(ready, "HTTP 200" if ready else "HTTP 503"))


def runUntil(clock, until: float) -> None:
    """
    Advance C{clock} to each delayed call's exact time in turn, up to
    C{until} (small fixed steps would add up rounding errors).
    """
    while True:
        due = [c.getTime() for c in clock.getDelayedCalls() if c.getTime() <= until]
        if not due:
            break
        clock.advance(max(0.0, min(due) - clock.seconds()))
    clock.advance(max(0.0, until - clock.seconds()))


class _Base(SynchronousTestCase):
    def start(self, health: str = "{}", probe=None, text: str = CONFIG):
        self.probe = probe if probe is not None else ScriptedProbe()
        self.orchestrator, self.reactor = startOrchestrator(config(health, text), self.probe)
        self.process = self.orchestrator.process("backend")
        return self.process

    def becomeRunning(self):
        """
        Let the first probe go out and answer it healthy.
        """
        self.reactor.advance(0.01)
        self.probe.answer(True)
        self.assertEqual(self.process.status, "running")

    def failChecks(self, n: int, interval: float = 1.0, reason: str = "HTTP 503"):
        for _ in range(n):
            self.reactor.advance(interval)
            self.probe.answer(False, reason)

    def stopAll(self):
        d = self.orchestrator.stopService()
        for transport in self.reactor.spawned:
            if transport.alive and transport.signals:
                transport.exited(0)
        self.successResultOf(d)
        self.assertEqual(self.reactor.getDelayedCalls(), [])


class ReadinessTests(_Base):
    """
    C{starting} until the probe says ready, polled quickly.
    """

    def test_startingUntilFirstSuccess(self):
        """A spawned process is C{starting} until its first successful probe, then C{running}."""
        process = self.start("{interval: 30}")
        self.assertEqual(process.status, "starting")
        self.assertEqual(self.probe.checks, 0)
        self.reactor.advance(0.01)
        self.assertEqual(self.probe.checks, 1)
        self.probe.answer(False, "Connection refused")
        self.assertEqual(process.status, "starting")
        self.reactor.advance(0.02)
        self.probe.answer(True)
        self.assertEqual(process.status, "running")
        self.assertEqual(process.readyAt, 0.03)

    def test_fastStartPolling(self):
        """The first probe goes out 10 ms after the spawn and the gaps double up to start_interval."""
        reactor = FakeProcessReactor()
        probe = TimedProbe(reactor, readyAt=100)
        startOrchestrator(config("{interval: 30, start_interval: 1, start_timeout: 0}"), probe, reactor=reactor)
        runUntil(reactor, 4)
        gaps = [round(b - a, 6) for a, b in zip(probe.times, probe.times[1:])]
        self.assertAlmostEqual(probe.times[0], 0.01)
        self.assertEqual(gaps[:8], [0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.0, 1.0])

    def test_readyIn80ms(self):
        """A backend ready 80 ms after its spawn is C{running} by 200 ms, not an interval later."""
        reactor = FakeProcessReactor()
        probe = TimedProbe(reactor, readyAt=0.08)
        self.orchestrator, self.reactor = startOrchestrator(config("{interval: 30}"), probe, reactor=reactor)
        process = self.orchestrator.process("backend")
        running = []
        self.orchestrator.events.subscribe(
            lambda e: running.append(reactor.seconds()) if e.type == "running" else None)
        runUntil(reactor, 0.2)
        self.assertEqual(process.status, "running")
        self.assertLessEqual(running[0], 0.2)
        self.assertEqual([round(t, 9) for t in probe.times], [0.01, 0.03, 0.07, 0.15])

    def test_intervalOnceRunning(self):
        """Once running, probes follow C{interval}, measured from each probe's start."""
        self.start("{interval: 5}")
        self.becomeRunning()
        self.reactor.advance(4.99)
        self.assertEqual(self.probe.pending, [])
        self.reactor.advance(0.01)
        self.assertEqual(len(self.probe.pending), 1)
        self.reactor.advance(2)  # a 2 s probe ...
        self.probe.answer(True)
        self.reactor.advance(2.99)  # ... does not push the next one back
        self.assertEqual(self.probe.pending, [])
        self.reactor.advance(0.01)
        self.assertEqual(len(self.probe.pending), 1)

    def test_lateReactorDoesNotStretchTheSchedule(self):
        """A probe that starts late (busy reactor) does not push the following ones back."""
        self.start("{interval: 1}")
        self.becomeRunning()  # probed at 0.01: due again at 1.01, 2.01, ...
        self.reactor.advance(1.5)  # the reactor gets to it 0.49 s late
        self.assertEqual(self.probe.checks, 2)
        self.probe.answer(True)
        self.reactor.advance(0.49)  # t = 1.99
        self.assertEqual(self.probe.checks, 2)
        self.reactor.advance(0.02)  # t = 2.01: on the original schedule
        self.assertEqual(self.probe.checks, 3)

    def test_monitorOnlyPhasesSpread(self):
        """Monitor-only processes start probing at a random phase within start_interval, so they do not align."""
        reactor = FakeProcessReactor()
        probes = {"a": TimedProbe(reactor, readyAt=0), "b": TimedProbe(reactor, readyAt=0)}
        samples = iter([0.25, 0.75])
        loaded = loadText(
            "orchestrator: {enabled: false}\n"
            "processes:\n"
            "  a: {url: 'http://10.1.1.1', health: {interval: 10, start_interval: 2}}\n"
            "  b: {url: 'http://10.1.1.2', health: {interval: 10, start_interval: 2}}\n")
        orchestrator = makeOrchestrator(loaded, reactor,
                                        probeFactory=lambda h: probes[h.process],
                                        random=lambda: next(samples))
        orchestrator.startService()
        runUntil(reactor, 25)
        self.assertEqual([round(t, 6) for t in probes["a"].times], [0.51, 10.51, 20.51])
        self.assertEqual([round(t, 6) for t in probes["b"].times], [1.51, 11.51, 21.51])

    def test_successThreshold(self):
        """With C{success_threshold: 2}, readiness needs two successes in a row."""
        process = self.start("{success_threshold: 2, start_interval: 0.1}")
        self.reactor.advance(0.01)
        self.probe.answer(True)
        self.assertEqual(process.status, "starting")
        self.reactor.advance(0.02)
        self.probe.answer(False)
        self.reactor.advance(0.04)
        self.probe.answer(True)
        self.assertEqual(process.status, "starting")
        self.reactor.advance(0.08)
        self.probe.answer(True)
        self.assertEqual(process.status, "running")

    def test_startWaitsForReady(self):
        """A start with wait fires once the process is ready."""
        process = self.start("{}", text=CONFIG.replace("command:", "autostart: false\n        command:"))
        d = process.start()
        self.assertNoResult(d)
        self.reactor.advance(0.01)
        self.probe.answer(True)
        self.assertEqual(self.successResultOf(d).status, "running")


class StartTimeoutTests(_Base):
    """
    A process never ready within C{start_timeout} failed to start.
    """

    def test_startTimeout(self):
        """At start_timeout a never-ready process is stopped and counted like a crash, then restarted."""
        process = self.start("{start_timeout: 2, start_interval: 0.5}", ScriptedProbe(auto=False))
        first = self.reactor.last
        waiter = Deferred()
        self.orchestrator.events.subscribe(lambda e: e.type == "crashed" and waiter.callback(e))
        self.reactor.advance(1.99)
        self.assertEqual((process.status, first.signals), ("starting", []))
        self.reactor.advance(0.01)
        self.assertEqual(first.signals, [signal.SIGTERM])
        first.killed(signal.SIGTERM)
        event = self.successResultOf(waiter)
        self.assertEqual(event.reason, "not ready within 2.0s")
        self.assertEqual(process.exits[-1].cause, "start_timeout")
        self.assertEqual(process.attempts, 1)
        self.reactor.advance(process.snapshot().next_restart_in or 0)
        self.assertEqual(len(self.reactor.spawned), 2)
        self.assertEqual(process.restartsByReason, {"start_timeout": 1})
        self.assertEqual(process.status, "starting")

    def test_startTimeoutFailsTheStart(self):
        """A start waiting for readiness fails with the start timeout's reason."""
        process = self.start("{start_timeout: 1}",
                             ScriptedProbe(auto=False),
                             text=CONFIG.replace("command:", "autostart: false\n        command:"))
        d = process.start()
        self.reactor.advance(1)
        self.reactor.last.killed(signal.SIGTERM)
        failure = self.failureResultOf(d)
        self.assertIn("not ready within 1.0s", failure.getErrorMessage())

    def test_lateSuccessAfterStartTimeout(self):
        """Once the start timed out, a success before the child is gone does not make it running."""
        process = self.start("{start_timeout: 1, start_interval: 0.5}",
                             text=CONFIG.replace("command:", "autostart: false\n        command:"))
        d = process.start()
        self.reactor.advance(0.01)
        self.probe.answer(False)
        self.reactor.advance(0.99)
        self.assertEqual(self.reactor.last.signals, [signal.SIGTERM])
        self.assertTrue(all(d.called for d in self.probe.pending))  # in flight: cancelled
        checks = self.probe.checks
        self.reactor.advance(1)
        self.assertEqual(self.probe.checks, checks)  # no more probes of this run
        self.assertEqual(process.status, "starting")
        self.reactor.last.exited(0)
        self.failureResultOf(d)
        self.assertEqual(process.status, "crashed")

    def test_readyCancelsStartTimeout(self):
        """Once ready, the start timeout no longer applies."""
        process = self.start("{start_timeout: 1, interval: 0.5}")
        self.becomeRunning()
        for _ in range(6):
            self.reactor.advance(0.5)
            self.probe.answer(True)
        self.assertEqual((process.status, self.reactor.last.signals), ("running", []))


class TimeoutAndOverlapTests(_Base):
    """
    The core enforces C{timeout}; a probe never overlaps itself.
    """

    def test_timeoutExactly(self):
        """A check that never answers fails exactly at C{timeout} with C{timeout after N.Ns}."""
        self.start("{interval: 10, timeout: 5}")
        self.becomeRunning()
        self.reactor.advance(10)
        d = self.probe.pending[0]
        self.reactor.advance(4.999)
        self.assertEqual(self.process.health.snapshot().total, 1)
        self.assertFalse(d.called)
        self.reactor.advance(0.001)
        self.assertTrue(d.called)  # cancelled
        last = self.process.health.snapshot().last
        self.assertEqual((last.healthy, last.reason), (False, "timeout after 5.0s"))
        self.assertAlmostEqual(last.latency, 5.0)

    def test_httpProbeTimeout(self):
        """The real http probe against a backend that stops answering fails at C{timeout}, then unhealthy."""
        class Backend(Resource):
            isLeaf = True
            hang = False
            requests = 0

            def render_GET(self, request):
                self.requests += 1
                return NOT_DONE_YET if self.hang else b"ok"

        backend = Backend()
        stub = MemoryHTTP(backend)
        reactor = FakeProcessReactor()
        self.orchestrator, self.reactor = startOrchestrator(
            config("{interval: 1, timeout: 0.25, failure_threshold: 2, restart_on_unhealthy: false}"),
            probeFactory=lambda health: HTTPProbe(health, reactor, connect=stub.connect), reactor=reactor)
        process = self.orchestrator.process("backend")
        reactor.advance(0.01)
        stub.flush()
        self.assertEqual(process.status, "running")
        backend.hang = True
        reactor.advance(1)
        stub.flush()
        reactor.advance(0.2499)
        self.assertEqual(process.health.snapshot().last.reason, "HTTP 200")
        reactor.advance(0.0001)
        self.assertEqual(process.health.snapshot().last.reason, "timeout after 0.25s")
        self.assertEqual(process.status, "running")
        reactor.advance(0.75)
        stub.flush()
        reactor.advance(0.25)
        self.assertEqual(process.status, "unhealthy")
        self.assertEqual(backend.requests, 3)

    def test_noOverlap(self):
        """While a slow probe is in flight no other is sent; the next keeps the schedule's phase, missed slots skipped."""
        self.start("{interval: 1, timeout: 30}")
        self.becomeRunning()  # probes due at 0.01, 1.01, 2.01, ...
        self.reactor.advance(1)
        self.assertEqual(self.probe.checks, 2)
        self.reactor.advance(4.49)  # t = 5.50: slots 2.01 .. 5.01 passed while it ran
        self.assertEqual(self.probe.checks, 2)
        self.assertEqual(len(self.probe.pending), 1)
        self.probe.answer(True)
        self.reactor.advance(0.5)  # t = 6.00: not yet, and not "at once" either
        self.assertEqual(self.probe.checks, 2)
        self.reactor.advance(0.01)  # t = 6.01: the next slot in phase
        self.assertEqual(self.probe.checks, 3)
        self.reactor.advance(0.99)
        self.assertEqual(self.probe.checks, 3)

    def test_noOverlapWhileStarting(self):
        """A slow probe during the start phase is not stacked either."""
        self.start("{timeout: 30, start_timeout: 0}")
        self.reactor.advance(0.01)
        for _ in range(30):
            self.reactor.advance(0.1)
        self.assertEqual(self.probe.checks, 1)


class ThresholdTests(_Base):
    """
    C{failure_threshold}, C{success_threshold} and C{start_period}.
    """

    def test_failureThreshold(self):
        """Only C{failure_threshold} consecutive failures make a running process unhealthy."""
        process = self.start("{interval: 1, failure_threshold: 3, restart_on_unhealthy: false}")
        self.becomeRunning()
        self.failChecks(2)
        self.assertEqual(process.status, "running")
        self.reactor.advance(1)
        self.probe.answer(True)
        self.failChecks(2)
        self.assertEqual(process.status, "running")
        self.failChecks(1)
        self.assertEqual(process.status, "unhealthy")

    def test_recoveryNeedsSuccessThreshold(self):
        """An unhealthy process is running again after C{success_threshold} successes in a row."""
        process = self.start("{interval: 1, failure_threshold: 1, success_threshold: 2,"
                             " restart_on_unhealthy: false}")
        self.reactor.advance(0.01)
        self.probe.answer(True)
        self.reactor.advance(0.02)
        self.probe.answer(True)
        self.assertEqual(process.status, "running")
        self.failChecks(1)
        self.assertEqual(process.status, "unhealthy")
        self.reactor.advance(1)
        self.probe.answer(True)
        self.assertEqual(process.status, "unhealthy")
        self.reactor.advance(1)
        self.probe.answer(True)
        self.assertEqual(process.status, "running")
        self.assertEqual(self.reactor.last.signals, [])

    def test_startPeriod(self):
        """Failures within C{start_period} of the spawn do not count towards the threshold."""
        process = self.start("{interval: 1, failure_threshold: 2, start_period: 5, restart_on_unhealthy: false}")
        self.becomeRunning()
        self.failChecks(4)  # t = 1.01 .. 4.01
        self.assertEqual(process.status, "running")
        self.failChecks(1)  # t = 5.01: counts
        self.assertEqual(process.status, "running")
        self.failChecks(1)
        self.assertEqual(process.status, "unhealthy")

    def test_startPhaseFailuresNotCounted(self):
        """Failed probes while starting are not recorded as failures; only readiness ends the phase."""
        process = self.start("{start_interval: 0.1, failure_threshold: 1}")
        self.reactor.advance(0.01)
        for delay in (0.02, 0.04, 0.08, 0.1, 0.1):
            self.probe.answer(False, "Connection refused")
            self.reactor.advance(delay)
        self.assertEqual(process.status, "starting")
        snapshot = process.health.snapshot()
        self.assertEqual((snapshot.total, snapshot.failures, snapshot.last_health_check), (0, 0, "unknown"))
        self.assertEqual(process.health.lastStartFailure.reason, "Connection refused")


class UnhealthyTests(_Base):
    """
    What C{unhealthy} leads to.
    """

    def test_unhealthyRestartRunning(self):
        """Unhealthy with restart_on_unhealthy: stopped, restarted at once (first restart), running again."""
        process = self.start("{interval: 1, failure_threshold: 2}")
        events = []
        self.orchestrator.events.subscribe(lambda e: events.append((e.type, e.reason)))
        self.becomeRunning()
        first = self.reactor.last
        self.failChecks(2)
        self.assertEqual(process.status, "unhealthy")
        self.assertEqual(first.signals, [signal.SIGTERM])
        first.exited(0)  # the first restart after a healthy run is immediate
        self.assertEqual(process.status, "starting")
        self.assertEqual(len(self.reactor.spawned), 2)
        self.becomeRunning()
        self.assertEqual(process.restartCount, 1)
        self.assertEqual(process.restartsByReason, {"unhealthy": 1})
        self.assertEqual(process.exits[-1].cause, "unhealthy")
        types = [t for t, _ in events]
        self.assertEqual(types[types.index("unhealthy"):],
                         ["unhealthy", "crashed", "restart_scheduled", "starting", "running"])
        self.assertIn(("unhealthy", "HTTP 503"), events)
        self.assertIn(("crashed", "restarted because unhealthy"), events)

    def test_unhealthyEscalatesToKill(self):
        """An unhealthy process that ignores the stop signal is SIGKILLed after stop.timeout."""
        self.start("{interval: 1, failure_threshold: 1}")
        self.becomeRunning()
        self.failChecks(1)
        self.reactor.advance(5)
        self.assertEqual(self.reactor.last.signals, [signal.SIGTERM, signal.SIGKILL])

    def test_recoveryBeforeRestart(self):
        """Without restart_on_unhealthy, a recovered process returns to C{running} and is never signalled."""
        process = self.start("{interval: 1, failure_threshold: 2, restart_on_unhealthy: false}")
        self.becomeRunning()
        self.failChecks(5)
        self.assertEqual(process.status, "unhealthy")
        self.reactor.advance(1)
        self.probe.answer(True)
        self.assertEqual(process.status, "running")
        self.assertEqual((self.reactor.last.signals, process.restartCount), ([], 0))

    def test_noRestartWithoutAutoRestart(self):
        """restart_on_unhealthy defaults to restart.auto: with auto off, unhealthy is only reported."""
        process = self.start("{interval: 1, failure_threshold: 1}",
                             text=CONFIG.replace("restart: {", "restart: {auto: false, "))
        self.assertFalse(process.config.health.restart_on_unhealthy)
        self.becomeRunning()
        self.failChecks(3)
        self.assertEqual((process.status, self.reactor.last.signals), ("unhealthy", []))

    def test_successWhileBeingRestartedKeepsUnhealthy(self):
        """A probe success after the unhealthy restart began does not report the dying process as running."""
        process = self.start("{interval: 1, failure_threshold: 1}")
        self.becomeRunning()
        self.failChecks(1)
        self.assertEqual(self.reactor.last.signals, [signal.SIGTERM])
        self.reactor.advance(1)
        self.probe.answer(True)
        self.assertEqual(process.status, "unhealthy")

    def test_giveUpViaHealth(self):
        """Repeated unhealthy restarts exhaust max_attempts: crashed, gave_up, and no more spawns."""
        process = self.start("{interval: 1, failure_threshold: 1}",
                             text=CONFIG.replace("max_attempts: 3", "max_attempts: 2"))
        gaveUp = []
        self.orchestrator.events.subscribe(lambda e: e.type == "gave_up" and gaveUp.append(e.reason))
        events = captureLog(self)
        for run in range(3):
            self.becomeRunning()
            self.failChecks(1)
            self.assertEqual(process.status, "unhealthy")
            self.reactor.last.exited(0)
            if run < 2:
                self.reactor.advance(process.snapshot().next_restart_in or 0)
                self.assertEqual(len(self.reactor.spawned), run + 2)
        self.assertEqual((process.status, process.gaveUp), ("crashed", True))
        self.assertEqual(gaveUp, ["Maximum restart attempts (2) exceeded"])
        self.assertEqual(process.restartsByReason, {"unhealthy": 2})
        self.reactor.advance(600)
        self.assertEqual(len(self.reactor.spawned), 3)
        self.assertEqual(self.probe.pending, [])
        self.assertIn("backend crashed! Maximum restart attempts (2) exceeded",
                      [formatEvent(e) for e in events])


class LifecycleTests(_Base):
    """
    Probes live and die with the process's run.
    """

    def test_probesStopWithProcess(self):
        """Stopping the process cancels the in-flight probe and schedules no more."""
        process = self.start("{interval: 1}")
        self.becomeRunning()
        self.reactor.advance(1)
        inFlight = self.probe.pending[0]
        d = process.stop()
        self.assertTrue(inFlight.called)  # cancelled
        self.reactor.last.exited(0)
        self.successResultOf(d)
        self.assertEqual(process.status, "stopped")
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.assertFalse(process.health.probing)

    def test_probesRestartWithProcess(self):
        """A new start probes quickly again and keeps the statistics of earlier runs."""
        process = self.start("{interval: 1}")
        self.becomeRunning()
        d = process.stop()
        self.reactor.last.exited(0)
        self.successResultOf(d)
        checks = self.probe.checks
        self.reactor.advance(100)
        self.assertEqual(self.probe.checks, checks)
        d = process.start()
        self.reactor.advance(0.01)
        self.assertEqual(self.probe.checks, checks + 1)
        self.probe.answer(True)
        self.successResultOf(d)
        self.assertEqual(process.status, "running")
        self.assertEqual(process.health.snapshot().total, 2)

    def test_probesStopOnCrash(self):
        """A crash stops probing until the restarted child runs."""
        process = self.start("{interval: 1}")
        self.becomeRunning()
        self.reactor.advance(1)
        self.reactor.last.exited(3)
        self.reactor.advance(0)  # the first restart after a healthy run is immediate
        self.assertEqual(process.status, "starting")
        self.assertEqual(len(self.reactor.spawned), 2)
        self.reactor.advance(0.01)
        self.assertEqual([d.called for d in self.probe.pending], [True, False])  # the old run's was cancelled

    def test_shutdownLeavesNothingScheduled(self):
        """stopService ends probing; no delayed call remains."""
        self.start("{interval: 1}")
        self.becomeRunning()
        self.reactor.advance(1)
        self.stopAll()


class StatisticsTests(_Base):
    """
    C{last_health_check}, counts and success rates.
    """

    def test_lastHealthCheck(self):
        """last_health_check is unknown before any check, then healthy or unhealthy after each."""
        process = self.start("{interval: 1, failure_threshold: 5}")
        snapshot = process.health.snapshot()
        self.assertEqual((snapshot.last_health_check, snapshot.last), ("unknown", None))
        self.becomeRunning()
        self.assertEqual(process.health.snapshot().last_health_check, "healthy")
        self.failChecks(1)
        self.assertEqual(process.health.snapshot().last_health_check, "unhealthy")
        self.reactor.advance(1)
        self.probe.answer(True)
        self.assertEqual(process.health.snapshot().last_health_check, "healthy")

    def test_successRates(self):
        """success_rate covers every check; window_success_rate the last C{history} ones."""
        process = self.start("{interval: 1, failure_threshold: 100, history: 4}")
        self.becomeRunning()
        self.failChecks(3)
        for _ in range(4):
            self.reactor.advance(1)
            self.probe.answer(True)
        snapshot = process.health.snapshot()
        self.assertEqual((snapshot.total, snapshot.successes, snapshot.failures), (8, 5, 3))
        self.assertEqual(snapshot.success_rate, 5 / 8)
        self.assertEqual(snapshot.window_success_rate, 1.0)
        self.assertEqual(len(snapshot.results), 4)
        self.failChecks(1)
        self.assertEqual(process.health.snapshot().window_success_rate, 0.75)

    def test_resultsStamped(self):
        """Each kept result carries its latency and finishing time."""
        process = self.start("{interval: 1}")
        self.reactor.advance(0.01)
        self.reactor.advance(0.04)
        self.probe.answer(True)
        last = process.health.snapshot().last
        self.assertAlmostEqual(last.latency, 0.04)
        self.assertAlmostEqual(last.timestamp, 0.05)
        self.assertEqual(last.toJSON()["healthy"], True)


class LoggingTests(_Base):
    """
    The seed's log lines, without flooding.
    """

    def test_firstSuccessAndRecovery(self):
        """C{Backend health check: Healthy} is logged on the first success and on recovery, not on every check."""
        events = captureLog(self)
        self.start("{interval: 1, failure_threshold: 5}")
        self.becomeRunning()
        for _ in range(3):
            self.reactor.advance(1)
            self.probe.answer(True)
        self.failChecks(1, reason="Connection refused")
        self.reactor.advance(1)
        self.probe.answer(True)
        self.assertEqual(healthLines(events), [
            "Backend health check: Healthy",
            "Backend health check failed: Connection refused",
            "Backend health check: Healthy",
        ])
        failed = [e for e in events if e.get("reason") == "Connection refused"]
        self.assertEqual(failed[0]["log_level"].name, "warn")
        self.assertEqual(failed[0]["process"], "backend")

    def test_healthyOncePerRecovery(self):
        """With success_threshold 2, reaching readiness logs Healthy once, not per success."""
        events = captureLog(self)
        self.start("{interval: 1, success_threshold: 2}")
        self.reactor.advance(0.01)
        self.probe.answer(True)
        self.reactor.advance(0.02)
        self.probe.answer(True)
        self.assertEqual(self.process.status, "running")
        self.assertEqual(healthLines(events), ["Backend health check: Healthy"])

    def test_failuresNotFlooding(self):
        """Each failure up to the threshold is logged, then only every 10th as a summary."""
        events = captureLog(self)
        self.start("{interval: 1, failure_threshold: 3, restart_on_unhealthy: false}")
        self.becomeRunning()
        self.failChecks(25, reason="HTTP 503")
        lines = healthLines(events)[1:]
        self.assertEqual(lines, [
            "Backend health check failed: HTTP 503",
            "Backend health check failed: HTTP 503 (2 consecutive failures)",
            "Backend health check failed: HTTP 503 (3 consecutive failures)",
            "Backend health check failed: HTTP 503 (10 consecutive failures)",
            "Backend health check failed: HTTP 503 (20 consecutive failures)",
        ])
        self.assertEqual([e["n"] for e in events if "n" in e and e.get("reason") == "HTTP 503"],
                         [1, 2, 3, 10, 20])
