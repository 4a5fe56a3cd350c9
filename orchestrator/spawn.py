"""
Spawn a child in its own session, so that its whole process tree can be
signalled as one group, and tied to the orchestrator's life.

Twisted's C{reactor.spawnProcess} gives a child the orchestrator's process
group, so a signal to the child never reaches the grandchildren it starts
(a shell wrapper, a worker pool), and they outlive a stop holding the port.
L{SessionProcess} is Twisted's own L{twisted.internet.process.Process} with
three changes in the forked child before C{exec}: C{setsid()}, a parent-death
signal (C{PR_SET_PDEATHSIG}: SIGKILL when the orchestrator dies, even by
SIGKILL), and a check that the parent did not die before that was set.  Its
C{signalProcess} signals the group.  Everything else (pipes, reaping via
SIGCHLD, C{processExited}) is Twisted's.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import signal as _signal
from typing import Callable, Mapping, Sequence

from twisted.internet import process as _process
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IProcessProtocol, IProcessTransport

__all__ = ["SessionProcess", "sessionSpawner", "signalNumber", "killGroup", "Spawner"]

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


class SessionProcess(_process.Process):
    """
    A L{twisted.internet.process.Process} that leads its own session and
    process group and dies with its parent.
    """

    def __init__(self, *args, **kwargs) -> None:
        # Taken before the fork: in the child, getppid() already names
        # another parent if the orchestrator died in between.
        self._parentPid = os.getpid()
        super().__init__(*args, **kwargs)

    def _trySpawnInsteadOfFork(self, path, uid, gid, executable, args, environment, kwargs):
        # posix_spawn cannot set a parent-death signal; fork it is.
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

    def signalProcess(self, signalID):
        """
        Signal the child's whole process group (the child leads it).
        """
        number = signalNumber(signalID)
        if self.pid is None:
            raise ProcessExitedAlready()
        try:
            os.killpg(self.pid, number)
        except OSError as e:
            if e.errno == errno.ESRCH:
                raise ProcessExitedAlready()
            raise


def sessionSpawner(reactor) -> Spawner:
    """
    A spawner for a real POSIX reactor: like C{reactor.spawnProcess}, but
    the child gets its own session (see L{SessionProcess}).
    """

    def spawn(protocol, executable, args, env, path):
        return SessionProcess(reactor, executable, list(args), dict(env), path, protocol)

    return spawn
