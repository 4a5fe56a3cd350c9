"""
The state machine's table (L{orchestrator.supervision.status}) and the
timers helper (L{orchestrator.supervision.timers}).
"""

from __future__ import annotations

import gc
import tracemalloc

import pytest
from twisted.internet.defer import CancelledError
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from orchestrator.notify.events import EVENT_TYPES as BUS_EVENT_TYPES
from orchestrator.supervision.status import (
    EVENT_TYPES, ILLEGAL, SAME, TRANSITIONS, Input, Status, outcome,
)
from orchestrator.supervision.timers import Timers
from tests.test_process import _Harness


class TableTests(SynchronousTestCase):
    """
    The transition table is complete and consistent.
    """

    def test_everyStatusHasAnOutcomeForEveryInput(self) -> None:
        """Every status x every input is in the table with a status, SAME or ILLEGAL: nothing is left undecided."""
        self.assertEqual(set(TRANSITIONS), set(Status))
        for status in Status:
            self.assertEqual(set(TRANSITIONS[status]), set(Input), status)
            for input, result in TRANSITIONS[status].items():
                self.assertTrue(isinstance(result, Status) or result in (SAME, ILLEGAL),
                                (status, input, result))

    def test_everyInputEmitsAKnownEvent(self) -> None:
        """Each input that can change a status names an event type the bus documents."""
        self.assertEqual(set(EVENT_TYPES), set(Input))
        self.assertLessEqual(set(EVENT_TYPES.values()), set(BUS_EVENT_TYPES))

    def test_everyStatusIsReachableAndLeavable(self) -> None:
        """Every status but unknown is entered by some input, and every status can be left."""
        entered = {r for row in TRANSITIONS.values() for r in row.values() if isinstance(r, Status)}
        self.assertEqual(set(Status) - entered, {Status.UNKNOWN})
        for status, row in TRANSITIONS.items():
            self.assertTrue(any(isinstance(r, Status) and r is not status for r in row.values()),
                            status)

    def test_lookupAcceptsThePlainString(self) -> None:
        """The table is looked up with the status strings processes carry."""
        self.assertIs(outcome("running", Input.HEALTH_FAILED), Status.UNHEALTHY)
        self.assertIs(outcome("stopping", Input.STOP_REQUESTED), SAME)
        self.assertIs(outcome("stopped", Input.READY), ILLEGAL)


class IllegalTransitionTests(SynchronousTestCase):
    """
    An input the table forbids is a logged error, never a silent change.
    """

    @pytest.mark.illegal_transition_expected
    def test_illegalInputIsLoggedAndChangesNothing(self) -> None:
        """A readiness report for a stopped process logs an illegal-transition error and leaves it stopped, no event."""
        logged: list[dict] = []
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        h = _Harness()
        h.process._becameReady()
        self.assertEqual(h.process.status, "stopped")
        self.assertEqual(h.events, [])
        errors = [e for e in logged if "illegal_transition" in e]
        self.assertEqual(len(errors), 1)
        self.assertEqual(errors[0]["illegal_transition"], ("stopped", "ready"))
        self.assertEqual(errors[0]["log_level"].name, "error")

    def test_legalLifeProducesNoIllegalTransition(self) -> None:
        """Start, crash, restart, health failure, stop: every step is on the table (the suite-wide guard would fail otherwise)."""
        h = _Harness("restart: {policy: always, interval: 1}\n")
        h.startRunning()
        h.child.exited(1)
        h.clock.advance(0)
        h.clock.advance(1)
        h.process.healthFailed("HTTP 503")  # -> unhealthy, restart for unhealthiness
        h.child.exited(0)
        h.clock.advance(1)
        d = h.process.stop()
        h.child.exited(0)
        self.successResultOf(d)
        self.assertEqual(h.process.status, "stopped")
        self.assertEqual(h.clock.getDelayedCalls(), [])


class TimersTests(SynchronousTestCase):
    """
    One owner for a process's pending calls.
    """

    def test_startReplacesAndFiredForgets(self) -> None:
        """Starting a timer of a pending name replaces it; a timer that fired is no longer pending."""
        clock, calls = Clock(), []
        timers = Timers(clock)
        timers.start("a", 5, calls.append, 1)
        timers.start("a", 2, calls.append, 2)
        self.assertEqual(timers.remaining("a"), 2)
        clock.advance(2)
        self.assertEqual(calls, [2])
        self.assertEqual(timers.pending, [])
        clock.advance(10)
        self.assertEqual(calls, [2])

    def test_cancelAllLeavesNothing(self) -> None:
        """cancelAll cancels every pending call on the clock, sleeps included (they errback CancelledError)."""
        clock = Clock()
        timers = Timers(clock)
        timers.start("a", 1, lambda: None)
        slept = timers.sleep("b", 3)
        timers.cancelAll()
        self.assertEqual(clock.getDelayedCalls(), [])
        self.failureResultOf(slept, CancelledError)

    def test_sleepFiresAfterItsDelay(self) -> None:
        """sleep() fires after its delay; cancelling the Deferred cancels the timer."""
        clock = Clock()
        timers = Timers(clock)
        d = timers.sleep("p", 2)
        clock.advance(2)
        self.assertIsNone(self.successResultOf(d))
        d = timers.sleep("p", 2)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertFalse(timers.active("p"))


    def test_fireDueCallsOnlyATimerWhoseTimeHasCome(self) -> None:
        """fireDue runs a timer started with no delay at once (and forgets it); a later one stays pending."""
        clock, calls = Clock(), []
        timers = Timers(clock)
        timers.start("later", 1, calls.append, "later")
        timers.start("now", 0, calls.append, "now")
        self.assertFalse(timers.fireDue("later"))
        self.assertTrue(timers.fireDue("now"))
        self.assertEqual((calls, timers.pending), (["now"], ["later"]))
        self.assertFalse(timers.fireDue("now"))
        clock.advance(1)
        self.assertEqual(calls, ["now", "later"])
        self.assertEqual(clock.getDelayedCalls(), [])


class BoundedMemoryTests(SynchronousTestCase):
    """
    A crash loop that never becomes ready retains nothing per restart.
    """

    def test_crashLoopRetainsNoMemoryPerRestart(self) -> None:
        """Thousands of restarts of a child that dies before it is ready: the process's memory stops growing (bounded history)."""
        h = _Harness("restart: {policy: always, interval: 0, max_attempts: 1000000}\n"
                     "start: {ready_after: 5}\nlog: {echo: false}\n")
        bus = h.bus
        bus._subscribers.clear()  # the harness's own list of every event would grow

        def loop(n: int) -> None:
            for _ in range(n):
                h.child.exited(1)
                h.clock.advance(0)
            # The fake reactor records every child and group kill; drop them.
            del h.reactor.spawned[:-1]
            h.reactor.groupKills.clear()

        h.process.start(wait=False)
        tracemalloc.start()  # (it sees only what is allocated after this)
        try:
            loop(400)  # warm-up: every bounded buffer full
            gc.collect()  # cycles (failures and their frames) are garbage, not retained
            before = tracemalloc.take_snapshot()
            loop(1500)
            gc.collect()
            after = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
        growth = sum(s.size_diff for s in after.compare_to(before, "filename"))
        self.assertEqual(h.process.attempts, 1900)
        self.assertEqual(len(h.process.budget.window), 64)
        self.assertEqual(len(h.process.exits), 20)
        # Under 10 bytes per restart on average (L9 measured ~315 before).
        self.assertLess(growth, 1500 * 10, growth)
