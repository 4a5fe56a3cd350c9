"""
Unit tests for L{orchestrator.supervision.output}: a child's output split into lines,
kept in memory, logged under the process's name and written to a
size-rotated file.
"""

from __future__ import annotations

import os
import tempfile

from twisted.internet.error import ProcessTerminated
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from orchestrator.config.types import OutputConfig
from orchestrator.supervision.output import LineSplitter, OutputCapture
from tests.test_process import _Harness


class LineSplitterTests(SynchronousTestCase):
    """
    Bytes in, complete lines out.
    """

    def test_partialLinesAreBuffered(self) -> None:
        """A line split over several chunks comes out once, when its newline arrives."""
        s = LineSplitter(100)
        self.assertEqual(s.feed(b"hel"), [])
        self.assertEqual(s.feed(b"lo\nwor"), [b"hello"])
        self.assertEqual(s.feed(b"ld\n\nx"), [b"world", b""])
        self.assertEqual(s.flush(), [b"x"])
        self.assertEqual(s.flush(), [])

    def test_crlfIsStripped(self) -> None:
        """Windows line ends lose their carriage return."""
        self.assertEqual(LineSplitter(100).feed(b"a\r\nb\n"), [b"a", b"b"])

    def test_longLinesAreCut(self) -> None:
        """A line longer than the limit is cut at the limit; the rest starts a new line."""
        s = LineSplitter(4)
        self.assertEqual(s.feed(b"abcdefghij"), [b"abcd", b"efgh"])
        self.assertEqual(s.feed(b"\n"), [b"ij"])

    def test_lineOfExactlyTheLimit(self) -> None:
        """A line of exactly the limit is not cut."""
        self.assertEqual(LineSplitter(4).feed(b"abcd\nef\n"), [b"abcd", b"ef"])

    def test_neverEndingLineDoesNotGrowTheBuffer(self) -> None:
        """Output without newlines never buffers more than the limit."""
        s = LineSplitter(1000)
        cut = []
        for _ in range(100):
            cut += s.feed(b"x" * 777)
            self.assertLessEqual(len(s._buffer), 1000)
        self.assertEqual(len(cut), 77)
        self.assertEqual({len(line) for line in cut}, {1000})


def _capture(**options) -> tuple[OutputCapture, Clock]:
    clock = Clock()
    return OutputCapture("backend", OutputConfig(**options), clock), clock


class OutputCaptureTests(SynchronousTestCase):
    """
    Lines kept, logged and written.
    """

    def setUp(self) -> None:
        self.logs: list[dict] = []
        globalLogPublisher.addObserver(self.logs.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.logs.append)

    def test_linesKeptWithStreamAndPid(self) -> None:
        """Each line is kept with its stream (stdout/stderr), the child's pid, the time and its sequence number."""
        capture, clock = _capture()
        capture.newRun(42)
        clock.advance(7)
        capture.received(1, b"listening\n")
        capture.received(2, b"warning: slow\n")
        self.assertEqual([line.toJSON() for line in capture.tail(10)], [
            {"timestamp": 7, "stream": "stdout", "pid": 42, "text": "listening", "sequence": 1},
            {"timestamp": 7, "stream": "stderr", "pid": 42, "text": "warning: slow", "sequence": 2},
        ])

    def test_ringMadeAtTheFirstLineAndBoundedAlike(self) -> None:
        """Before any output nothing is held; then the last log.lines lines are kept, the oldest dropped."""
        capture, _ = _capture(lines=3)
        capture.newRun(1)
        self.assertIsNone(capture._lines)
        self.assertEqual((tuple(capture.lines), capture.tail(5)), ((), []))
        capture.received(1, b"a\nb\n")
        self.assertEqual([l.text for l in capture.tail(5)], ["a", "b"])
        capture.received(1, b"c\nd\ne\n")
        self.assertEqual([l.text for l in capture.lines], ["c", "d", "e"])
        self.assertEqual([l.sequence for l in capture.lines], [3, 4, 5])
        successor = OutputCapture("backend", OutputConfig(lines=2), Clock())
        capture.handOver(successor)
        self.assertEqual([l.text for l in successor.lines], ["d", "e"])

    def test_noRingWhenNoLineIsKept(self) -> None:
        """log.lines: 0 keeps no line (and holds no ring), yet the sequence counts every line."""
        capture, _ = _capture(lines=0)
        capture.newRun(1)
        capture.received(1, b"a\nb\n")
        self.assertEqual((tuple(capture.lines), capture.sequence, capture._lines), ((), 2, None))

    def test_subscribersGetNewLinesAndTheEnd(self) -> None:
        """A subscriber gets each later kept line with its sequence, then None when the capture closes."""
        capture, _ = _capture()
        capture.newRun(1)
        capture.received(1, b"before\n")
        seen = []
        capture.subscribe(seen.append)
        capture.received(1, b"one\ntwo\n")
        capture.close()
        self.assertEqual([(l.sequence, l.text) for l in seen[:-1]], [(2, "one"), (3, "two")])
        self.assertIsNone(seen[-1])

    def test_handOverKeepsSequenceAndSubscribers(self) -> None:
        """A reload's new capture continues the sequence and feeds the old one's subscribers, who are not told of an end."""
        capture, clock = _capture()
        capture.newRun(1)
        capture.received(1, b"a\n")
        seen = []
        capture.subscribe(seen.append)
        successor = OutputCapture("backend", capture._config, clock)
        capture.handOver(successor)
        capture.close()
        successor.newRun(1)
        successor.received(1, b"b\n")
        self.assertEqual([(l.sequence, l.text) for l in seen], [(2, "b")])
        self.assertEqual([l.text for l in successor.tail(10)], ["a", "b"])

    def test_streamsAreSplitSeparately(self) -> None:
        """Partial lines on stdout and stderr do not mix."""
        capture, _ = _capture()
        capture.newRun(1)
        capture.received(1, b"out-")
        capture.received(2, b"err-")
        capture.received(1, b"line\n")
        capture.received(2, b"line\n")
        self.assertEqual([(l.stream, l.text) for l in capture.tail(10)],
                         [("stdout", "out-line"), ("stderr", "err-line")])

    def test_invalidUTF8IsReplaced(self) -> None:
        """Bytes that are not UTF-8 become U+FFFD instead of failing."""
        capture, _ = _capture()
        capture.newRun(1)
        capture.received(1, b"caf\xc3\xa9 \xff\xfe ok\n")
        self.assertEqual(capture.tail(1)[0].text, "caf\u00e9 \ufffd\ufffd ok")

    def test_longLinesCutAtMaxLineBytes(self) -> None:
        """A line longer than max_line_bytes is kept in pieces of that size."""
        capture, _ = _capture(max_line_bytes=80)
        capture.newRun(1)
        capture.received(1, b"y" * 200 + b"\n")
        self.assertEqual([len(l.text) for l in capture.tail(10)], [80, 80, 40])

    def test_ringBufferKeepsTheLastLines(self) -> None:
        """Only the last `lines` lines are kept in memory."""
        capture, _ = _capture(lines=3)
        capture.newRun(1)
        capture.received(1, b"".join(b"line %d\n" % i for i in range(10)))
        self.assertEqual([l.text for l in capture.tail(10)], ["line 7", "line 8", "line 9"])
        self.assertEqual([l.text for l in capture.tail(2)], ["line 8", "line 9"])
        self.assertEqual(capture.tail(0), [])

    def test_linesZeroKeepsNothing(self) -> None:
        """lines: 0 keeps no output in memory."""
        capture, _ = _capture(lines=0)
        capture.newRun(1)
        capture.received(1, b"a\nb\n")
        self.assertEqual(capture.tail(10), [])

    def test_endedFlushesTheLastPartialLine(self) -> None:
        """When the child's pipes close, an unterminated last line is delivered."""
        capture, _ = _capture()
        capture.newRun(1)
        capture.received(2, b"panic: boom")
        self.assertEqual(capture.tail(10), [])
        capture.ended()
        self.assertEqual([(l.stream, l.text) for l in capture.tail(10)], [("stderr", "panic: boom")])

    def test_echoLogsUnderTheProcessName(self) -> None:
        """With echo, each line is logged in the process's namespace with its stream and pid."""
        capture, _ = _capture()
        capture.newRun(42)
        capture.received(2, b"hello\n")
        [event] = [e for e in self.logs if e.get("log_namespace") == "orchestrator.process.backend"]
        self.assertEqual((event["text"], event["stream"], event["pid"], event["process"]),
                         ("hello", "stderr", 42, "backend"))
        self.assertEqual(formatEvent(event), "[backend] hello")

    def test_echoOff(self) -> None:
        """echo: false keeps lines in memory but does not log them."""
        capture, _ = _capture(echo=False)
        capture.newRun(1)
        capture.received(1, b"quiet\n")
        self.assertEqual(capture.tail(1)[0].text, "quiet")
        self.assertFalse([e for e in self.logs if e.get("log_namespace") == "orchestrator.process.backend"])

    def _echoed(self) -> list[dict]:
        return [e for e in self.logs if e.get("log_namespace") == "orchestrator.process.backend"]

    def test_echoIsRateLimitedWithACountedSuppressedLine(self) -> None:
        """Past echo_rate lines in a second, lines are not echoed; one warning counts them when the second ends, and all stay in memory."""
        capture, clock = _capture(echo_rate=5, lines=100)
        capture.newRun(42)
        capture.received(1, b"".join(b"line %d\n" % i for i in range(12)))
        echoed = self._echoed()
        self.assertEqual([e["text"] for e in echoed], [f"line {i}" for i in range(5)])
        self.assertEqual(len(capture.tail(100)), 12)
        clock.advance(1)
        [notice] = [e for e in self._echoed() if "suppressed" in e.get("log_format", "")]
        self.assertEqual(notice["suppressed"], 7)
        self.assertIn("7 lines suppressed (log.echo_rate: 5 lines/s", formatEvent(notice))
        self.assertEqual(capture.echoSuppressed, 7)
        self.assertEqual(clock.getDelayedCalls(), [])
        # A new second: echoing resumes.
        capture.received(1, b"again\n")
        self.assertEqual(self._echoed()[-1]["text"], "again")

    def test_echoAndTailOfOneChunkKeepTheirOrder(self) -> None:
        """In one chunk, the first echo_rate lines are echoed in order and the last `lines` lines kept, independently."""
        capture, _ = _capture(echo_rate=3, lines=2)
        capture.newRun(1)
        capture.received(1, b"a\nb\nc\nd\ne\n")
        self.assertEqual([e["text"] for e in self._echoed() if "text" in e], ["a", "b", "c"])
        self.assertEqual([l.text for l in capture.tail(10)], ["d", "e"])

    def test_suppressedCountIsReportedAtClose(self) -> None:
        """Lines suppressed just before the process goes away are still reported, and no timer is left behind."""
        capture, clock = _capture(echo_rate=1)
        capture.newRun(1)
        capture.received(1, b"a\nb\nc\n")
        capture.close()
        self.assertEqual(capture.echoSuppressed, 2)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_echoRateZeroIsUnlimited(self) -> None:
        """echo_rate: 0 echoes every line."""
        capture, _ = _capture(echo_rate=0)
        capture.newRun(1)
        capture.received(1, b"x\n" * 500)
        self.assertEqual(len(self._echoed()), 500)

    def test_oldRunsArePipesClosedPastTheBound(self) -> None:
        """Runs whose pipes stay open (a grandchild holds them) are bounded: the oldest is flushed, its pipes closed, its late output dropped and counted."""
        from orchestrator.supervision.output import MAX_OPEN_RUNS

        class Transport:
            closed = False

            def loseConnection(self):
                self.closed = True

        capture, _ = _capture()
        transports = [Transport() for _ in range(MAX_OPEN_RUNS + 1)]
        runs = []
        for pid, transport in enumerate(transports, start=100):
            run = capture.newRun(pid, transport)
            run.received(1, b"partial of %d" % pid)
            runs.append(run)
        self.assertEqual([t.closed for t in transports], [True] + [False] * MAX_OPEN_RUNS)
        self.assertEqual([(l.pid, l.text) for l in capture.tail(10)], [(100, "partial of 100")])
        runs[0].received(1, b"late\n")
        self.assertEqual(capture.droppedBytes, 5)
        self.assertEqual(len(capture.tail(10)), 1)
        # A run that ended by itself no longer counts against the bound.
        runs[1].ended()
        capture.newRun(200, Transport())
        self.assertEqual([t.closed for t in transports], [True] + [False] * MAX_OPEN_RUNS)

    def test_fileRotatesBySize(self) -> None:
        """With log.file, output goes to the file, rotated at max_bytes, keeping `backups` old files."""
        directory = tempfile.mkdtemp(prefix="orch-output-")
        path = os.path.join(directory, "logs", "backend.log")
        capture, _ = _capture(file=path, max_bytes=1024, backups=2)
        capture.newRun(1)
        line = b"x" * 99 + b"\n"  # 100 bytes
        for _ in range(11):  # 1100 bytes: over max_bytes, rotated at the next write
            capture.received(1, line)
        self.assertEqual(os.listdir(os.path.dirname(path)), ["backend.log"])
        capture.received(1, line)
        self.assertEqual(sorted(os.listdir(os.path.dirname(path))), ["backend.log", "backend.log.1"])
        self.assertEqual(os.path.getsize(path + ".1"), 1100)
        self.assertEqual(os.path.getsize(path), 100)
        for _ in range(50):
            capture.received(1, line)
        capture.close()
        self.assertEqual(sorted(os.listdir(os.path.dirname(path))),
                         ["backend.log", "backend.log.1", "backend.log.2"])
        for name in os.listdir(os.path.dirname(path)):
            self.assertLessEqual(os.path.getsize(os.path.join(os.path.dirname(path), name)), 1100)

    def test_fileSizeCountsBytes(self) -> None:
        """Rotation counts bytes, not characters, so multibyte output respects max_bytes."""
        path = os.path.join(tempfile.mkdtemp(prefix="orch-output-"), "backend.log")
        capture, _ = _capture(file=path, max_bytes=1024, backups=1)
        capture.newRun(1)
        capture.received(1, ("\u00e9" * 399 + "\n").encode())  # 799 bytes
        capture.received(1, ("\u00e9" * 399 + "\n").encode())
        capture.received(1, b"next\n")
        capture.close()
        self.assertEqual(os.path.getsize(path + ".1"), 1598)
        with open(path, encoding="utf-8") as f:
            self.assertEqual(f.read(), "next\n")


class ChildOutputTests(SynchronousTestCase):
    """
    Output through L{orchestrator.supervision.process.ManagedProcess}: each child's
    lines carry its own pid.
    """

    def test_childOutputIsCapturedWithItsPid(self) -> None:
        """Lines a child writes are kept with that child's pid."""
        h = _Harness()
        h.startRunning()
        h.child.output(b"listening on 3000\n")
        h.child.output(b"oops\n", fd=2)
        self.assertEqual([(l.pid, l.stream, l.text) for l in h.process.output.tail(10)],
                         [(h.child.pid, "stdout", "listening on 3000"),
                          (h.child.pid, "stderr", "oops")])

    def test_lateOutputOfACrashedChildStaysItsOwn(self) -> None:
        """What a crashed child still had in its pipes after the restart is its own line, not glued to the new child's."""
        h = _Harness("restart: {policy: always}\n")
        h.startRunning()
        old = h.child
        oldPid = old.pid
        old.output(b"fatal: out of ", fd=2)
        old.alive = False
        old.proto.processExited(Failure(ProcessTerminated(exitCode=2)))  # pipes still open
        h.clock.advance(0)
        new = h.child
        self.assertIsNot(new, old)
        new.output(b"listening", fd=2)
        old.output(b"memory\n", fd=2)  # read from the old pipe after the restart
        old.proto.processEnded(Failure(ProcessTerminated(exitCode=2)))
        new.output(b" on 3000\n", fd=2)
        self.assertEqual([(l.pid, l.text) for l in h.process.output.tail(10)],
                         [(oldPid, "fatal: out of memory"), (new.pid, "listening on 3000")])
