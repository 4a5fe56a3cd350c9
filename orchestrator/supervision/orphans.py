"""
No orphans: remember our children so that a later start can end what a
killed orchestrator left behind.

Every child is recorded in a state file with its pid, its process group and
its kernel start time (field 22 of C{/proc/PID/stat}).  A pid can be reused
by an unrelated process; a pid together with its start time cannot, so a
leftover is recognised by both and never by name.  Grandchildren are found
as the members of a recorded process group that started no earlier than
its leader.

While it runs, the orchestrator (on Linux) is a child subreaper
(L{becomeSubreaper}): a grandchild whose parent dies is re-parented to the
orchestrator instead of to init, so the group kill that follows a child's
exit reaches it and L{OrphanReaper} reaps it (Twisted only reaps the pids it
spawned).  A child that exits 0 while starting and leaves such a process
running is a daemonizing command (L{escapedChildren}).  What still escapes:
a grandchild that leaves its process group (C{setsid}) of a child that goes
on running is not in any recorded group, so it
survives a stop and an orchestrator SIGKILL (it is reaped, and logged, when
it dies while the orchestrator runs); and between an orchestrator SIGKILL
and its next start, grandchildren live on (the parent-death signal reaches
only the direct child) until that start ends them.
"""

from __future__ import annotations

import json
import os
import signal
from dataclasses import dataclass
from typing import Callable, Iterable

from twisted.internet import process as _twistedProcess
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from orchestrator.supervision.spawn import loadedLibc

__all__ = [
    "ChildRecord",
    "OrphanReaper",
    "StateFile",
    "becomeSubreaper",
    "escapedChildren",
    "groupMembers",
    "processStartTime",
    "reapLeftovers",
]

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

    def recorded(self, name: str) -> ChildRecord | None:
        """
        The child of process C{name} remembered now, if any.
        """
        return self._children.get(name)

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
    of each recorded group (the child's grandchildren too: they share its
    group), SIGKILL to those still there after C{grace} seconds.  The
    groups are listed again at each poll, so a process a leftover forks
    while it is being ended is ended too.

    A group whose leader pid now belongs to a different process (another
    start time) was reused and is left alone.

    @return: a Deferred firing with the list of pids ended, once none of
        them is alive (SIGKILLed ones are waited for too, up to another
        C{grace}: the next child must find the port free).
    """
    groups = []
    for record in records:
        leaderStart = processStartTime(record.pid, proc)
        if leaderStart is not None and leaderStart != record.start_time:
            continue  # the pid was reused by an unrelated process
        groups.append(record)

    def members() -> dict[int, ChildRecord]:
        found = {}
        for record in groups:
            for pid in groupMembers(record.pgid, record.start_time, proc):
                found[pid] = record
        return found

    victims: list[int] = []
    signalled: dict[int, int] = {}

    def signalAll(pids, sig):
        for pid in pids:
            if signalled.get(pid) == sig:
                continue
            signalled[pid] = sig
            if pid not in victims:
                victims.append(pid)
            try:
                kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass

    found = members()
    if not found:
        return succeed([])
    for record in groups:
        pids = [p for p, r in found.items() if r is record]
        if pids:
            log.warn(
                "ending leftovers of a previous run of {name}: pids {pids} (process group {pgid})",
                name=record.name, pids=pids, pgid=record.pgid,
            )
    signalAll(found, signal.SIGTERM)
    done: Deferred = Deferred()
    deadline = clock.seconds() + grace
    killed = []

    def poll():
        left = list(members())
        if not left:
            done.callback(victims)
        elif killed and clock.seconds() >= deadline + grace:
            log.warn("leftovers {pids} survived SIGKILL for {grace}s; starting anyway",
                     pids=left, grace=grace)
            done.callback(victims)
        elif clock.seconds() >= deadline:
            if not killed:
                log.warn("leftovers {pids} ignored SIGTERM: sending SIGKILL", pids=left)
            killed.append(True)
            signalAll(left, signal.SIGKILL)
            clock.callLater(0.05, poll)
        else:
            signalAll(left, signal.SIGTERM)  # members forked since the last poll
            clock.callLater(0.05, poll)

    poll()
    return done


# -- the orchestrator as a child subreaper ------------------------------------

_PR_SET_CHILD_SUBREAPER = 36


def becomeSubreaper() -> bool:
    """
    Make this process a child subreaper (Linux 3.4,
    C{prctl(PR_SET_CHILD_SUBREAPER)}): orphaned descendants are re-parented
    to it rather than to init.  Call it once the orchestrator is started
    (it changes the whole process), and run an L{OrphanReaper} with it.

    @return: whether the kernel accepted it.
    """
    prctl = getattr(loadedLibc(), "prctl", None)
    return prctl is not None and prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


def ownChildren(proc: str = "/proc") -> list[int]:
    """
    The pids whose parent is this process, from C{/proc/self/task/*/children}
    (an orphan may be re-parented to any of our threads).
    """
    pids: list[int] = []
    try:
        tasks = os.listdir(f"{proc}/self/task")
    except OSError:
        tasks = []
    for tid in tasks:
        try:
            with open(f"{proc}/self/task/{tid}/children", "rb") as f:
                pids.extend(int(p) for p in f.read().split())
        except (OSError, ValueError):
            continue
    return pids


def escapedChildren(
    since: int,
    known: Callable[[], Iterable[int]] = lambda: _twistedProcess.reapProcessHandlers,
    children: Callable[[], Iterable[int]] = ownChildren,
    proc: str = "/proc",
) -> list[tuple[int, int]]:
    """
    Live children of the (subreaper) orchestrator that Twisted did not
    spawn, outside our own process group and outside every group a spawned
    child leads, started no earlier than C{since}: processes that left a
    child's group (C{setsid}, a double-forking daemon) and were re-parented
    to us when their parent died.  Why: such a daemon is outside every
    recorded group, so only its parent link tells that a child which just
    exited 0 left it running.

    @param since: kernel start time (clock ticks) of the child that exited.
    @return: C{(pid, pgid)} pairs.
    """
    spawned = set(known())
    ownGroup = os.getpgrp()
    found = []
    for pid in children():
        if pid in spawned:
            continue
        fields = _stat(pid, proc)
        if not fields or fields[0] == "Z":
            continue
        pgid = int(fields[2])
        if pgid == ownGroup or pgid in spawned or int(fields[19]) < since:
            continue
        found.append((pid, pgid))
    return found


class OrphanReaper:
    """
    Reap the children Twisted does not know: grandchildren re-parented to
    the subreaper orchestrator when their parent (a supervised child) died.

    Twisted reaps only the pids it spawned, each by its own
    C{waitpid(pid, WNOHANG)} (C{twisted.internet.process.reapAllProcesses}),
    so a C{waitpid(-1)} here could steal a supervised child's exit status.
    Instead each pass lists our children, skips every pid Twisted has
    registered, and reaps only zombies outside our own process group (a
    child that some library started without a session of its own, such as
    a C{subprocess.run} in a thread, stays in our group and is left to its
    owner).

    A pass is driven by C{SIGCHLD}, not by a timer (an idle orchestrator
    must not wake up): an orphan's death signals its new parent, us, and
    Twisted answers every C{SIGCHLD} by calling C{reapProcess()} on each
    entry of its C{reapProcessHandlers}.  The reaper puts one entry there
    under a key that is no pid, and that entry only schedules a pass at
    the next reactor turn (coalesced), so the supervised children Twisted
    reaps in the same sweep are handled first and their respawn does not
    wait for a scan of C{/proc}.  Passes run on the reactor thread, where
    Twisted registers its children, so no spawn can race them.

    @ivar reaped: how many orphans were reaped (logged one by one).
    """

    log = Logger()

    #: The key of the reaper's entry in Twisted's C{reapProcessHandlers}.
    _KEY = "orchestrator.supervision.orphans.OrphanReaper"

    def __init__(
        self,
        clock,
        known: Callable[[], Iterable[int]] = lambda: _twistedProcess.reapProcessHandlers,
        children: Callable[[], Iterable[int]] = ownChildren,
        waitpid: Callable[[int, int], tuple[int, int]] = os.waitpid,
        owner: Callable[[int], str | None] = lambda pgid: None,
        proc: str = "/proc",
        handlers: dict | None = None,
    ) -> None:
        self._clock = clock
        self._known = known
        self._children = children
        self._waitpid = waitpid
        self._owner = owner
        self._proc = proc
        self._handlers = handlers if handlers is not None else _twistedProcess.reapProcessHandlers
        self._pending = None
        self.reaped = 0

    def start(self) -> None:
        """
        Reap what is already there, then pass at every C{SIGCHLD}.
        """
        if self._handlers.get(self._KEY) is not self:
            self._handlers[self._KEY] = self
            self.reap()

    def stop(self) -> None:
        if self._handlers.get(self._KEY) is self:
            del self._handlers[self._KEY]
        if self._pending is not None and self._pending.active():
            self._pending.cancel()
        self._pending = None
        self.reap()

    def reapProcess(self) -> None:
        """
        Twisted's C{SIGCHLD} sweep: schedule one pass (see the class).
        """
        if self._pending is None or not self._pending.active():
            self._pending = self._clock.callLater(0, self._pass)

    def _pass(self) -> None:
        self._pending = None
        self.reap()

    def reap(self) -> list[int]:
        """
        One pass: reap every orphan that has exited.

        @return: the pids reaped.
        """
        known = set(self._known())
        ownGroup = os.getpgrp()
        done = []
        for pid in self._children():
            if pid in known:
                continue
            fields = _stat(pid, self._proc)
            if not fields or fields[0] != "Z" or int(fields[2]) == ownGroup:
                continue
            try:
                got, status = self._waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                continue
            if not got:
                continue
            self.reaped += 1
            done.append(pid)
            owner = self._owner(int(fields[2]))
            self.log.info(
                "reaped orphan {pid} (process group {pgid}{of}): {how}",
                pid=pid, pgid=int(fields[2]), of=f", left by {owner}" if owner else "",
                how=_describeStatus(status),
            )
        return done


def _describeStatus(status: int) -> str:
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            return f"killed by {signal.Signals(number).name}"
        except ValueError:
            return f"killed by signal {number}"
    return f"exit code {os.WEXITSTATUS(status)}"
