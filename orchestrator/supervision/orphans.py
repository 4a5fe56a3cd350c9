"""
No orphans: remember our children so that a later start can end what a
killed orchestrator left behind.

Every child is recorded in a state file with its pid, its process group and
its kernel start time (field 22 of C{/proc/PID/stat}).  A pid can be reused
by an unrelated process; a pid together with its start time cannot, so a
leftover is recognised by both and never by name.  Grandchildren are found
as the members of a recorded process group that started no earlier than
its leader.
"""

from __future__ import annotations

import json
import os
import signal
from dataclasses import dataclass
from typing import Callable, Iterable

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

__all__ = ["ChildRecord", "StateFile", "processStartTime", "groupMembers", "reapLeftovers"]

log = Logger()


@dataclass(frozen=True)
class ChildRecord:
    """
    One recorded child.
    """

    name: str
    pid: int
    pgid: int
    start_time: int


def _stat(pid: int, proc: str = "/proc") -> list[str] | None:
    try:
        with open(f"{proc}/{pid}/stat", "rb") as f:
            data = f.read().decode("ascii", "replace")
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may contain spaces.
    return data[data.rindex(")") + 2:].split()


def processStartTime(pid: int, proc: str = "/proc") -> int | None:
    """
    The kernel start time of a process in clock ticks since boot, or
    C{None} if it does not exist.
    """
    fields = _stat(pid, proc)
    # fields[0] is field 3 (state); start time is field 22.
    return int(fields[19]) if fields else None


def groupMembers(pgid: int, leaderStart: int, proc: str = "/proc") -> list[int]:
    """
    The live processes of a process group that started no earlier than its
    recorded leader, leader included (zombies excluded).
    """
    members = []
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        fields = _stat(int(entry), proc)
        if not fields or fields[0] == "Z":
            continue
        if int(fields[2]) == pgid and int(fields[19]) >= leaderStart:
            members.append(int(entry))
    return members


class StateFile:
    """
    The children of one orchestrator configuration, on disk.
    """

    def __init__(self, path: str, proc: str = "/proc") -> None:
        self.path = path
        self._proc = proc
        self._children: dict[str, ChildRecord] = {}

    def load(self) -> list[ChildRecord]:
        """
        The children recorded by a previous run.
        """
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as e:
            log.warn("ignoring unreadable state file {path}: {e}", path=self.path, e=e)
            return []
        records = []
        for name, item in data.get("children", {}).items():
            try:
                records.append(ChildRecord(name, int(item["pid"]), int(item["pgid"]),
                                           int(item["start_time"])))
            except (KeyError, TypeError, ValueError):
                continue
        return records

    def record(self, name: str, pid: int | None) -> None:
        """
        Remember a child (or forget it when C{pid} is C{None}) and write
        the file now.
        """
        if self.update(name, pid):
            self.flush()

    def update(self, name: str, pid: int | None) -> bool:
        """
        Remember a child (or forget it) in memory only; L{flush} writes.

        @return: whether anything changed.
        """
        if pid is None:
            return self._children.pop(name, None) is not None
        started = processStartTime(pid, self._proc)
        if started is None:
            return False
        self._children[name] = ChildRecord(name, pid, pid, started)
        return True

    def flush(self) -> None:
        """
        Write the file (atomically: a crash never leaves half of it).
        """
        self._write()

    def liveOwner(self) -> int | None:
        """
        The pid of another orchestrator that is still running with this
        state file (recorded pid and kernel start time both match), or
        C{None}.  Two orchestrators on one state file would end each
        other's children as leftovers.
        """
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
            pid = int(data["orchestrator_pid"])
            started = int(data["orchestrator_start_time"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if pid == os.getpid():
            return None
        return pid if processStartTime(pid, self._proc) == started else None

    def claim(self) -> None:
        """
        Record this orchestrator as the owner, with no children yet (the
        previous run's have just been ended).
        """
        self._children.clear()
        self.flush()

    def _write(self) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        data = {
            "orchestrator_pid": os.getpid(),
            "orchestrator_start_time": processStartTime(os.getpid(), self._proc),
            "children": {
                r.name: {"pid": r.pid, "pgid": r.pgid, "start_time": r.start_time}
                for r in self._children.values()
            },
        }
        tmp = f"{self.path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f)
        os.replace(tmp, self.path)


def reapLeftovers(
    records: Iterable[ChildRecord],
    clock,
    grace: float = 5.0,
    kill: Callable[[int, int], None] = os.kill,
    proc: str = "/proc",
) -> Deferred:
    """
    End the leftovers of a previous run: SIGTERM to every surviving member
    of each recorded group, SIGKILL to those still there after C{grace}
    seconds.

    A group whose leader pid now belongs to a different process (another
    start time) was reused and is left alone.

    @return: a Deferred firing with the list of pids ended.
    """
    victims: list[int] = []
    for record in records:
        leaderStart = processStartTime(record.pid, proc)
        if leaderStart is not None and leaderStart != record.start_time:
            continue  # the pid was reused by an unrelated process
        members = groupMembers(record.pgid, record.start_time, proc)
        if members:
            log.warn(
                "ending leftovers of a previous run of {name}: pids {pids} (process group {pgid})",
                name=record.name, pids=members, pgid=record.pgid,
            )
            victims.extend(members)
    if not victims:
        return succeed([])

    def signalAll(pids, sig):
        for pid in pids:
            try:
                kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass

    signalAll(victims, signal.SIGTERM)
    done: Deferred = Deferred()
    deadline = clock.seconds() + grace

    def alive():
        return [p for p in victims if processStartTime(p, proc) is not None
                and (_stat(p, proc) or ["Z"])[0] != "Z"]

    def poll():
        left = alive()
        if not left:
            done.callback(victims)
        elif clock.seconds() >= deadline:
            log.warn("leftovers {pids} ignored SIGTERM: sending SIGKILL", pids=left)
            signalAll(left, signal.SIGKILL)
            done.callback(victims)
        else:
            clock.callLater(0.05, poll)

    poll()
    return done
