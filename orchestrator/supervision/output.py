"""
Capture a child's output: split it into lines, keep the last ones for the
API, log them under the process's name, and optionally write them to a
size-rotated file.

Everything here is bounded, because a child may write as fast as it can:
a line is cut at C{log.max_line_bytes}, memory keeps C{log.lines} lines,
the echo into the orchestrator's own log is limited to C{log.echo_rate}
lines per second per process (the rest is counted and reported as one
C{N lines suppressed} line per second), and at most L{MAX_OPEN_RUNS} runs
(the current child and the previous ones whose pipes are still open,
held by a grandchild) keep line buffers: an older run's pipes are closed.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
import os
from typing import Callable, Sequence

from twisted.logger import Logger
from twisted.python.logfile import LogFile

from orchestrator.supervision.counters import ProcessCounters

__all__ = ["LineSplitter", "MAX_OPEN_RUNS", "OutputLine", "OutputCapture", "RunOutput"]

#: Runs of one process whose output is still read: the current child and
#: previous ones whose pipes a surviving grandchild keeps open.  Beyond it
#: the oldest run's pipes are closed, so a crash loop of children leaving
#: daemons behind cannot accumulate buffers and descriptors.
MAX_OPEN_RUNS = 3


class LineSplitter:
    """
    Turn chunks of bytes into complete lines.

    Partial lines are buffered until their newline arrives; a line longer
    than C{maxBytes} is cut there (the rest starts a new line) so a child
    that never writes a newline cannot grow our memory.
    """

    def __init__(self, maxBytes: int) -> None:
        self._max = maxBytes
        self._buffer = b""
        #: Lines cut at C{maxBytes} so far.
        self.cut = 0

    def feed(self, data: bytes) -> list[bytes]:
        # One pass over the chunk by offsets: slicing the rest of the
        # buffer off after each line would copy a flood's chunk once per line.
        buffer = self._buffer + data if self._buffer else data
        lines = []
        start, end, limit = 0, len(buffer), self._max
        while True:
            newline = buffer.find(b"\n", start, start + limit + 1)
            if newline >= 0:
                lines.append(buffer[start:newline].rstrip(b"\r"))
                start = newline + 1
            elif end - start > limit:
                lines.append(buffer[start:start + limit])
                start += limit
                self.cut += 1
            else:
                self._buffer = buffer[start:]
                return lines

    def flush(self) -> list[bytes]:
        rest, self._buffer = self._buffer, b""
        return [rest] if rest else []


@dataclass(frozen=True)
class OutputLine:
    """
    One line of a child's output.
    """

    timestamp: float
    stream: str  # "stdout" or "stderr"
    pid: int | None
    text: str
    #: Counts every line the process wrote (kept or not), from 1: the
    #: log stream's event id.
    sequence: int = 0

    def toJSON(self) -> dict:
        return {"timestamp": self.timestamp, "stream": self.stream, "pid": self.pid, "text": self.text,
                "sequence": self.sequence}


class OutputCapture:
    """
    The output of every run of one process.
    """

    def __init__(self, name: str, config, clock, counters: ProcessCounters | None = None) -> None:
        self._name = name
        #: Where the outcomes of the output's limits are counted: the
        #: process name's counters, shared with the captures that replace
        #: this one, so the metrics stay monotonic across reloads.
        self.counters = counters if counters is not None else ProcessCounters()
        self._config = config
        self._clock = clock
        self._logger: Logger | None = None
        # The ring of the last lines is made when the first line arrives:
        # many children never write, and an empty deque costs 760 bytes.
        self._lines: deque[OutputLine] | None = None
        self._current = RunOutput(self, None)
        self._open: list[RunOutput] = []
        # Made at the first echoed line, like the ring and the logger.
        self._echoLimiter: _EchoLimiter | None = None
        #: Lines received so far (the last one's L{OutputLine.sequence}).
        self.sequence = 0
        self._subscribers: list[Callable[[OutputLine | None], None]] = []
        # The combined file, and one per stream (log.stdout, log.stderr):
        # each rotated by size alike.
        self._file = _openLog(config.file, config)
        streams = {1: _openLog(getattr(config, "stdout", None), config),
                   2: _openLog(getattr(config, "stderr", None), config)}
        self._streamFiles: dict[int, LogFile] = {fd: f for fd, f in streams.items() if f is not None}

    def newRun(self, pid: int | None, transport=None) -> "RunOutput":
        """
        A new child: its output gets its own line buffers, so what a
        previous child still had in its pipes is neither lost nor glued to
        the new child's lines.

        @param transport: the child's process transport, whose pipes are
            closed if the run is still open when L{MAX_OPEN_RUNS} newer
            runs exist (its grandchildren keep them open).
        @return: the L{RunOutput} the new child's protocol feeds.
        """
        self._current = RunOutput(self, pid, transport)
        self._open.append(self._current)
        while len(self._open) > MAX_OPEN_RUNS:
            self._open.pop(0).detach()
        return self._current

    def received(self, fd: int, data: bytes) -> None:
        """
        Output of the current child.
        """
        self._current.received(fd, data)

    def ended(self) -> None:
        """
        The current child's pipes closed: deliver any last unterminated line.
        """
        self._current.ended()

    def _emit(self, fd: int, lines: list[bytes], pid: int | None) -> None:
        # A flood arrives as chunks of hundreds of lines: the file gets one
        # write per chunk, and only the lines that are echoed or stay in
        # the in-memory tail are decoded.
        if not lines:
            return
        if self._file is not None or self._streamFiles:
            # bytes, so that LogFile counts max_bytes in bytes
            chunk = b"\n".join(lines) + b"\n"
            for logFile in (self._file, self._streamFiles.get(2 if fd == 2 else 1)):
                if logFile is not None:
                    logFile.write(chunk)
                    logFile.flush()
        stream = "stderr" if fd == 2 else "stdout"
        now = self._clock.seconds()
        echoed = self._echo().take(len(lines)) if self._config.echo else 0
        keepFrom = max(0, len(lines) - self._config.lines)
        for i in range(min(echoed, keepFrom)):
            self._echoLine(lines[i].decode("utf-8", errors="replace"), stream, pid)
        first = self.sequence + 1
        self.sequence += len(lines)
        for i in range(keepFrom, len(lines)):
            text = lines[i].decode("utf-8", errors="replace")
            line = OutputLine(now, stream, pid, text, first + i)
            self._keep(line)
            if i < echoed:
                self._echoLine(text, stream, pid)
            for subscriber in list(self._subscribers):
                subscriber(line)

    def subscribe(self, callback: Callable[[OutputLine | None], None]) -> Callable[[], None]:
        """
        Call C{callback} with every later line that is kept in the ring
        (a burst longer than the ring within one read skips lines: their
        sequence numbers are missing), and with C{None} when this capture
        is closed and not replaced (the process is gone).

        @return: a function that unsubscribes.
        """
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback) if callback in self._subscribers else None

    def handOver(self, successor: "OutputCapture") -> None:
        """
        A reload gave the same process a new capture: lines, sequence and
        subscribers go on there.
        """
        for line in self.lines:
            successor._keep(line)
        successor.sequence = self.sequence
        successor._subscribers.extend(self._subscribers)
        self._subscribers.clear()

    @property
    def _log(self) -> Logger:
        if self._logger is None:
            self._logger = Logger(namespace=f"orchestrator.process.{self._name}")
        return self._logger

    def _echo(self) -> "_EchoLimiter":
        if self._echoLimiter is None:
            self._echoLimiter = _EchoLimiter(self._config.echo_rate, self._clock, self._suppressed)
        return self._echoLimiter

    @property
    def lines(self) -> Sequence[OutputLine]:
        """
        The last C{log.lines} lines, oldest first.
        """
        return self._lines if self._lines is not None else ()

    def _keep(self, line: OutputLine) -> None:
        if self._lines is None:
            self._lines = deque(maxlen=self._config.lines)
        self._lines.append(line)

    def _echoLine(self, text: str, stream: str, pid: int | None) -> None:
        self._log.info("[{process}] {text}", process=self._name, text=text, stream=stream, pid=pid)

    def tail(self, count: int) -> list[OutputLine]:
        if count <= 0:
            return []
        return list(self.lines)[-count:]

    @property
    def echoSuppressed(self) -> int:
        """
        Output lines not echoed because of C{log.echo_rate}, in total.
        """
        return self.counters.outputLimitHits.get("echo_rate", 0)

    @property
    def linesCut(self) -> int:
        """
        Output lines cut at C{log.max_line_bytes}, in total.
        """
        return self.counters.outputLimitHits.get("max_line_bytes", 0)

    @property
    def droppedBytes(self) -> int:
        """
        Bytes dropped from runs whose pipes were closed (L{MAX_OPEN_RUNS}).
        """
        return self.counters.outputDroppedBytes

    def _suppressed(self, count: int) -> None:
        self.counters.countOutputLimit("echo_rate", count)
        self._log.warn(
            "[{process}] {count} lines suppressed (log.echo_rate: {rate} lines/s; "
            "{total} so far; not echoed, still captured for the logs route and log.file)",
            process=self._name, count=count, rate=self._config.echo_rate,
            total=self.echoSuppressed, suppressed=count)

    def _closed(self, run: "RunOutput") -> None:
        if run in self._open:
            self._open.remove(run)

    def close(self) -> None:
        subscribers, self._subscribers = self._subscribers, []
        for subscriber in subscribers:
            subscriber(None)
        if self._echoLimiter is not None:
            self._echoLimiter.close()
        for logFile in (self._file, *self._streamFiles.values()):
            if logFile is not None:
                logFile.close()
        self._file = None
        self._streamFiles = {}


def _openLog(path: str | None, config) -> LogFile | None:
    """
    A size-rotated output file at C{path} (its folder created), or C{None}.
    """
    if not path:
        return None
    directory, filename = os.path.split(path)
    os.makedirs(directory, exist_ok=True)
    return LogFile(filename, directory, rotateLength=config.max_bytes,
                   maxRotatedFiles=config.backups)


class _EchoLimiter:
    """
    At most C{rate} echoed lines per one-second window (0: no limit); the
    lines refused in a window are reported once, when it ends.
    """

    def __init__(self, rate: int, clock, report) -> None:
        self._rate = rate
        self._clock = clock
        self._report = report
        self._windowEnd = float("-inf")
        self._count = 0
        self._refused = 0
        self._call = None

    def take(self, count: int) -> int:
        """
        C{count} lines want to be echoed: how many of the first may be.
        """
        if not self._rate:
            return count
        now = self._clock.seconds()
        if now >= self._windowEnd:
            self._flush()
            self._windowEnd = now + 1.0
            self._count = 0
        allowed = min(count, self._rate - self._count)
        self._count += allowed
        if allowed < count:
            self._refused += count - allowed
            if self._call is None:
                self._call = self._clock.callLater(self._windowEnd - now, self._flush)
        return allowed

    def _flush(self) -> None:
        if self._call is not None:
            if self._call.active():
                self._call.cancel()
            self._call = None
        refused, self._refused = self._refused, 0
        if refused:
            self._report(refused)

    def close(self) -> None:
        self._flush()


class RunOutput:
    """
    The output of one child (one run): its own line buffer per fd.
    """

    def __init__(self, capture: OutputCapture, pid: int | None, transport=None) -> None:
        self._capture = capture
        self.pid = pid
        self._transport = transport
        self._splitters: dict[int, LineSplitter] = {}
        self.detached = False

    def received(self, fd: int, data: bytes) -> None:
        if self.detached:
            self._capture.counters.outputDroppedBytes += len(data)
            return
        splitter = self._splitters.get(fd)
        if splitter is None:
            splitter = self._splitters[fd] = LineSplitter(self._capture._config.max_line_bytes)
        cut = splitter.cut
        lines = splitter.feed(data)
        if splitter.cut != cut:
            self._capture.counters.countOutputLimit("max_line_bytes", splitter.cut - cut)
        self._capture._emit(fd, lines, self.pid)

    def ended(self) -> None:
        """
        This child's pipes closed: deliver any last unterminated line.
        """
        splitters, self._splitters = self._splitters, {}
        for fd, splitter in splitters.items():
            self._capture._emit(fd, splitter.flush(), self.pid)
        self._capture._closed(self)
        self._transport = None

    def detach(self) -> None:
        """
        Stop reading this run (too many newer runs): deliver its last
        partial lines, drop its buffers and close its pipes, so whatever
        still holds them (a grandchild that outlived its group) gets EPIPE
        instead of our memory and descriptors.
        """
        if self.detached:
            return
        transport = self._transport
        self.ended()
        self.detached = True
        self._capture._log.warn(
            "{process}: output of an earlier run (PID: {pid}) still open after "
            "{runs} newer runs; closing its pipes", process=self._capture._name,
            pid=self.pid, runs=MAX_OPEN_RUNS)
        if transport is not None:
            try:
                transport.loseConnection()
            except Exception:
                self._capture._log.failure("closing the pipes of PID {pid}", pid=self.pid)
