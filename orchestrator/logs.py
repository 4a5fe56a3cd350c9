"""
The orchestrator's own log: text lines or JSON lines, filtered by level,
to standard output or a size-rotated file (C{logging.max_bytes},
C{logging.backups}), so a chatty child or a long uptime cannot fill the disk.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import IO

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
)
from twisted.python.failure import Failure
from twisted.python.logfile import LogFile
from zope.interface import implementer

__all__ = ["buildObserver", "JSONObserver", "RotatingStream", "TextObserver"]

_LEVELS = {
    "debug": LogLevel.debug, "info": LogLevel.info, "warn": LogLevel.warn,
    "error": LogLevel.error, "critical": LogLevel.critical,
}
_NAMES = {LogLevel.debug: "DEBUG", LogLevel.info: "INFO", LogLevel.warn: "WARN",
          LogLevel.error: "ERROR", LogLevel.critical: "CRITICAL"}
#: Event keys that are Twisted's bookkeeping, not the event's own fields.
_INTERNAL = frozenset({"log_logger", "log_source", "log_format", "log_io", "log_trace",
                       "log_flattened", "log_system", "log_failure", "log_text",
                       "log_legacy", "message", "isError", "format", "system", "time",
                       "printed", "why"})


def _timestamp(event) -> str:
    t = event.get("log_time") or time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


def _message(event) -> str:
    text = formatEvent(event) or ""
    failure = event.get("log_failure")
    if isinstance(failure, Failure):
        text += "\n" + failure.getTraceback()
    return text


@implementer(ILogObserver)
class TextObserver:
    """
    C{2026-11-28T12:00:00.000Z ERROR [orchestrator.process] backend crashed! ...}
    """

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def __call__(self, event) -> None:
        level = _NAMES.get(event.get("log_level"), "INFO")
        namespace = event.get("log_namespace", "-")
        self._stream.write(f"{_timestamp(event)} {level:<5} [{namespace}] {_message(event)}\n")
        self._stream.flush()


@implementer(ILogObserver)
class JSONObserver:
    """
    One JSON object per line: C{time}, C{level}, C{namespace}, C{message} and
    the event's own fields (C{process}, C{pid}, ...).
    """

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def __call__(self, event) -> None:
        record = {
            "time": _timestamp(event),
            "level": _NAMES.get(event.get("log_level"), "INFO").lower(),
            "namespace": event.get("log_namespace", "-"),
            "message": _message(event),
        }
        for key, value in event.items():
            if key in _INTERNAL or key.startswith("log_") or key in record:
                continue
            if isinstance(value, (str, int, float, bool, type(None))):
                record[key] = value
            elif isinstance(value, (list, tuple)) and all(
                isinstance(v, (str, int, float, bool, type(None))) for v in value
            ):
                record[key] = list(value)
        self._stream.write(json.dumps(record, default=str) + "\n")
        self._stream.flush()


class RotatingStream:
    """
    A text stream over a L{LogFile}: renamed to C{FILE.1} (older copies
    shifting up to C{FILE.<backups>}, the oldest deleted) once it reaches
    C{maxBytes}.  Each write goes straight to the file (unbuffered), so a
    killed orchestrator loses no line.
    """

    def __init__(self, path: str, maxBytes: int, backups: int) -> None:
        directory, name = os.path.split(os.path.abspath(path))
        self._file = LogFile(name, directory, rotateLength=maxBytes, maxRotatedFiles=backups)

    def write(self, text: str) -> None:
        self._file.write(text.encode("utf-8", errors="replace"))

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self._file.close()


def buildObserver(config, stream: IO[str] | None = None) -> ILogObserver:
    """
    The observer for a L{orchestrator.config.types.LoggingConfig}.
    """
    if stream is None:
        stream = (RotatingStream(config.file, config.max_bytes, config.backups)
                  if config.file else sys.stdout)
    inner = (JSONObserver if config.format == "json" else TextObserver)(stream)
    predicate = LogLevelFilterPredicate(defaultLogLevel=_LEVELS[config.level])
    return FilteringLogObserver(inner, [predicate])
