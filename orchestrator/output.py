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

__all__ = ["LineSplitter", "OutputLine", "OutputCapture"]


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
        self.lines: deque[OutputLine] = deque(maxlen=config.lines or None) if config.lines else deque(maxlen=0)
        self._splitters: dict[int, LineSplitter] = {}
        self._pid: int | None = None
        self._file: LogFile | None = None
        if config.file:
            directory, filename = os.path.split(config.file)
            os.makedirs(directory, exist_ok=True)
            self._file = LogFile(
                filename, directory,
                rotateLength=config.max_bytes, maxRotatedFiles=config.backups,
            )

    def newRun(self, pid: int | None) -> None:
        """
        A new child: forget partial lines of the previous one.
        """
        self._pid = pid
        self._splitters = {}

    def received(self, fd: int, data: bytes) -> None:
        splitter = self._splitters.get(fd)
        if splitter is None:
            splitter = self._splitters[fd] = LineSplitter(self._config.max_line_bytes)
        self._emit(fd, splitter.feed(data))

    def ended(self) -> None:
        """
        The child's pipes closed: deliver any last unterminated line.
        """
        for fd, splitter in self._splitters.items():
            self._emit(fd, splitter.flush())

    def _emit(self, fd: int, lines: list[bytes]) -> None:
        stream = "stderr" if fd == 2 else "stdout"
        now = self._clock.seconds()
        for raw in lines:
            text = raw.decode("utf-8", errors="replace")
            self.lines.append(OutputLine(now, stream, self._pid, text))
            if self._config.echo:
                self._log.info(
                    "[{process}] {text}", process=self._name, text=text, stream=stream, pid=self._pid
                )
            if self._file is not None:
                self._file.write(f"{text}\n")
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
