"""
The resident memory of a child's process group, read from C{/proc}.

A child leads its own process group (see L{orchestrator.supervision.spawn}),
so "its memory" is the sum over that group: a shell wrapper's worker or a
pre-fork server's workers count.  The group's members are found by walking
down from the leader through C{/proc/PID/task/TID/children} (a few small
reads per process, whatever else runs on the host), keeping those whose
process group is the leader's; where the kernel has no C{children} files
every C{/proc/*/stat} is read instead.

Bounds: at most L{MAX_GROUP_PROCESSES} processes are summed per group
(a fork bomb cannot make a check unbounded), and every file read is a
single bounded C{read}.
"""

from __future__ import annotations

import os

__all__ = ["groupMemory", "MAX_GROUP_PROCESSES", "PAGE_SIZE"]

#: Processes of one group summed at most (the rest is not counted).
MAX_GROUP_PROCESSES = 4096

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

_READ_LIMIT = 4096


def _read(path: str) -> str | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.read(fd, _READ_LIMIT).decode("ascii", "replace")
    except OSError:
        return None
    finally:
        os.close(fd)


def _stat(proc: str, pid: int) -> tuple[int, int] | None:
    """
    C{(process group, resident bytes)} of C{pid}, or C{None} if it is gone.
    """
    text = _read(f"{proc}/{pid}/stat")
    if not text:
        return None
    # The command name (field 2) may hold spaces and parentheses: split
    # after its last closing parenthesis.
    fields = text[text.rfind(")") + 2:].split()
    try:
        return int(fields[2]), int(fields[21]) * PAGE_SIZE
    except (IndexError, ValueError):
        return None


def _children(proc: str, pid: int) -> list[int] | None:
    try:
        tasks = os.listdir(f"{proc}/{pid}/task")
    except OSError:
        return []
    out: list[int] = []
    for tid in tasks:
        text = _read(f"{proc}/{pid}/task/{tid}/children")
        if text is None:
            if not os.path.exists(f"{proc}/{pid}/task/{tid}/children"):
                return None  # no children files on this kernel
            continue
        out.extend(int(c) for c in text.split() if c.isdigit())
    return out


def groupMemory(pgid: int, proc: str = "/proc") -> int | None:
    """
    The resident bytes of every process in process group C{pgid}, or
    C{None} when the group's leader is gone.
    """
    leader = _stat(proc, pgid)
    if leader is None:
        return None
    total, seen, queue = 0, {pgid}, [pgid]
    while queue and len(seen) <= MAX_GROUP_PROCESSES:
        pid = queue.pop()
        stat = leader if pid == pgid else _stat(proc, pid)
        if stat is None or stat[0] != pgid:
            continue
        total += stat[1]
        children = _children(proc, pid)
        if children is None:
            return _scanAll(pgid, proc)
        for child in children:
            if child not in seen:
                seen.add(child)
                queue.append(child)
    return total


def _scanAll(pgid: int, proc: str) -> int:
    total = counted = 0
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        stat = _stat(proc, int(entry))
        if stat is not None and stat[0] == pgid:
            total += stat[1]
            counted += 1
            if counted >= MAX_GROUP_PROCESSES:
                break
    return total
