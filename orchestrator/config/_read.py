"""
Read the files a configuration names (the YAML file, the C{.env} file, the
admin token file) with a bound, before anything parses them.

A 50 MB file, a FIFO that never yields a byte, a NUL byte or text that is
not UTF-8 must each be one located line for the operator, found before a
parser spends memory or time on it (see the README's C{## Limits}).
"""

from __future__ import annotations

import os
import stat

from orchestrator.errors import ConfigError

__all__ = ["MAX_FILE_BYTES", "readText", "lineColumn"]

#: The largest configuration, C{.env} or token file read, in bytes.
MAX_FILE_BYTES = 1024 * 1024

_CHUNK = 64 * 1024


def lineColumn(text: str | bytes, offset: int) -> tuple[int, int]:
    """
    The 1-based line and column of C{offset} in C{text}, as editors count.
    """
    newline = "\n" if isinstance(text, str) else b"\n"
    line = text.count(newline, 0, offset) + 1
    column = offset - (text.rfind(newline, 0, offset) + 1) + 1
    return line, column


def readText(path: str, what: str, shown: str | None = None,
             limit: int = MAX_FILE_BYTES) -> str:
    """
    Read a whole text file of at most C{limit} bytes.

    The size is checked before reading (a larger regular file is refused
    unread); a device or anything else that is not a regular file is read
    at most C{limit + 1} bytes; a FIFO or socket, which could block the
    reader forever, is refused.

    @param what: what the file is, for messages (C{"configuration"}).
    @param shown: how messages name the file (default C{path}).
    @raise ConfigError: with one located problem.
    """
    shown = path if shown is None else shown
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise ConfigError([f"{shown}: cannot read {what}: {e.strerror}"]) from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise ConfigError([f"{shown}: cannot read {what}: it is a folder"])
        if not (stat.S_ISREG(info.st_mode) or stat.S_ISCHR(info.st_mode)):
            raise ConfigError([f"{shown}: cannot read {what}: not a regular file"])
        if info.st_size > limit:
            raise ConfigError([_tooLarge(shown, what, limit)])
        chunks, size = [], 0
        while size <= limit:
            try:
                chunk = os.read(fd, min(_CHUNK, limit + 1 - size))
            except OSError as e:
                raise ConfigError([f"{shown}: cannot read {what}: {e.strerror}"]) from None
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise ConfigError([_tooLarge(shown, what, limit)])
    finally:
        os.close(fd)
    return _decode(b"".join(chunks), shown)


def _tooLarge(shown: str, what: str, limit: int) -> str:
    return f"{shown}: {what} file is larger than the limit of {limit} bytes"


def _decode(data: bytes, shown: str) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line, column = lineColumn(data, e.start)
        raise ConfigError([f"{shown}:{line}:{column}: not UTF-8 text "
                           f"(byte 0x{data[e.start]:02x} at offset {e.start})"]) from None
    nul = text.find("\x00")
    if nul >= 0:
        line, column = lineColumn(text, nul)
        raise ConfigError([f"{shown}:{line}:{column}: NUL byte (binary data in a text file)"])
    return text
