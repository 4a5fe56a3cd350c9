"""
Unit tests for L{orchestrator.supervision.process.ManagedProcess}: the supervision state
machine of one process, driven by a fake process reactor and its clock.

Nothing here sleeps: children live until the test says they exit, and time
moves only when the test advances the clock.
"""

from __future__ import annotations

import os
import signal
import stat
import tempfile
import textwrap

from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from orchestrator.errors import StateError
from orchestrator.health.monitor import HealthMonitor
from orchestrator.notify.events import EventBus
from orchestrator.errors import SpawnError, StartFailed
from orchestrator.supervision.process import ManagedProcess, childEnvironment
from orchestrator.supervision.supervised import EXITS_KEPT
from tests.fakes import EXECUTABLE, FakeProcessReactor, loadText

_EPS = 0.125  # binary-exact, so clock sums stay exact


def _config(block: str = "", command: str = '["{python}", "-c", "pass"]', **kwargs):
    """
    Load a configuration with one process C{backend} whose settings are
    C{block} (YAML lines indented under the process).
    """
    text = "processes:\n  backend:\n    command: " + command + "\n"
    text += textwrap.indent(textwrap.dedent(block), "    ")
    return loadText(text, **kwargs)


class _Harness:
    """
    One L{ManagedProcess} on a fake process reactor, its event bus and the
    events it emitted.
    """

    def __init__(self, block: str = "", randoms=None, loaded=None, environment=None,
                 probeFactory=None) -> None:
        self.loaded = loaded or _config(block)
        self.config = self.loaded.config.processes["backend"]
        self.reactor = FakeProcessReactor()
        self.bus = EventBus(self.reactor)
        self.events = []
        self.bus.subscribe(self.events.append)
        self.randoms = list(randoms or [])
        policy = self.loaded.kinds.policies[self.config.restart.policy](self.config.restart)
        self.process = ManagedProcess(
            self.config,
            reactor=self.reactor,
            spawner=self.reactor.spawner,
            policy=policy,
            events=self.bus,
            environment=environment if environment is not None else {"PATH": "/usr/bin:/bin"},
            random=self._random,
            killGroup=self.reactor.killGroup,
            monitorFactory=(lambda process: HealthMonitor(
                process, self.config.health, probeFactory(self.config.health), self.reactor))
            if probeFactory else None,
        )

    def _random(self) -> float:
        return self.randoms.pop(0) if self.randoms else 0.5

    @property
    def clock(self) -> FakeProcessReactor:
        return self.reactor

    @property
    def child(self):
        return self.reactor.last

    def alive(self) -> list:
        return [t for t in self.reactor.spawned if t.alive]

    def types(self) -> list[str]:
        return [e.type for e in self.events]

    def startRunning(self) -> None:
        """
        Start the process and let it survive C{ready_after}.
        """
        self.process.start(wait=False)
        self.clock.advance(self.config.ready_after)
        assert self.process.status == "running", self.process.status


class _LogCapture:
    """
    Structured log events published while a test runs.
    """

    def __init__(self, testCase) -> None:
        self.events: list[dict] = []
        globalLogPublisher.addObserver(self.events.append)
        testCase.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def matching(self, text: str) -> list[dict]:
        return [e for e in self.events if text in (formatEvent(e) or "")]


class TransitionTests(SynchronousTestCase):
    """
    stopped -> starting -> running -> crashed -> restarted, and the ways a
    run ends without a restart.
    """

    def test_startIsStartingUntilReadyAfterThenRunning(self) -> None:
        """A start spawns the command (starting) and the process is running once it survived ready_after."""
        h = _Harness("start: {ready_after: 2}\n")
        self.assertEqual(h.process.status, "stopped")
        d = h.process.start()
        self.assertEqual(h.process.status, "starting")
        self.assertEqual(h.child.args, [EXECUTABLE, "-c", "pass"])
        self.assertEqual(h.process.pid, h.child.pid)
        self.assertNoResult(d)
        h.clock.advance(2 - _EPS)
        self.assertEqual(h.process.status, "starting")
        self.assertNoResult(d)
        h.clock.advance(_EPS)
        self.assertEqual(h.process.status, "running")
        snapshot = self.successResultOf(d)
        self.assertEqual((snapshot.status, snapshot.pid), ("running", h.child.pid))
        self.assertEqual(h.types(), ["starting", "running"])
        self.assertEqual([(e.from_, e.to) for e in h.events],
                         [("stopped", "starting"), ("starting", "running")])

    def test_startLogsCommandAndPid(self) -> None:
        """A start logs 'Starting <name> process: <command>' and '<name> started (PID: N)'."""
        logs = _LogCapture(self)
        h = _Harness()
        h.process.start(wait=False)
        self.assertEqual(len(logs.matching(f"Starting backend process: {EXECUTABLE} -c pass")), 1)
        started = logs.matching(f"backend started (PID: {h.child.pid})")
        self.assertEqual(len(started), 1)
        self.assertEqual(started[0]["pid"], h.child.pid)

    def test_startWithoutWaitFiresAtSpawn(self) -> None:
        """start(wait=False) answers as soon as the child is spawned."""
        h = _Harness()
        snapshot = self.successResultOf(h.process.start(wait=False))
        self.assertEqual((snapshot.status, snapshot.pid), ("starting", h.child.pid))

    def test_crashAfterReadyRunRestartsAtOnce(self) -> None:
        """A running process that exits non-zero is crashed, then respawned in the same reactor turn: no timer pending."""
        logs = _LogCapture(self)
        h = _Harness()
        h.startRunning()
        firstPid = h.child.pid
        h.child.exited(1)
        self.assertEqual(len(h.reactor.spawned), 2)
        self.assertEqual(h.types()[-4:], ["running", "crashed", "restart_scheduled", "starting"])
        self.assertEqual(h.process.exits[-1].exit_code, 1)
        crashed = [e for e in h.events if e.type == "crashed"][0]
        self.assertEqual((crashed.from_, crashed.to, crashed.exit_code, crashed.pid),
                         ("running", "crashed", 1, firstPid))
        attempt = logs.matching("backend crashed! Auto-restart attempt 1/3")
        self.assertEqual(len(attempt), 1)
        self.assertEqual(attempt[0]["log_level"], LogLevel.error)
        self.assertEqual(h.process.timers.pending, ["ready"])
        self.assertIsNone(h.process.snapshot().next_restart_in)
        self.assertEqual(h.process.status, "starting")
        self.assertEqual(h.process.pid, h.child.pid)
        self.assertNotEqual(h.child.pid, firstPid)
        self.assertEqual(h.process.restartCount, 1)
        self.assertEqual(h.process.restartsByReason, {"crash": 1})

    def test_exitHistoryIsEmptyUntilTheFirstExitThenBounded(self) -> None:
        """No exit yet: exits is empty (no ring is held); then the last EXITS_KEPT exits are kept, oldest first."""
        h = _Harness("restart: {policy: always, max_attempts: 100, reset_after: 0.5}\n")
        self.assertEqual(tuple(h.process.exits), ())
        self.assertEqual(h.process.snapshot().exits, ())
        self.assertIsNone(h.process.snapshot().last_exit)
        self.assertIsNone(h.process._exits)
        h.startRunning()
        for code in range(1, EXITS_KEPT + 6):
            h.child.exited(code)
            h.clock.advance(h.process.snapshot().next_restart_in or 0)
            h.clock.advance(1.5)  # ready, and past reset_after: each exit a first crash
        self.assertEqual([e.exit_code for e in h.process.exits], list(range(6, EXITS_KEPT + 6)))
        self.assertEqual(len(h.process.snapshot().exits), EXITS_KEPT)
        self.assertEqual(h.process.snapshot().last_exit.exit_code, EXITS_KEPT + 5)

    def test_killedBySignalIsACrash(self) -> None:
        """A child killed by a signal (kill -9) is crashed, whatever its exit code list says."""
        h = _Harness("restart: {policy: on-failure, success_exit_codes: [0]}\n")
        h.startRunning()
        h.child.killed(signal.SIGKILL)
        crashed = [e for e in h.events if e.type == "crashed"][0]
        self.assertEqual((crashed.signal, crashed.exit_code), (signal.SIGKILL, None))
        self.assertEqual(len(h.reactor.spawned), 2)

    def test_cleanExitWithOnFailureStops(self) -> None:
        """With on-failure, a clean exit leaves the process stopped and nothing scheduled."""
        h = _Harness("restart: {policy: on-failure}\n")
        h.startRunning()
        h.child.exited(0)
        self.assertEqual(h.process.status, "stopped")
        self.assertEqual(h.types()[-1], "exited")
        self.assertEqual(h.clock.getDelayedCalls(), [])
        h.clock.advance(100)
        self.assertEqual(len(h.reactor.spawned), 1)

    def test_cleanExitWithAlwaysRestarts(self) -> None:
        """With always, even a clean exit is restarted."""
        h = _Harness("restart: {policy: always}\n")
        h.startRunning()
        h.child.exited(0)
        self.assertEqual(h.types()[-3:], ["crashed", "restart_scheduled", "starting"])
        self.assertEqual(len(h.reactor.spawned), 2)

    def test_successExitCodes(self) -> None:
        """An exit code listed in success_exit_codes is clean (stopped); any other is a crash."""
        h = _Harness("restart: {policy: on-failure, success_exit_codes: [0, 3]}\n")
        h.startRunning()
        h.child.exited(3)
        self.assertEqual(h.process.status, "stopped")
        self.assertTrue(h.process.exits[-1].clean)
        h.startRunning()
        h.child.exited(4)
        self.assertEqual(h.types()[-3:], ["crashed", "restart_scheduled", "starting"])
        self.assertFalse(h.process.exits[-1].clean)
        self.assertEqual(len(h.reactor.spawned), 3)

    def test_exitCodeZeroNotListedIsACrash(self) -> None:
        """When success_exit_codes does not list 0, exit code 0 is a failure too."""
        h = _Harness("restart: {policy: on-failure, success_exit_codes: [2]}\n")
        h.startRunning()
        h.child.exited(0)
        self.assertEqual([e.to for e in h.events if e.type == "crashed"], ["crashed"])
        self.assertEqual(len(h.reactor.spawned), 2)

    def test_neverPolicy(self) -> None:
        """With the never policy a crash stays crashed: no restart is ever scheduled."""
        h = _Harness("restart: {policy: never}\n")
        h.startRunning()
        h.child.exited(1)
        self.assertEqual(h.process.status, "crashed")
        self.assertIn("gave_up", h.types())
        self.assertEqual(h.clock.getDelayedCalls(), [])
        h.clock.advance(1000)
        self.assertEqual(len(h.reactor.spawned), 1)

    def test_autoFalseDisablesRestarts(self) -> None:
        """restart.auto: false leaves a crashed process crashed whatever the policy."""
        logs = _LogCapture(self)
        h = _Harness("restart: {policy: always, auto: false}\n")
        h.startRunning()
        h.child.exited(1)
        self.assertEqual(h.process.status, "crashed")
        self.assertFalse(h.process.gaveUp)
        self.assertEqual(h.clock.getDelayedCalls(), [])
        h.clock.advance(1000)
        self.assertEqual(len(h.reactor.spawned), 1)
        self.assertEqual(len(logs.matching("backend crashed! Auto-restart is disabled")), 1)

    def test_crashBeforeReadyFailsTheWaitingStart(self) -> None:
        """A child that dies before it is ready fails the waiting start with StartFailed."""
        h = _Harness()
        d = h.process.start()
        h.child.exited(1)
        self.failureResultOf(d, StartFailed)
        self.assertEqual(h.process.status, "crashed")

    def test_unhealthyIsRestartedLikeACrash(self) -> None:
        """failure_threshold failures make a running process unhealthy; it is stopped and restarted, counted as unhealthy."""
        h = _Harness("restart: {policy: always}\n")
        h.startRunning()
        h.process.healthFailed("HTTP 503")
        self.assertEqual(h.process.status, "unhealthy")
        self.assertEqual(h.child.signals, [signal.SIGTERM])
        h.child.exited(0)
        self.assertEqual(h.types()[-3:], ["crashed", "restart_scheduled", "starting"])
        self.assertEqual(h.process.exits[-1].cause, "unhealthy")
        self.assertEqual(h.process.status, "starting")
        self.assertEqual(h.process.restartsByReason, {"unhealthy": 1})

    def test_startTimeoutIsRestartedLikeACrash(self) -> None:
        """A process not ready within start_timeout is stopped, crashed with that cause, and restarted."""
        h = _Harness("restart: {policy: always, interval: 1}\nstop: {timeout: 5}\n")
        h.process.start(wait=False)
        h.process.startTimedOut("not ready within 60s")
        self.assertEqual(h.child.signals, [signal.SIGTERM])
        h.child.exited(0)
        self.assertEqual(h.process.status, "crashed")
        self.assertEqual(h.process.exits[-1].cause, "start_timeout")
        h.clock.advance(1)
        self.assertEqual(h.process.status, "starting")
        self.assertEqual(h.process.restartsByReason, {"start_timeout": 1})

    def test_repeatedStartTimeoutNeverKillsTheNextChild(self) -> None:
        """A second start-timeout report for the same child leaves no SIGKILL pending for its successor."""
        h = _Harness("start: {ready_after: 4}\nrestart: {policy: always, interval: 1}\n"
                     "stop: {timeout: 5}\n")
        h.process.start(wait=False)
        h.process.startTimedOut("slow")
        h.clock.advance(2)
        h.process.startTimedOut("slow")
        h.child.exited(0)
        self.assertEqual(h.process.timers.pending, ["restart"])
        self.assertEqual(len(h.clock.getDelayedCalls()), 1)
        h.clock.advance(1)
        successor = h.child
        h.clock.advance(6)
        self.assertEqual(successor.signals, [])
        self.assertEqual(h.process.status, "running")

    def test_exitReportedDuringSpawnIsACrash(self) -> None:
        """A child that exits so fast Twisted reports it from inside spawnProcess is crashed and restarted, never shown running."""
        h = _Harness("restart: {policy: always, interval: 1}\n")
        spawn = h.reactor.spawner
        pids = []

        def instantExit(protocol, executable, args, env, path):
            # Twisted's registerReapProcessHandler reaps a child that is
            # already gone and calls processExited before returning.
            transport = spawn(protocol, executable, args, env, path)
            pids.append(transport.pid)
            transport.exited(1)
            return transport

        h.process._spawner = instantExit
        failure = self.failureResultOf(h.process.start(), StartFailed)
        self.assertIn("exit code 1", failure.getErrorMessage())
        self.assertEqual(h.process.status, "crashed")
        self.assertIsNone(h.process.pid)
        self.assertEqual(h.process.exits[-1].pid, pids[0])
        self.assertEqual(h.types(), ["starting", "crashed", "restart_scheduled"])
        self.assertEqual([e.pid for e in h.events[:2]], [pids[0], pids[0]])
        self.assertEqual(h.reactor.groupKills, [(pids[0], signal.SIGKILL)])
        h.process._spawner = spawn
        h.clock.advance(1)
        self.assertEqual(h.process.status, "starting")
        self.assertEqual(h.process.pid, h.child.pid)
        h.clock.advance(h.config.ready_after)
        self.assertEqual(h.process.status, "running")

    def test_uptimeAndSnapshot(self) -> None:
        """uptime counts from the spawn and is 0 once the process is gone."""
        h = _Harness()
        h.startRunning()
        h.clock.advance(5)
        self.assertEqual(h.process.uptime(), 6.0)
        snapshot = h.process.snapshot()
        self.assertEqual((snapshot.status, snapshot.uptime, snapshot.started_at), ("running", 6.0, 0.0))
        h.child.exited(1)
        self.assertEqual(h.process.uptime(), 0.0)
        self.assertEqual(h.process.snapshot().last_exit.uptime, 6.0)


class RestartNowTests(SynchronousTestCase):
    """
    A restart the policy wants at once happens in the reactor turn that
    handled the exit, unless a command is in progress or the child died
    while being respawned.
    """

    def test_respawnedInTheTurnOfTheExit(self) -> None:
        """The crash of a healthy run is respawned before the exit's handling returns: no restart timer is left for a later turn."""
        h = _Harness("start: {ready_after: 2}\n")
        h.startRunning()
        first, firstPid = h.child, h.child.pid
        first.exited(1)
        self.assertEqual(len(h.reactor.spawned), 2)
        self.assertIsNot(h.child, first)
        self.assertEqual([(e.type, e.pid) for e in h.events[-3:]],
                         [("crashed", firstPid), ("restart_scheduled", None), ("starting", h.child.pid)])
        self.assertEqual(h.process.timers.pending, ["ready"])
        self.assertEqual([call.getTime() for call in h.clock.getDelayedCalls()], [h.clock.seconds() + 2])
        self.assertEqual(h.process.restartsByReason, {"crash": 1})

    def test_commandInProgressDecides(self) -> None:
        """A crash while a start waits for readiness with a restart queued: the restart command alone spawns, after its pause, and the waiting start fails."""
        h = _Harness("start: {ready_after: 5}\nrestart: {policy: always, interval: 0, delay: 2}\n")
        starting = h.process.start()
        restarting = h.process.restart()
        h.child.exited(1)
        self.failureResultOf(starting, StartFailed)
        self.assertEqual(len(h.reactor.spawned), 1)
        self.assertEqual(h.process.timers.pending, ["pause"])
        h.clock.advance(2)
        self.assertEqual(len(h.reactor.spawned), 2)
        self.assertEqual(h.process.restartsByReason, {"manual": 1})
        h.clock.advance(5)
        self.assertEqual(self.successResultOf(restarting).status, "running")

    def test_exitAsItIsRespawnedWaitsATurn(self) -> None:
        """A child that dies as it is respawned is respawned again at the next turn, not from inside its own spawn."""
        h = _Harness("restart: {policy: always, interval: 0, max_attempts: 5}\n")
        h.startRunning()
        spawn = h.reactor.spawner

        def instantExit(protocol, executable, args, env, path):
            transport = spawn(protocol, executable, args, env, path)
            transport.exited(1)  # reported from inside spawnProcess
            return transport

        h.process._spawner = instantExit
        h.child.exited(1)
        self.assertEqual(len(h.reactor.spawned), 2)
        self.assertEqual((h.process.status, h.process.timers.pending), ("crashed", ["restart"]))
        h.process._spawner = spawn
        h.clock.advance(0)
        self.assertEqual(len(h.reactor.spawned), 3)
        self.assertEqual(h.process.status, "starting")
        self.assertEqual(h.process.restartsByReason, {"crash": 2})


class BackoffTests(SynchronousTestCase):
    """
    Delays between automatic restarts: exact, with the random source
    injected.
    """

    def assertRestartsAfter(self, h: _Harness, delay: float) -> None:
        """
        The next child is spawned exactly C{delay} seconds from now (with
        no delay: it already was, when the exit was handled).
        """
        if not delay:
            self.assertIsNone(h.process.snapshot().next_restart_in)
            self.assertNotEqual(h.process.exits[-1].pid, h.child.pid)
            self.assertEqual((h.process.status, h.process.pid), ("starting", h.child.pid))
            return
        before = len(h.reactor.spawned)
        self.assertEqual(h.process.snapshot().next_restart_in, delay)
        h.clock.advance(delay - _EPS)
        self.assertEqual(len(h.reactor.spawned), before, f"restarted before {delay}s")
        h.clock.advance(_EPS)
        self.assertEqual(len(h.reactor.spawned), before + 1, f"not restarted after {delay}s")

    def test_backoffDelaysWithJitterAreExact(self) -> None:
        """Repeated failures wait initial*factor**(n-1), spread by the injected jitter sample, capped at max."""
        h = _Harness(
            "start: {ready_after: 10}\n"
            "restart: {policy: backoff, max_attempts: 10,"
            " backoff: {initial: 1, factor: 2, max: 5, jitter: 0.5}}\n",
            randoms=[0.0, 1.0, 0.25, 0.5, 1.0],
        )
        h.process.start(wait=False)
        # sample 0.0 -> -50%, 1.0 -> +50%, 0.25 -> -25%; capped at max
        for delay in [0.5, 3.0, 3.0, 5.0, 5.0]:
            h.child.exited(1)
            self.assertRestartsAfter(h, delay)
        self.assertEqual(h.process.attempts, 5)

    def test_firstRestartAfterReadyRunIsImmediateThenDelaysGrow(self) -> None:
        """After a run that became ready the first restart is immediate; repeated failures then wait longer each time."""
        h = _Harness(
            "restart: {policy: backoff, max_attempts: 10,"
            " backoff: {initial: 1, factor: 2, max: 30, jitter: 0}}\n"
        )
        h.startRunning()
        h.child.exited(1)
        self.assertRestartsAfter(h, 0)
        for delay in [2.0, 4.0, 8.0, 16.0, 30.0]:
            h.child.exited(1)  # before ready_after: a repeated failure
            self.assertRestartsAfter(h, delay)

    def test_processNeverReadyWaitsFromTheFirstRestart(self) -> None:
        """A process that never became ready waits backoff.initial before its first restart."""
        h = _Harness("restart: {policy: backoff, backoff: {initial: 0.5, jitter: 0}}\n")
        h.process.start(wait=False)
        h.child.exited(1)
        self.assertRestartsAfter(h, 0.5)

    def test_fixedIntervalPolicy(self) -> None:
        """The always policy restarts at once after a ready run, then every interval seconds."""
        h = _Harness("restart: {policy: always, interval: 1.5, max_attempts: 5}\n")
        h.startRunning()
        h.child.exited(1)
        self.assertRestartsAfter(h, 0)
        h.child.exited(1)
        self.assertRestartsAfter(h, 1.5)
        h.child.exited(1)
        self.assertRestartsAfter(h, 1.5)

    def test_restartScheduledEventCarriesAttempt(self) -> None:
        """Each scheduled automatic restart emits restart_scheduled with its attempt number."""
        h = _Harness("restart: {policy: backoff, backoff: {initial: 1, jitter: 0}}\n")
        h.process.start(wait=False)
        h.child.exited(1)
        h.clock.advance(1)
        h.child.exited(1)
        scheduled = [e for e in h.events if e.type == "restart_scheduled"]
        self.assertEqual([(e.attempt, e.reason) for e in scheduled], [(1, "in 1s"), (2, "in 2s")])


class GiveUpTests(SynchronousTestCase):
    """
    max_attempts, gave_up, and what clears them.
    """

    def crashLoop(self, h: _Harness, crashes: int) -> None:
        for _ in range(crashes):
            h.child.exited(1)
            h.clock.advance(h.process.snapshot().next_restart_in or 0)

    def test_maxAttemptsExceededGivesUp(self) -> None:
        """After max_attempts automatic restarts the next crash gives up: crashed, gave_up, logged, an event, nothing scheduled."""
        logs = _LogCapture(self)
        h = _Harness("restart: {policy: always, interval: 1, max_attempts: 2}\n")
        h.process.start(wait=False)
        self.crashLoop(h, 2)
        self.assertEqual(len(h.reactor.spawned), 3)
        h.child.output(b"database not reachable\n", fd=2)
        h.child.exited(1)
        self.assertEqual(h.process.status, "crashed")
        self.assertTrue(h.process.gaveUp)
        self.assertTrue(h.process.snapshot().gave_up)
        self.assertEqual(h.clock.getDelayedCalls(), [])
        gaveUp = [e for e in logs.events if e.get("why", "").startswith("Maximum restart attempts")]
        self.assertEqual(len(gaveUp), 1)
        self.assertEqual(gaveUp[0]["why"], "Maximum restart attempts (2) exceeded")
        self.assertEqual(gaveUp[0]["process"], "backend")
        self.assertEqual(gaveUp[0]["log_level"], LogLevel.error)
        self.assertEqual(formatEvent(gaveUp[0]),
                         "backend crashed! Maximum restart attempts (2) exceeded")
        event = [e for e in h.events if e.type == "gave_up"]
        self.assertEqual(len(event), 1)
        self.assertEqual(event[0].reason, "Maximum restart attempts (2) exceeded")
        self.assertEqual(event[0].output, ("database not reachable",))
        self.assertEqual(event[0].toJSON()["output"], ["database not reachable"])
        h.clock.advance(1000)
        self.assertEqual(len(h.reactor.spawned), 3)

    def test_maxAttemptsZeroNeverRestarts(self) -> None:
        """max_attempts: 0 gives up on the first crash."""
        h = _Harness("restart: {policy: always, max_attempts: 0}\n")
        h.startRunning()
        h.child.exited(1)
        self.assertTrue(h.process.gaveUp)
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_manualStartClearsGaveUp(self) -> None:
        """A manual start after giving up clears gave_up and the attempt counter and spawns a child."""
        h = _Harness("restart: {policy: always, interval: 1, max_attempts: 1}\n")
        h.process.start(wait=False)
        self.crashLoop(h, 2)
        self.assertTrue(h.process.gaveUp)
        h.process.start(wait=False)
        self.assertFalse(h.process.gaveUp)
        self.assertEqual(h.process.attempts, 0)
        self.assertEqual(h.process.status, "starting")
        self.assertEqual(len(h.reactor.spawned), 3)
        # the counter starts afresh: one more automatic restart is allowed
        h.child.exited(1)
        self.assertFalse(h.process.gaveUp)

    def test_manualRestartClearsGaveUp(self) -> None:
        """A manual restart after giving up clears gave_up and starts the process after restart.delay."""
        h = _Harness("restart: {policy: always, interval: 1, max_attempts: 1, delay: 2}\n")
        h.process.start(wait=False)
        self.crashLoop(h, 2)
        self.assertTrue(h.process.gaveUp)
        d = h.process.restart(wait=False)
        self.assertFalse(h.process.gaveUp)
        h.clock.advance(2)
        self.assertEqual(self.successResultOf(d).status, "starting")
        self.assertEqual(len(h.reactor.spawned), 3)
        self.assertEqual(h.process.restartsByReason, {"crash": 1, "manual": 1})

    def test_attemptsResetAfterHealthyRunning(self) -> None:
        """The attempt counter resets once the process has run healthy for reset_after seconds."""
        logs = _LogCapture(self)
        h = _Harness(
            "start: {ready_after: 1}\n"
            "restart: {policy: always, interval: 1, max_attempts: 5, reset_after: 10}\n"
        )
        h.process.start(wait=False)
        self.crashLoop(h, 2)
        self.assertEqual(h.process.attempts, 2)
        h.clock.advance(1)  # the third child becomes ready
        self.assertEqual(h.process.status, "running")
        h.clock.advance(10 - _EPS)
        self.assertEqual(h.process.attempts, 2)
        h.clock.advance(_EPS)
        self.assertEqual(h.process.attempts, 0)
        reset = logs.matching("restart attempts reset")
        self.assertEqual([(e["process"], e["seconds"]) for e in reset], [("backend", 10)])
        # a crash now is a first attempt again: immediate after a ready run
        spawned = len(h.reactor.spawned)
        h.child.exited(1)
        self.assertEqual(h.process.attempts, 1)
        self.assertEqual(len(h.reactor.spawned), spawned + 1)

    def test_crashBeforeResetAfterKeepsCounting(self) -> None:
        """A crash before reset_after of healthy running counts towards max_attempts."""
        h = _Harness(
            "start: {ready_after: 1}\n"
            "restart: {policy: always, interval: 1, max_attempts: 2, reset_after: 10}\n"
        )
        h.process.start(wait=False)
        self.crashLoop(h, 2)
        h.clock.advance(1 + 10 - _EPS)
        self.assertEqual(h.process.status, "running")
        h.child.exited(1)
        self.assertTrue(h.process.gaveUp)

    def test_resetAfterZeroResetsOnReady(self) -> None:
        """reset_after: 0 resets the counter as soon as a run becomes ready."""
        h = _Harness("restart: {policy: always, interval: 1, max_attempts: 1, reset_after: 0}\n")
        h.startRunning()
        for _ in range(5):
            h.child.exited(1)
            h.clock.advance(0)  # immediate restart of a ready run
            h.clock.advance(h.config.ready_after)  # ready again: the counter resets
            self.assertEqual(h.process.attempts, 0)
        self.assertFalse(h.process.gaveUp)
        self.assertEqual(len(h.reactor.spawned), 6)


class _NeverReady:
    """
    A probe whose checks never answer.
    """

    def check(self):
        from twisted.internet.defer import Deferred

        return Deferred()


class StopTests(SynchronousTestCase):
    """
    Stopping: the stop signal, SIGKILL at exactly stop.timeout, the Deferred
    firing on reaping.
    """

    def test_stopEscalatesToKillAtExactlyTheTimeout(self) -> None:
        """stop sends TERM, SIGKILL exactly at stop.timeout, and fires only when the child is reaped."""
        h = _Harness("stop: {timeout: 5}\n")
        h.startRunning()
        child = h.child
        d = h.process.stop()
        self.assertNoResult(d)
        self.assertEqual(h.process.status, "stopping")
        self.assertEqual(child.signals, [signal.SIGTERM])
        h.clock.advance(5 - _EPS)
        self.assertEqual(child.signals, [signal.SIGTERM])
        self.assertNoResult(d)
        h.clock.advance(_EPS)
        self.assertEqual(child.signals, [signal.SIGTERM, signal.SIGKILL])
        self.assertNoResult(d)
        child.killed(signal.SIGKILL)
        snapshot = self.successResultOf(d)
        self.assertEqual((snapshot.status, snapshot.pid), ("stopped", None))
        self.assertEqual(h.process.exits[-1].cause, "stop")
        self.assertEqual(h.clock.getDelayedCalls(), [])
        self.assertEqual(h.types()[-2:], ["stopping", "stopped"])

    def test_stopGracefulNeedsNoKill(self) -> None:
        """A child that exits on the stop signal is never SIGKILLed and leaves nothing scheduled."""
        h = _Harness("stop: {signal: INT, timeout: 5}\n")
        h.startRunning()
        child = h.child
        d = h.process.stop()
        self.assertEqual(child.signals, [signal.SIGINT])
        child.exited(0)
        self.assertEqual(self.successResultOf(d).status, "stopped")
        self.assertEqual(h.clock.getDelayedCalls(), [])
        h.clock.advance(100)
        self.assertEqual(child.signals, [signal.SIGINT])
        self.assertEqual(len(h.reactor.spawned), 1)

    def test_stopWhileStartingCancelsReadiness(self) -> None:
        """Stopping a starting process stops it; it never becomes running and nothing stays scheduled."""
        h = _Harness("start: {ready_after: 3}\n")
        h.process.start(wait=False)
        d = h.process.stop()
        h.child.exited(0)
        self.assertEqual(self.successResultOf(d).status, "stopped")
        self.assertEqual(h.clock.getDelayedCalls(), [])
        self.assertNotIn("running", h.types())

    def test_stopInterruptsAStartWaitingForReadiness(self) -> None:
        """A stop does not queue behind a start waiting for readiness: the start is told it was interrupted (409) and the child is stopped at once."""
        h = _Harness("restart: {policy: always, interval: 1}\n")
        starting = h.process.start()
        stopping = h.process.stop()
        failure = self.failureResultOf(starting, StateError)
        self.assertIn("interrupted before it was ready (stop requested)", str(failure.value))
        self.assertEqual(h.child.signals, [signal.SIGTERM])
        self.assertNoResult(stopping)
        h.child.exited(0)
        self.assertEqual(self.successResultOf(stopping).status, "stopped")
        self.assertEqual(h.types()[-1], "stopped")
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_stopInterruptsARestartsPause(self) -> None:
        """A stop during a restart's pause ends the restart (409) without spawning, and the process stays stopped."""
        h = _Harness("restart: {delay: 2}\n")
        h.process.start(wait=False)
        h.clock.advance(1)
        restarting = h.process.restart()
        h.child.exited(0)  # the restart's stop completes; the 2 s pause begins
        stopping = h.process.stop()
        self.failureResultOf(restarting, StateError)
        self.assertEqual(self.successResultOf(stopping).status, "stopped")
        h.clock.advance(10)
        self.assertEqual(len(h.reactor.spawned), 1)
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_stopDuringARestartsStopSkipsTheStart(self) -> None:
        """A stop that arrives while a restart is still stopping the old child leaves nothing spawned."""
        h = _Harness("restart: {delay: 2}\n")
        h.process.start(wait=False)
        h.clock.advance(1)
        restarting = h.process.restart()
        stopping = h.process.stop()
        h.child.exited(0)
        self.failureResultOf(restarting, StateError)
        self.assertEqual(self.successResultOf(stopping).status, "stopped")
        h.clock.advance(10)
        self.assertEqual(len(h.reactor.spawned), 1)

    def test_shutdownDuringAStartThatNeverBecomesReady(self) -> None:
        """Shutting down while a start waits for readiness for ever (start_timeout 0) stops the child at once; no new start is accepted."""
        h = _Harness("health: {probe: tcp, port: 9, start_timeout: 0}\n",
                     probeFactory=lambda health: _NeverReady())
        starting = h.process.start()
        done = h.process.shutdown()
        self.failureResultOf(starting, StateError)
        self.assertEqual(h.child.signals, [signal.SIGTERM])
        h.child.exited(0)
        self.successResultOf(done)
        self.failureResultOf(h.process.start(), StateError)
        self.assertEqual(len(h.reactor.spawned), 1)

    def test_stopCancelsAScheduledRestart(self) -> None:
        """Stopping a crashed process that waits for its restart cancels the restart."""
        h = _Harness("restart: {policy: always, interval: 5}\n")
        h.process.start(wait=False)
        h.child.exited(1)
        self.assertEqual(h.process.snapshot().next_restart_in, 5)
        self.assertEqual(self.successResultOf(h.process.stop()).status, "stopped")
        self.assertEqual(h.clock.getDelayedCalls(), [])
        self.assertIsNone(h.process.snapshot().next_restart_in)
        h.clock.advance(100)
        self.assertEqual(len(h.reactor.spawned), 1)

    def test_stopOnStoppedIsANoOp(self) -> None:
        """stop on a stopped process succeeds at once and emits nothing."""
        h = _Harness()
        snapshot = self.successResultOf(h.process.stop())
        self.assertEqual(snapshot.status, "stopped")
        self.assertEqual(h.events, [])
        self.assertEqual(h.reactor.spawned, [])

    def test_startOnRunningIsANoOp(self) -> None:
        """start on a running process succeeds with the same pid and spawns nothing."""
        h = _Harness()
        h.startRunning()
        pid = h.process.pid
        snapshot = self.successResultOf(h.process.start())
        self.assertEqual((snapshot.status, snapshot.pid), ("running", pid))
        self.assertEqual(len(h.reactor.spawned), 1)

    def test_startWhileStartingWaitsForTheSameChild(self) -> None:
        """A second start while starting spawns nothing and fires when the first child is ready."""
        h = _Harness()
        first = h.process.start()
        second = h.process.start()
        self.assertEqual(len(h.reactor.spawned), 1)
        self.assertNoResult(second)
        h.clock.advance(h.config.ready_after)
        self.assertEqual(self.successResultOf(first).pid, self.successResultOf(second).pid)

    def test_groupOfLeaderIsKilledAfterItExits(self) -> None:
        """Once the child (its group's leader) has exited, the rest of its group is SIGKILLed."""
        h = _Harness()
        h.startRunning()
        pid = h.child.pid
        h.child.exited(1)
        self.assertEqual(h.reactor.groupKills, [(pid, signal.SIGKILL)])
        h.clock.advance(0)
        pid2 = h.child.pid
        d = h.process.stop()
        h.child.exited(0)
        self.successResultOf(d)
        self.assertEqual(h.reactor.groupKills, [(pid, signal.SIGKILL), (pid2, signal.SIGKILL)])

    def test_monitorOnlyRefusesCommands(self) -> None:
        """In monitor-only mode start, stop and restart fail with a StateError that says why."""
        from orchestrator.supervision.monitored import MonitoredProcess

        h = _Harness()
        process = MonitoredProcess(h.config, reactor=h.reactor, policy=None, events=h.bus)
        self.assertEqual(process.status, "unknown")
        for command in (process.start, process.stop, process.restart):
            failure = self.failureResultOf(command(), StateError)
            self.assertIn("monitor-only", failure.getErrorMessage())
        self.assertEqual(h.reactor.spawned, [])


class RestartTests(SynchronousTestCase):
    """
    Manual restarts: stop, restart.delay, start; serialised.
    """

    def test_restartWaitsRestartDelay(self) -> None:
        """restart stops the child, waits exactly restart.delay after it is reaped, then spawns a new one."""
        h = _Harness("restart: {delay: 2}\n")
        h.startRunning()
        old = h.child
        d = h.process.restart()
        self.assertEqual(old.signals, [signal.SIGTERM])
        h.clock.advance(1)
        old.exited(0)
        self.assertEqual(h.process.status, "stopped")
        h.clock.advance(2 - _EPS)
        self.assertEqual(len(h.reactor.spawned), 1)
        h.clock.advance(_EPS)
        self.assertEqual(len(h.reactor.spawned), 2)
        self.assertNoResult(d)  # waits for the new child to be ready
        h.clock.advance(h.config.ready_after)
        snapshot = self.successResultOf(d)
        self.assertEqual((snapshot.status, snapshot.pid, snapshot.restart_count),
                         ("running", h.child.pid, 1))
        self.assertEqual(h.types()[-1], "restarted")
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def _driveRestarts(self, h, steps: int = 40) -> tuple[list[int], int]:
        """
        Let children die of their stop signal while fake time passes; the
        pids seen and the most children alive at once.
        """
        pids = [h.child.pid]
        maxAlive = 0
        for _ in range(steps):  # bounded: each step is 0.5 s of fake time
            for child in h.alive():
                if signal.SIGTERM in child.signals:
                    child.exited(0)
            h.clock.advance(0.5)
            if h.child.pid is not None and h.child.pid not in pids:
                pids.append(h.child.pid)
            maxAlive = max(maxAlive, len(h.alive()))
        return pids, maxAlive

    def test_concurrentRestartsCoalesce(self) -> None:
        """Five restarts at once make one restart: one new child, and all five answered with its outcome."""
        h = _Harness("restart: {delay: 1}\nstop: {timeout: 3}\n")
        h.startRunning()
        requests = [h.process.restart() for _ in range(5)]
        pids, maxAlive = self._driveRestarts(h)
        self.assertEqual(maxAlive, 1)
        self.assertEqual(len(h.reactor.spawned), 2)
        self.assertEqual({self.successResultOf(d).pid for d in requests}, {pids[1]})
        self.assertEqual(h.process.restartCount, 1)
        self.assertEqual(h.types().count("restarted"), 1)

    def test_restartAfterAStopDoesNotJoinTheEarlierRestart(self) -> None:
        """A restart asked after a stop that came after a pending restart is a new restart: the process ends up running."""
        h = _Harness("restart: {delay: 1}\nstop: {timeout: 3}\n")
        h.startRunning()
        first = h.process.restart()
        stopped = h.process.stop()
        second = h.process.restart()
        self._driveRestarts(h)
        self.failureResultOf(first, StateError)
        self.successResultOf(stopped)
        self.assertEqual(self.successResultOf(second).status, "running")
        self.assertEqual(h.process.status, "running")

    def test_waitingRestartJoiningAnUnwaitedOneWaitsForReadiness(self) -> None:
        """A restart that waits, joining one that does not, answers only once the new child is ready."""
        h = _Harness("restart: {delay: 1}\nstop: {timeout: 3}\nstart: {ready_after: 5}\n")
        h.startRunning()
        unwaited = h.process.restart(wait=False)
        waited = h.process.restart(wait=True)
        h.child.exited(0)
        h.clock.advance(1)
        self.assertEqual(self.successResultOf(unwaited).status, "starting")
        self.assertNoResult(waited)
        h.clock.advance(5)
        self.assertEqual(self.successResultOf(waited).status, "running")
        self.assertEqual(len(h.reactor.spawned), 2)

    def test_signalGoesToTheGroupOrTheProcess(self) -> None:
        """sendSignal signals the child's group by default, the child alone with toGroup=False, and changes nothing else."""
        h = _Harness()
        h.startRunning()
        snapshot = h.process.sendSignal(signal.SIGUSR1)
        h.process.sendSignal(signal.SIGUSR2, toGroup=False)
        self.assertEqual(h.child.signals, [signal.SIGUSR1, ("process", signal.SIGUSR2)])
        self.assertEqual(snapshot.status, "running")
        self.assertEqual(h.process.status, "running")

    def test_signalToAStoppedProcessIsRefused(self) -> None:
        """sendSignal on a process with no child raises StateError (the API's 409)."""
        h = _Harness()
        with self.assertRaises(StateError):
            h.process.sendSignal(signal.SIGUSR1)

    def test_restartOfStoppedProcessStartsIt(self) -> None:
        """restart on a stopped process starts it after restart.delay."""
        h = _Harness("restart: {delay: 2}\n")
        d = h.process.restart(wait=False)
        self.assertEqual(h.reactor.spawned, [])
        h.clock.advance(2)
        self.assertEqual(self.successResultOf(d).status, "starting")


class SpawnFailureTests(SynchronousTestCase):
    """
    A child that cannot be spawned at all.
    """

    def setUp(self) -> None:
        directory = tempfile.mkdtemp(prefix="orch-spawn-")
        self.executable = os.path.join(directory, "server")
        with open(self.executable, "w") as f:
            f.write("#!/bin/sh\n")
        os.chmod(self.executable, stat.S_IRWXU)
        self.loaded = _config(command=f'["{self.executable}"]')
        self.addCleanup(lambda: os.path.exists(self.executable) and os.remove(self.executable))

    def test_missingExecutable(self) -> None:
        """An executable removed after the configuration was loaded fails the start with SpawnError naming its path; status crashed, a retry scheduled."""
        logs = _LogCapture(self)
        os.remove(self.executable)
        h = _Harness(loaded=self.loaded)
        failure = self.failureResultOf(h.process.start(), SpawnError)
        self.assertIn(self.executable, failure.getErrorMessage())
        self.assertIn("No such file or directory", failure.getErrorMessage())
        self.assertEqual(h.process.status, "crashed")
        self.assertEqual(h.reactor.spawned, [])
        self.assertEqual(h.types(), ["spawn_failed", "restart_scheduled"])
        self.assertEqual(h.process.exits[-1].cause, "spawn_failed")
        self.assertEqual(len(logs.matching(f"Failed to start backend: No such file or directory: {self.executable}")), 1)

    def test_notExecutable(self) -> None:
        """An executable without the execute bit fails with a permission message naming its path."""
        os.chmod(self.executable, stat.S_IRUSR | stat.S_IWUSR)
        h = _Harness(loaded=self.loaded)
        failure = self.failureResultOf(h.process.start(), SpawnError)
        self.assertIn(f"Permission denied (not executable): {self.executable}", failure.getErrorMessage())

    def test_spawnerOSError(self) -> None:
        """An OSError from the spawner is a SpawnError with the path; the process is crashed."""
        h = _Harness(loaded=self.loaded)
        h.reactor.spawnError = OSError(13, "Permission denied")
        failure = self.failureResultOf(h.process.start(), SpawnError)
        self.assertEqual(failure.getErrorMessage(), f"Permission denied: {self.executable}")
        self.assertEqual(h.process.status, "crashed")

    def test_spawnFailureDuringAutoRestartIsRetried(self) -> None:
        """If the executable vanishes between automatic restarts, the restart is retried on the policy's schedule."""
        h = _Harness(
            loaded=_config("restart: {policy: always, interval: 1, max_attempts: 3}\n",
                           command=f'["{self.executable}"]'))
        h.process.start(wait=False)
        os.remove(self.executable)
        h.child.exited(1)
        h.clock.advance(1)
        self.assertEqual(h.process.status, "crashed")
        self.assertEqual(h.process.exits[-1].cause, "spawn_failed")
        self.assertEqual(h.process.attempts, 2)
        h.clock.advance(1)
        h.clock.advance(1)
        self.assertTrue(h.process.gaveUp)
        self.assertEqual(len(h.reactor.spawned), 1)
        self.assertEqual(h.clock.getDelayedCalls(), [])


    def test_workingDirThatAppearsLaterRecovers(self) -> None:
        """A working_dir missing at the first spawn is retried on the policy's schedule, and the child starts once it exists."""
        workdir = os.path.join(tempfile.mkdtemp(prefix="orch-late-"), "late")
        h = _Harness(loaded=_config(
            f"working_dir: {workdir}\nrestart: {{policy: always, interval: 1, max_attempts: 10}}\n"))
        failure = self.failureResultOf(h.process.start(), SpawnError)
        self.assertIn("No such working directory", failure.getErrorMessage())
        self.assertEqual(h.process.snapshot().next_restart_in, 1)
        h.clock.advance(1)
        self.assertEqual(h.process.attempts, 2)
        os.makedirs(workdir)
        h.clock.advance(1)
        self.assertEqual(h.process.status, "starting")
        self.assertEqual(h.child.path, workdir)
        self.assertEqual(h.process.restartsByReason, {"spawn_failed": 2})
        self.assertIn("restart_scheduled", h.types())

    def test_transientSpawnErrorUsesTheBackoff(self) -> None:
        """An EAGAIN from the spawner is retried after the backoff's first delay, with the same budget as a crash."""
        import errno as _errno

        h = _Harness(loaded=self.loaded)
        h.reactor.spawnError = OSError(_errno.EAGAIN, "Resource temporarily unavailable")
        self.failureResultOf(h.process.start(), SpawnError)
        self.assertEqual(h.process.exits[-1].cause, "spawn_failed")
        self.assertEqual(h.process.attempts, 1)
        h.clock.advance(h.process.snapshot().next_restart_in)
        self.assertEqual(len(h.reactor.spawned), 1)
        self.assertEqual(h.process.status, "starting")

    def test_spawnFailuresGiveUpAtTheCap(self) -> None:
        """Spawn failures count against max_attempts like exits: the process gives up and says so."""
        os.remove(self.executable)
        h = _Harness(loaded=self.loaded)  # backoff, max_attempts 3
        self.failureResultOf(h.process.start(), SpawnError)
        for _ in range(10):
            h.clock.advance(60)
        self.assertTrue(h.process.gaveUp)
        self.assertEqual(h.process.restartsByReason, {"spawn_failed": 3})
        self.assertEqual(h.clock.getDelayedCalls(), [])


class DaemonizingTests(SynchronousTestCase):
    """
    A command that forks into the background and exits 0 is told apart
    from a crash.
    """

    def test_daemonizingCommandIsNamedWithTheFix(self) -> None:
        """Exit 0 before ready while the process group lives on: crashed, gave up at once, and the error says to run it in the foreground."""
        logs = _LogCapture(self)
        h = _Harness("restart: {policy: always, interval: 1, max_attempts: 5}\n")
        h.reactor.killGroup = lambda pgid, sig: sig == 0 or h.reactor.groupKills.append((pgid, sig))
        h.process._killGroup = h.reactor.killGroup
        d = h.process.start()
        pid = h.child.pid
        h.child.exited(0)
        failure = self.failureResultOf(d, StartFailed)
        self.assertIn("daemonized", failure.getErrorMessage())
        self.assertIn("run it without forking into the background", failure.getErrorMessage())
        self.assertEqual(h.process.status, "crashed")
        self.assertTrue(h.process.gaveUp)
        self.assertEqual(h.types()[-2:], ["crashed", "gave_up"])
        self.assertEqual(h.reactor.groupKills, [(pid, signal.SIGKILL)])  # what it left is ended
        h.clock.advance(60)
        self.assertEqual(len(h.reactor.spawned), 1)
        self.assertEqual(len(logs.matching(f"backend daemonized: its command exited 0 (PID {pid})")), 1)

    def test_daemonThatLeftItsGroupIsNamedAndEnded(self) -> None:
        """Exit 0 before ready while a process it forked lives on in a session of its own (double fork + setsid): daemonized, that session's group ended too."""
        h = _Harness("restart: {policy: always, interval: 1, max_attempts: 5}\n")
        h.process._killGroup = lambda pgid, sig: sig != 0 and h.reactor.groupKills.append((pgid, sig))
        h.process._escaped = lambda name: [(4243, 4242)]
        d = h.process.start()
        pid = h.child.pid
        h.child.exited(0)
        failure = self.failureResultOf(d, StartFailed)
        self.assertIn("PIDs [4243] it forked lived on in a session of their own",
                      failure.getErrorMessage())
        self.assertIn("run it without forking into the background", failure.getErrorMessage())
        self.assertTrue(h.process.gaveUp)
        self.assertEqual(h.reactor.groupKills, [(pid, signal.SIGKILL), (4242, signal.SIGKILL)])

    def test_cleanExitWithoutLeftoversIsNoDaemon(self) -> None:
        """Exit 0 before ready with nothing left in the group is an ordinary exit for the policy."""
        h = _Harness("restart: {policy: always, interval: 1, max_attempts: 5}\n")
        h.process.start(wait=False)
        h.child.exited(0)
        self.assertFalse(h.process.gaveUp)
        self.assertIn("restart_scheduled", h.types())


class EnvironmentTests(SynchronousTestCase):
    """
    What a child's environment holds, deliberately.
    """

    environ = {
        "PATH": "/usr/local/bin:/usr/bin",
        "HOME": "/home/op",
        "ORCHESTRATOR_ADMIN_TOKEN": "s3cret-token",
        "NOTIFY_SOCKET": "/run/systemd/notify",
        "WATCHDOG_USEC": "30000000",
        "WATCHDOG_PID": "1",
        "LISTEN_FDS": "1",
        "HOOK_SECRET": "hmac-key",
    }

    def loaded(self, block: str, tmp: str):
        envFile = os.path.join(tmp, ".env")
        with open(envFile, "w") as f:
            f.write("DB_URL=postgres://db\nDOTENV_ONLY=private\n")
        text = (
            "notifiers:\n  - {type: webhook, url: 'https://hooks.invalid/x', secret_env: HOOK_SECRET}\n"
            "processes:\n  backend:\n    command: [\"{python}\", \"-c\", \"pass\"]\n"
            + textwrap.indent(textwrap.dedent(block), "    ")
        )
        return loadText(text, envFile=envFile, environ=dict(self.environ))

    def test_inheritedEnvironmentLeavesSecretsOut(self) -> None:
        """A child inherits the orchestrator's environment without the admin token, NOTIFY_SOCKET, WATCHDOG_*, LISTEN_* or webhook secrets."""
        loaded = self.loaded("env: {FOO: bar}\n", tempfile.mkdtemp(prefix="orch-env-"))
        config = loaded.config
        env = childEnvironment(config.processes["backend"], self.environ, config.dotenv,
                               set(config.secret_env))
        self.assertEqual(env, {"PATH": "/usr/local/bin:/usr/bin", "HOME": "/home/op", "FOO": "bar"})

    def test_dotenvOnlyByName(self) -> None:
        """.env values reach a child only when env_from_dotenv names them."""
        loaded = self.loaded("inherit_env: false\nenv_from_dotenv: [DB_URL]\n",
                             tempfile.mkdtemp(prefix="orch-env-"))
        config = loaded.config
        self.assertEqual(config.dotenv.get("DOTENV_ONLY"), "private")
        env = childEnvironment(config.processes["backend"], self.environ, config.dotenv,
                               set(config.secret_env))
        self.assertEqual(env, {"PATH": "/usr/local/bin:/usr/bin", "DB_URL": "postgres://db"})

    def test_spawnedChildGetsThatEnvironment(self) -> None:
        """The environment handed to the spawner is exactly the computed one (working directory too)."""
        from orchestrator.supervision.supervisor import Supervisor

        loaded = self.loaded("env: {FOO: bar}\nenv_from_dotenv: [DB_URL]\n",
                             tempfile.mkdtemp(prefix="orch-env-"))
        reactor = FakeProcessReactor()
        supervisor = Supervisor(loaded.config, loaded.kinds, reactor, reactor.spawner,
                                EventBus(reactor), environ=dict(self.environ),
                                killGroup=reactor.killGroup)
        supervisor.startService()
        self.assertEqual(reactor.last.env, {"PATH": "/usr/local/bin:/usr/bin", "HOME": "/home/op",
                                            "FOO": "bar", "DB_URL": "postgres://db"})
        self.assertEqual(reactor.last.path, loaded.config.processes["backend"].working_dir)
        d = supervisor.stopService()
        reactor.last.exited(0)
        self.successResultOf(d)
