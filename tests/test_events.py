"""
Tests for L{orchestrator.notify.events}: the event value and the bus that hands
each event to every notifier and subscriber under its own error handling.
"""

from __future__ import annotations

import json
import signal

from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from orchestrator.notify.events import EVENT_TYPES, Event, EventBus
from tests.fakes import FakeProcessReactor, ScriptedProbe, loadText, makeOrchestrator, runNotifiers

DESIGN_FIELDS = {"id", "type", "process", "from", "to", "reason", "pid", "exit_code",
                 "signal", "restart_count", "attempt", "timestamp"}

CONFIG = """
processes:
  backend:
    command: ["{python}", "-c", "pass"]
    url: "http://127.0.0.1:3000"
    restart: {policy: backoff, max_attempts: 5}
    health: {probe: http, interval: 5}
notifiers: []
"""


def build(yaml: str = CONFIG):
    """
    An orchestrator on a fake process reactor, probes answering healthy at
    once, started.
    """
    loaded = loadText(yaml)
    reactor = FakeProcessReactor()
    reactor.advance(1_000)
    orchestrator = makeOrchestrator(loaded, reactor,
                                    probeFactory=lambda h: ScriptedProbe(auto=True))
    return orchestrator, reactor


class Recorder:
    """
    A notifier that records what it is given.
    """

    def __init__(self, name: str = "recorder") -> None:
        self.name = name
        self.events: list[Event] = []

    def notify(self, event: Event) -> None:
        self.events.append(event)

    @property
    def types(self) -> list[str]:
        return [e.type for e in self.events]


class Raising:
    name = "raising"

    def __init__(self) -> None:
        self.calls = 0

    def notify(self, event):
        self.calls += 1
        raise ZeroDivisionError("notifier bug")


class FailingLater:
    name = "failing-later"

    def __init__(self) -> None:
        self.pending: list[Deferred] = []

    def notify(self, event):
        d = Deferred()
        self.pending.append(d)
        return d


def captureLog(testCase) -> list[dict]:
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    testCase.addCleanup(globalLogPublisher.removeObserver, events.append)
    return events


class EventValueTests(SynchronousTestCase):
    def test_toJSONHasEveryDesignField(self) -> None:
        """toJSON() has every DESIGN field, with "from" (not "from_"), and is JSON-serialisable."""
        clock = Clock()
        clock.advance(1234.5)
        event = EventBus(clock).emit("crashed", "backend", from_="running", to="crashed",
                                     reason="exit code 1", pid=42, exit_code=1,
                                     restart_count=3, attempt=2)
        data = event.toJSON()
        self.assertLessEqual(DESIGN_FIELDS, set(data))
        self.assertNotIn("from_", data)
        self.assertEqual(
            {k: data[k] for k in DESIGN_FIELDS - {"id"}},
            {"type": "crashed", "process": "backend", "from": "running", "to": "crashed",
             "reason": "exit code 1", "pid": 42, "exit_code": 1, "signal": None,
             "restart_count": 3, "attempt": 2, "timestamp": 1234.5},
        )
        self.assertTrue(data["id"].startswith("evt_"))
        self.assertEqual(json.loads(json.dumps(data)), data)

    def test_idsAreUniqueAndSequenceGrows(self) -> None:
        """Each emitted event gets a fresh id and the next sequence number."""
        bus = EventBus(Clock())
        events = [bus.emit("running", "backend") for _ in range(5)]
        self.assertEqual(len({e.id for e in events}), 5)
        self.assertEqual([e.sequence for e in events], [1, 2, 3, 4, 5])

    def test_recentKeepsTheLastEventsAndEmittedCountsAll(self) -> None:
        """recent holds the last `keep` events, oldest first; emitted counts every event."""
        bus = EventBus(Clock(), keep=3)
        events = [bus.emit("running", f"p{n}") for n in range(5)]
        self.assertEqual(list(bus.recent), events[2:])
        self.assertEqual(bus.emitted, 5)


class SupervisionEventTests(SynchronousTestCase):
    def test_lifecycleEventsCarryTheirFacts(self) -> None:
        """Start, crash (exit code and signal), restart and stop events carry pid, codes, counts and clock time."""
        orchestrator, reactor = build()
        seen: list[Event] = []
        orchestrator.events.subscribe(seen.append)
        orchestrator.startService()
        firstPid = reactor.last.pid
        reactor.advance(1)
        reactor.last.exited(3)
        reactor.advance(0)
        reactor.advance(1)
        secondPid = reactor.last.pid
        reactor.last.killed(signal.SIGKILL)
        reactor.advance(5)
        reactor.advance(1)
        orchestrator.process("backend").stop()
        reactor.last.exited(0)

        for event in seen:
            self.assertLessEqual(DESIGN_FIELDS, set(event.toJSON()), event)
            self.assertIn(event.type, EVENT_TYPES)
            json.dumps(event.toJSON())
        byType: dict[str, list[Event]] = {}
        for event in seen:
            byType.setdefault(event.type, []).append(event)
        self.assertEqual(
            [e.type for e in seen],
            ["starting", "running", "crashed", "restart_scheduled", "starting", "running",
             "crashed", "restart_scheduled", "starting", "running", "stopping", "stopped"],
        )
        starting = byType["starting"][0]
        self.assertEqual((starting.process, starting.from_, starting.to, starting.pid),
                         ("backend", "stopped", "starting", firstPid))
        first, second = byType["crashed"]
        self.assertEqual(
            (first.from_, first.to, first.pid, first.exit_code, first.signal, first.reason,
             first.restart_count, first.timestamp),
            ("running", "crashed", firstPid, 3, None, "exit code 3", 0, 1_001.0),
        )
        self.assertEqual((second.pid, second.exit_code, second.signal, second.restart_count),
                         (secondPid, None, signal.SIGKILL, 1))
        self.assertEqual([e.attempt for e in byType["restart_scheduled"]], [1, 2])
        stopped = byType["stopped"][0]
        self.assertEqual((stopped.from_, stopped.to, stopped.exit_code, stopped.restart_count),
                         ("stopping", "stopped", 0, 2))


class EventBusIsolationTests(SynchronousTestCase):
    def test_raisingNotifierIsLoggedAndOthersStillNotified(self) -> None:
        """A notifier raising synchronously is logged; notifiers after it still get the event."""
        log = captureLog(self)
        bus = EventBus(Clock())
        raising, recorder = Raising(), Recorder()
        bus.setNotifiers([(raising, None), (recorder, None)])
        event = bus.emit("crashed", "backend")
        self.assertEqual(recorder.events, [event])
        self.assertEqual(raising.calls, 1)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        [logged] = [e for e in log if e.get("log_failure") is not None]
        self.assertEqual((logged["notifier"], logged["type"], logged["process"]),
                         ("raising", "crashed", "backend"))

    def test_deferredFailureIsLoggedAndDoesNotDisturbTheBus(self) -> None:
        """A notifier whose Deferred fails later is logged then; the bus has moved on already."""
        bus = EventBus(Clock())
        later, recorder = FailingLater(), Recorder()
        bus.setNotifiers([(later, None), (recorder, None)])
        bus.emit("crashed", "backend")
        bus.emit("restart_scheduled", "backend")
        self.assertEqual(recorder.types, ["crashed", "restart_scheduled"])
        self.assertEqual(self.flushLoggedErrors(), [])
        later.pending[0].errback(ConnectionError("webhook down"))
        later.pending[1].callback(None)
        self.assertEqual(len(self.flushLoggedErrors(ConnectionError)), 1)

    def test_slowNotifierDoesNotBlockEmit(self) -> None:
        """emit() returns while a notifier's Deferred is still pending."""
        bus = EventBus(Clock())
        later = FailingLater()
        bus.setNotifiers([(later, None)])
        event = bus.emit("running", "backend")
        self.assertIsInstance(event, Event)
        self.assertNoResult(later.pending[0])

    def test_failingNotifiersDoNotStopSupervision(self) -> None:
        """With notifiers raising and failing on every event, a crash is still restarted."""
        orchestrator, reactor = build()
        later, recorder = FailingLater(), Recorder()
        runNotifiers(
            orchestrator, *[(Raising(), None), (type("F", (), {"name": "f", "notify":
                                                lambda self, e: fail(ValueError("no"))})(), None),
             (later, None), (recorder, None)])
        orchestrator.startService()
        reactor.advance(1)
        reactor.last.exited(1)
        reactor.advance(0)
        reactor.advance(1)
        process = orchestrator.process("backend")
        self.assertEqual((process.status, process.restartCount, len(reactor.spawned)),
                         ("running", 1, 2))
        self.assertEqual(recorder.types, ["starting", "running", "crashed",
                                          "restart_scheduled", "starting", "running"])
        for d in later.pending:
            d.errback(RuntimeError("late"))
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 6)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 6)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 6)


class EventFilterTests(SynchronousTestCase):
    def test_notifierGetsOnlyItsEventTypes(self) -> None:
        """A notifier registered with a set of types gets only those; one with None gets all."""
        bus = EventBus(Clock())
        picky, everything = Recorder("picky"), Recorder("all")
        bus.setNotifiers([(picky, frozenset({"crashed", "gave_up"})), (everything, None)])
        for kind in ("starting", "running", "crashed", "restart_scheduled", "gave_up"):
            bus.emit(kind, "backend")
        self.assertEqual(picky.types, ["crashed", "gave_up"])
        self.assertEqual(len(everything.events), 5)

    def test_configuredEventsFilterApplies(self) -> None:
        """notifiers[].events from the YAML filters what that notifier sees."""
        orchestrator, reactor = build(CONFIG.replace(
            "notifiers: []", "notifiers:\n  - {type: log, events: [crashed]}\n  - {type: log}"))
        log = captureLog(self)
        orchestrator.startService()
        reactor.advance(1)
        reactor.last.exited(2)
        eventLines = [e for e in log if e.get("log_namespace") == "orchestrator.events"]
        # the unfiltered notifier logs all of them (the respawn's starting
        # too: it is immediate), the filtered one the crash only
        self.assertEqual(sorted(e["event_type"] for e in eventLines),
                         sorted(["starting", "running", "crashed", "crashed",
                                 "restart_scheduled", "starting"]))


class SubscriberTests(SynchronousTestCase):
    def test_subscribersGetEveryLaterEventUntilUnsubscribed(self) -> None:
        """A subscriber sees events emitted after subscribing and none after unsubscribing."""
        bus = EventBus(Clock())
        bus.emit("starting", "backend")
        seen: list[Event] = []
        unsubscribe = bus.subscribe(seen.append)
        bus.emit("running", "backend")
        unsubscribe()
        unsubscribe()  # idempotent
        bus.emit("crashed", "backend")
        self.assertEqual([e.type for e in seen], ["running"])

    def test_raisingSubscriberIsLoggedAndOthersStillCalled(self) -> None:
        """A subscriber that raises is logged; later subscribers and notifiers still get the event."""
        bus = EventBus(Clock())
        recorder, seen = Recorder(), []
        bus.setNotifiers([(recorder, None)])
        bus.subscribe(lambda e: 1 / 0)
        bus.subscribe(seen.append)
        bus.emit("crashed", "backend")
        self.assertEqual(len(seen), 1)
        self.assertEqual(recorder.types, ["crashed"])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_subscriberMayUnsubscribeWhileCalled(self) -> None:
        """Unsubscribing from inside the callback neither skips nor repeats other subscribers."""
        bus = EventBus(Clock())
        seen: list[str] = []
        holder = {}

        def once(event):
            seen.append("once")
            holder["unsubscribe"]()

        holder["unsubscribe"] = bus.subscribe(once)
        bus.subscribe(lambda e: seen.append("always"))
        bus.emit("running", "backend")
        bus.emit("running", "backend")
        self.assertEqual(seen, ["once", "always", "always"])


class EventOrderTests(SynchronousTestCase):
    def test_dependentStartSeenInSequenceOrderEverywhere(self) -> None:
        """backend running starts its dependent from inside the delivery; SSE, /api/v1/events and notifiers all see sequence order."""
        from tests.test_api import ApiHarness, config

        api = ApiHarness(config().replace("    start: {ready_after: 1}\n",
                                          "    depends_on: [backend]\n    start: {ready_after: 1}\n"),
                         probe=None)
        self.addCleanup(api.stopOrchestrator)
        self.assertEqual(api.orchestrator.process("worker").status, "stopped")
        recorder = Recorder()
        api.orchestrator.events.setNotifiers([(recorder, None)])
        chunks: list[bytes] = []
        d = api.stub.request("GET", "http://127.0.0.1:8000/api/v1/events/stream",
                             headers={"Authorization": f"Bearer {api.admin.token}"})
        d.addCallback(lambda response: api.stub.collect(response, chunks.append))
        api.stub.flush()
        api.advance(0.01)
        api.probes["backend"].answer(True)
        api.ready("worker")
        api.stub.flush()
        first = recorder.events[0].sequence
        fromNotifier = [(e.sequence, e.type, e.process) for e in recorder.events]
        fromList = [(e["sequence"], e["type"], e["process"])
                    for e in api.get(f"/api/v1/events?since={first - 1}").json["events"]]
        fromStream = []
        for block in b"".join(chunks).decode().split("\n\n"):
            if block.startswith("id: "):
                data = json.loads(block.split("data: ", 1)[1])
                fromStream.append((data["sequence"], data["type"], data["process"]))
        self.assertEqual(fromNotifier[:3], [(first, "running", "backend"),
                                            (first + 1, "starting", "worker"),
                                            (first + 2, "running", "worker")])
        self.assertEqual(fromStream, fromNotifier)
        self.assertEqual(fromList, fromNotifier)

    def test_eventEmittedByASubscriberWaitsForTheCurrentOne(self) -> None:
        """A subscriber emitting while handling an event: every later subscriber still sees the first event first."""
        bus = EventBus(Clock())
        seen: list[tuple[str, str]] = []

        def chain(event):
            if event.type == "running":
                bus.emit("starting", "dependent")

        bus.subscribe(chain)
        bus.subscribe(lambda e: seen.append((e.type, str(e.sequence))))
        bus.emit("running", "backend")
        self.assertEqual(seen, [("running", "1"), ("starting", "2")])
