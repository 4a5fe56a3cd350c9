"""
Tests for L{orchestrator.logs} (text and JSON line observers, level
filtering) and the C{log} notifier that writes events through them.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tempfile

from twisted.internet.task import Clock
from twisted.logger import Logger, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from orchestrator.config.types import LoggingConfig, NotifierConfig
from orchestrator.notify.events import EventBus
from orchestrator.logs import JSONObserver, TextObserver, buildObserver
from orchestrator.builtin.notifiers import LogNotifier
from tests.fakes import FakeProcessReactor, ScriptedProbe, loadText, makeOrchestrator

TIMESTAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


def observe(level: str = "info", format: str = "text"):
    stream = io.StringIO()
    observer = buildObserver(LoggingConfig(level=level, format=format), stream)
    return Logger(namespace="orchestrator.test", observer=observer), stream


def jsonLines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


class TextObserverTests(SynchronousTestCase):
    def test_lineHasTimeLevelNamespaceAndMessage(self) -> None:
        """A text line is "<UTC time> <LEVEL> [<namespace>] <formatted message>"."""
        log, stream = observe()
        log.warn("{process} health check failed: {reason}", process="backend", reason="HTTP 503")
        [line] = stream.getvalue().splitlines()
        self.assertRegex(
            line, "^" + TIMESTAMP + r" WARN  \[orchestrator\.test\] backend health check failed: HTTP 503$")

    def test_timeIsTheEventTimeInUTCWithMilliseconds(self) -> None:
        """The timestamp is the event's log_time, in UTC, to the millisecond."""
        stream = io.StringIO()
        TextObserver(stream)({"log_time": 86400.25, "log_level": None, "log_format": "x",
                              "log_namespace": "n"})
        self.assertTrue(stream.getvalue().startswith("1970-01-02T00:00:00.250Z INFO  [n] x"),
                        stream.getvalue())

    def test_failureIncludesTheTraceback(self) -> None:
        """A logged failure's traceback follows its message."""
        log, stream = observe()
        try:
            1 / 0
        except ZeroDivisionError:
            log.failure("probe {name} failed", name="http")
        text = stream.getvalue()
        self.assertIn("CRITICAL [orchestrator.test] probe http failed\n", text)
        self.assertIn("ZeroDivisionError", text)


class JSONObserverTests(SynchronousTestCase):
    def test_oneObjectPerLineWithStandardKeysAndFields(self) -> None:
        """Each event is one JSON object: time, level, namespace, message and its own fields."""
        log, stream = observe(format="json")
        log.info("{process} started (PID: {pid})", process="backend", pid=4242)
        log.error("{process} crashed! {why}", process="backend", why="exit code 1",
                  tags=("a", "b"), opaque=object())
        first, second = jsonLines(stream)
        self.assertRegex(first.pop("time"), "^" + TIMESTAMP + "$")
        self.assertEqual(first, {"level": "info", "namespace": "orchestrator.test",
                                 "message": "backend started (PID: 4242)",
                                 "process": "backend", "pid": 4242})
        self.assertEqual(second["level"], "error")
        self.assertEqual(second["message"], "backend crashed! exit code 1")
        self.assertEqual(second["tags"], ["a", "b"])
        self.assertNotIn("opaque", second)
        self.assertFalse(any(k.startswith("log_") for k in second))

    def test_fieldsDoNotOverrideTheStandardKeys(self) -> None:
        """An event field named like a standard key (level, namespace) does not replace it."""
        stream = io.StringIO()
        JSONObserver(stream)({"log_time": 0, "log_format": "hi", "log_namespace": "n",
                              "namespace": "forged", "level": "forged"})
        [record] = jsonLines(stream)
        self.assertEqual((record["namespace"], record["level"], record["message"]),
                         ("n", "info", "hi"))


class LevelFilterTests(SynchronousTestCase):
    def test_debugDroppedAtInfo(self) -> None:
        """At level info, debug events are dropped and info and above are written."""
        log, stream = observe("info", "json")
        log.debug("d")
        log.info("i")
        log.warn("w")
        log.error("e")
        self.assertEqual([r["message"] for r in jsonLines(stream)], ["i", "w", "e"])

    def test_levelWarnDropsInfo(self) -> None:
        """At level warn, info is dropped too."""
        log, stream = observe("warn", "json")
        log.info("i")
        log.warn("w")
        self.assertEqual([r["level"] for r in jsonLines(stream)], ["warn"])

    def test_levelDebugKeepsEverything(self) -> None:
        """At level debug, debug events are written."""
        log, stream = observe("debug", "text")
        log.debug("details")
        self.assertIn("DEBUG [orchestrator.test] details", stream.getvalue())


class LogNotifierTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_000)

    def route(self, level: str = "info", format: str = "text") -> io.StringIO:
        stream = io.StringIO()
        observer = buildObserver(LoggingConfig(level=level, format=format), stream)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        return stream

    def bus(self, **options) -> EventBus:
        bus = EventBus(self.clock)
        bus.setNotifiers([(LogNotifier(NotifierConfig(type="log", options=options), self.clock),
                           None)])
        return bus

    def test_textLineDescribesTheEvent(self) -> None:
        """The text line names the level, the events namespace, type, process, transition and reason."""
        stream = self.route()
        self.bus().emit("crashed", "backend", from_="running", to="crashed",
                        reason="exit code 1", pid=77, exit_code=1)
        lines = [l for l in stream.getvalue().splitlines() if "[orchestrator.events]" in l]
        self.assertEqual(len(lines), 1)
        self.assertRegex(lines[0], "^" + TIMESTAMP + r" INFO  \[orchestrator\.events\] "
                         r"event crashed: backend running -> crashed \(exit code 1\)$")

    def test_jsonLineCarriesTheEventFields(self) -> None:
        """In JSON, the event's fields (process, pid, exit_code, ids, transition) are keys of the line."""
        stream = self.route(format="json")
        event = self.bus().emit("crashed", "backend", from_="running", to="crashed",
                                reason="exit code 1", pid=77, exit_code=1, restart_count=2,
                                attempt=1)
        [record] = [r for r in jsonLines(stream) if r["namespace"] == "orchestrator.events"]
        self.assertEqual(record["level"], "info")
        self.assertEqual(record["message"], "event crashed: backend running -> crashed (exit code 1)")
        expected = {"event_id": event.id, "event_type": "crashed", "process": "backend",
                    "from_status": "running", "to_status": "crashed", "reason": "exit code 1",
                    "pid": 77, "exit_code": 1, "signal": None, "restart_count": 2,
                    "attempt": 1, "timestamp": 1_000.0}
        self.assertEqual({k: record[k] for k in expected}, expected)

    def test_reasonWithBracesIsNotAFormatString(self) -> None:
        """A reason containing {braces} is printed literally, not formatted."""
        stream = self.route()
        self.bus().emit("unhealthy", "backend", from_="running", to="unhealthy",
                        reason='body {"ok": false}')
        self.assertIn('(body {"ok": false})', stream.getvalue())

    def test_configuredLevelIsUsedAndFiltered(self) -> None:
        """The notifier's level option sets the event's level; debug events vanish at info."""
        stream = self.route(level="info")
        self.bus(level="debug").emit("running", "quiet")
        self.bus(level="warn").emit("crashed", "loud", from_="running", to="crashed")
        text = stream.getvalue()
        self.assertNotIn("quiet", text)
        self.assertRegex(text, r"WARN  \[orchestrator\.events\] event crashed: loud")

    def test_orchestratorCrashIsLoggedAsJSON(self) -> None:
        """A real supervised crash reaches the JSON log as the log notifier's event and the supervisor's line."""
        loaded = loadText("""
            processes:
              backend:
                command: ["{python}", "-c", "pass"]
                url: "http://127.0.0.1:3000"
                health: {probe: http}
            notifiers: [{type: log}]
        """)
        reactor = FakeProcessReactor()
        orchestrator = makeOrchestrator(loaded, reactor,
                                        probeFactory=lambda h: ScriptedProbe(auto=True))
        stream = self.route(format="json")
        orchestrator.startService()
        reactor.advance(1)
        pid = reactor.last.pid
        reactor.last.exited(1)
        records = jsonLines(stream)
        [crashed] = [r for r in records if r.get("event_type") == "crashed"]
        self.assertEqual((crashed["process"], crashed["pid"], crashed["exit_code"]),
                         ("backend", pid, 1))
        supervisor = [r for r in records if r["message"].startswith("backend crashed!")]
        self.assertEqual(len(supervisor), 1)
        self.assertEqual((supervisor[0]["level"], supervisor[0]["process"]), ("error", "backend"))
        self.assertTrue(all(re.match(TIMESTAMP, r["time"]) for r in records))


class LogFileRotationTests(SynchronousTestCase):
    """
    C{logging.file} rotates by size and keeps C{logging.backups} copies.
    """

    def test_fileRotatesAndKeepsBackups(self) -> None:
        """Past max_bytes the log file is renamed FILE.1 (older ones shift), and only `backups` copies are kept."""
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        path = os.path.join(directory, "orchestrator.log")
        observer = buildObserver(LoggingConfig(file=path, max_bytes=2048, backups=2))
        log = Logger(namespace="orchestrator.test", observer=observer)
        for i in range(200):
            log.info("line {i} {padding}", i=i, padding="x" * 60)
        self.assertEqual(sorted(os.listdir(directory)),
                         ["orchestrator.log", "orchestrator.log.1", "orchestrator.log.2"])
        for name in os.listdir(directory):
            # a file is rotated before the write that would start past the limit
            self.assertLess(os.path.getsize(os.path.join(directory, name)), 2048 + 200)
        with open(path, encoding="utf-8") as f:
            last = f.read().splitlines()[-1]
        self.assertIn("line 199 ", last)
        with open(path + ".1", encoding="utf-8") as f:
            for line in f.read().splitlines():  # whole lines, never one cut in two
                self.assertRegex(line, "^" + TIMESTAMP + r" INFO  \[orchestrator\.test\] line \d+ x{60}$")
