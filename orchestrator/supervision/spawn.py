"""
Spawn a child in its own session, so that its whole process tree can be
signalled as one group, and tie it to the orchestrator's life.

Twisted's C{reactor.spawnProcess} leaves a child in the orchestrator's
process group, so a signal to the child never reaches the grandchildren it
starts (a shell wrapper, a worker pool), and they outlive a stop holding
the port.  Two ways to do better, chosen once when the spawner is built:

 - L{WrappedProcess} (preferred): Twisted's C{posix_spawn} fast path, with
   the command behind three tiny exec wrappers from coreutils/util-linux:
   C{env -C DIR setsid setpriv --pdeathsig KILL -- COMMAND}.  Each wrapper
   C{exec}s the next, so the pid the orchestrator sees is the command's;
   C{setsid} gives it a session and process group, C{setpriv} the
   parent-death signal (SIGKILL when the orchestrator dies, even by
   SIGKILL).  C{posix_spawn} does not copy the orchestrator's page tables,
   so a spawn costs about 0.6 ms of reactor time whatever its size.
 - L{SessionProcess} (fallback where those tools are missing): Twisted's
   fork path with C{setsid()} and C{prctl(PR_SET_PDEATHSIG)} run in the
   child before C{exec}.  Forking a Python process costs about 3 ms at
   60 MB, growing with its memory (C{bench/RESULTS.md}).

Both signal the whole group in C{signalProcess}.  Everything else (pipes,
reaping via SIGCHLD, C{processExited}) is Twisted's.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import os
import shutil
import signal as _signal
import subprocess
from typing import Callable, Mapping, Sequence

from twisted.internet import process as _process
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IProcessProtocol, IProcessTransport

__all__ = [
    "GroupSignalling",
    "SessionProcess",
    "WrappedProcess",
    "Spawner",
    "killGroup",
    "sessionSpawner",
    "signalNumber",
    "wrapperCommand",
]

#: C{spawner(protocol, executable, args, env, path) -> IProcessTransport}
Spawner = Callable[[IProcessProtocol, str, Sequence[str], Mapping[str, str], str], IProcessTransport]

_PR_SET_PDEATHSIG = 1
try:
    _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    _prctl = _libc.prctl
except (OSError, AttributeError):  # not Linux: the state file still ends leftovers
    _prctl = None


def signalNumber(signal: str | int) -> int:
    """
    C{"TERM"} -> C{signal.SIGTERM}; numbers pass through.
    """
    if isinstance(signal, int):
        return signal
    return int(getattr(_signal, "SIG" + signal.upper().removeprefix("SIG")))


def killGroup(pgid: int, signal: int) -> bool:
    """
    Signal every process of a process group.

    @return: whether any process was there to be signalled.
    """
    try:
        os.killpg(pgid, signal)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    return True


class GroupSignalling:
    """
    C{signalProcess} for a child that leads its own process group: the
    signal goes to the whole group.
    """

    pid: int | None

    def signalProcess(self, signalID):
        number = signalNumber(signalID)
        if self.pid is None:
            raise ProcessExitedAlready()
        try:
            os.killpg(self.pid, number)
        except OSError as e:
            if e.errno != errno.ESRCH:
                raise
            # A wrapped child signalled before its setsid ran is not a
            # group leader yet: signal the process itself.
            try:
                os.kill(self.pid, number)
            except ProcessLookupError:
                raise ProcessExitedAlready()


class WrappedProcess(GroupSignalling, _process.Process):
    """
    A child spawned with C{posix_spawn} behind the session and parent-death
    wrappers (see L{wrapperCommand}).
    """


class SessionProcess(GroupSignalling, _process.Process):
    """
    A L{twisted.internet.process.Process} forked to run C{setsid()} and
    C{prctl(PR_SET_PDEATHSIG)} in the child before C{exec}.
    """

    def __init__(self, *args, **kwargs) -> None:
        # Taken before the fork: in the child, getppid() already names
        # another parent if the orchestrator died in between.
        self._parentPid = os.getpid()
        super().__init__(*args, **kwargs)

    def _trySpawnInsteadOfFork(self, path, uid, gid, executable, args, environment, kwargs):
        # posix_spawn cannot run code in the child; fork it is.
        return False

    def _setupChild(self, *args, **kwargs):
        # Runs in the forked child, before exec; an exception here makes
        # Twisted write it to the child's stderr and _exit(1).
        os.setsid()
        if _prctl is not None:
            _prctl(_PR_SET_PDEATHSIG, int(_signal.SIGKILL), 0, 0, 0)
            if os.getppid() != self._parentPid:  # the parent died before prctl
                os._exit(1)
        super()._setupChild(*args, **kwargs)


@functools.lru_cache(maxsize=None)
def wrapperCommand(which: Callable[[str], str | None] = shutil.which) -> list[str] | None:
    """
    The wrapper prefix C{[env, -C]} ... as absolute paths, or C{None} if a
    tool is missing or too old (C{env -C} needs coreutils 8.28,
    C{setpriv --pdeathsig} util-linux 2.33).  Checked by running it, once
    per process (cached: an exec probe builds a spawner per run).
    """
    tools = {name: which(name) for name in ("env", "setsid", "setpriv")}
    if None in tools.values():
        return None
    prefix = [tools["env"], "-C"]
    suffix = [tools["setsid"], tools["setpriv"], "--pdeathsig", "KILL", "--"]
    true = which("true")
    if true is None:
        return None
    try:
        checked = subprocess.run(prefix + ["/"] + suffix + [true], capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if checked.returncode != 0:
        return None
    return prefix + ["{dir}"] + suffix


def sessionSpawner(reactor, wrapper: list[str] | None | bool = True) -> Spawner:
    """
    A spawner for a real POSIX reactor: like C{reactor.spawnProcess}, but
    the child leads its own session and dies with the orchestrator.

    @param wrapper: C{True} to find the wrappers (L{wrapperCommand}),
        C{False} for the fork path, or an explicit prefix.
    """
    prefix = list(wrapperCommand() or []) or None if wrapper is True else (wrapper or None)
    if prefix is None:
        def spawn(protocol, executable, args, env, path):
            return SessionProcess(reactor, executable, list(args), dict(env), path, protocol)

        spawn.mechanism = "fork"
        return spawn

    def spawn(protocol, executable, args, env, path):
        argv = [part.replace("{dir}", path or os.getcwd()) for part in prefix]
        argv += [executable] + list(args[1:])
        # path=None keeps Twisted on its posix_spawn path; env -C changes
        # the directory in the child instead.
        return WrappedProcess(reactor, argv[0], argv, dict(env), None, protocol)

    spawn.mechanism = "posix_spawn+wrappers"
    return spawn
