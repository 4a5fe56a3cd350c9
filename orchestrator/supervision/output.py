"""
Capture a child's output: split it into lines, keep the last ones for the
API, log them under the process's name, and optionally write them to a
size-rotated file.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
import os

from twisted.logger import Logger
from twisted.python.logfile import LogFile

__all__ = ["LineSplitter", "OutputLine", "OutputCapture", "RunOutput"]


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

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        lines = []
        while True:
            newline = self._buffer.find(b"\n", 0, self._max + 1)
            if newline >= 0:
                line, self._buffer = self._buffer[:newline], self._buffer[newline + 1:]
                lines.append(line.rstrip(b"\r"))
            elif len(self._buffer) > self._max:
                line, self._buffer = self._buffer[: self._max], self._buffer[self._max:]
                lines.append(line)
            else:
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

    def toJSON(self) -> dict:
        return {"timestamp": self.timestamp, "stream": self.stream, "pid": self.pid, "text": self.text}


class OutputCapture:
    """
    The output of every run of one process.
    """

    def __init__(self, name: str, config, clock) -> None:
        self._name = name
        self._config = config
        self._clock = clock
        self._log = Logger(namespace=f"orchestrator.process.{name}")
        self.lines: deque[OutputLine] = deque(maxlen=config.lines)
        self._current = RunOutput(self, None)
        self._file: LogFile | None = None
        if config.file:
            directory, filename = os.path.split(config.file)
            os.makedirs(directory, exist_ok=True)
            self._file = LogFile(
                filename, directory,
                rotateLength=config.max_bytes, maxRotatedFiles=config.backups,
            )

    def newRun(self, pid: int | None) -> "RunOutput":
        """
        A new child: its output gets its own line buffers, so what a
        previous child still had in its pipes is neither lost nor glued to
        the new child's lines.

        @return: the L{RunOutput} the new child's protocol feeds.
        """
        self._current = RunOutput(self, pid)
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
        stream = "stderr" if fd == 2 else "stdout"
        now = self._clock.seconds()
        for raw in lines:
            text = raw.decode("utf-8", errors="replace")
            self.lines.append(OutputLine(now, stream, pid, text))
            if self._config.echo:
                self._log.info(
                    "[{process}] {text}", process=self._name, text=text, stream=stream, pid=pid
                )
            if self._file is not None:
                # bytes, so that LogFile counts max_bytes in bytes
                self._file.write(f"{text}\n".encode("utf-8"))
        if lines and self._file is not None:
            self._file.flush()

    def tail(self, count: int) -> list[OutputLine]:
        if count <= 0:
            return []
        return list(self.lines)[-count:]

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class RunOutput:
    """
    The output of one child (one run): its own line buffer per fd.
    """

    def __init__(self, capture: OutputCapture, pid: int | None) -> None:
        self._capture = capture
        self.pid = pid
        self._splitters: dict[int, LineSplitter] = {}

    def received(self, fd: int, data: bytes) -> None:
        splitter = self._splitters.get(fd)
        if splitter is None:
            splitter = self._splitters[fd] = LineSplitter(self._capture._config.max_line_bytes)
        self._capture._emit(fd, splitter.feed(data), self.pid)

    def ended(self) -> None:
        """
        This child's pipes closed: deliver any last unterminated line.
        """
        splitters, self._splitters = self._splitters, {}
        for fd, splitter in splitters.items():
            self._capture._emit(fd, splitter.flush(), self.pid)
