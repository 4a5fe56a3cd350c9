"""
Spawn a child in its own session, so that its whole process tree can be
signalled as one group, and tie it to the orchestrator's life.

Twisted's C{reactor.spawnProcess} leaves a child in the orchestrator's
process group, so a signal to the child never reaches the grandchildren it
starts (a shell wrapper, a worker pool), and they outlive a stop holding
the port.  Two ways to do better, chosen once when the spawner is built:

 - L{WrappedProcess} (preferred): C{posix_spawn}, which makes the child's
   session and process group itself (C{POSIX_SPAWN_SETSID}), with the
   command behind C{setpriv --pdeathsig KILL --} from util-linux (the
   parent-death signal: SIGKILL when the orchestrator dies, even by
   SIGKILL), and behind C{env -C DIR} from coreutils only when the child's
   folder is not the orchestrator's.  Each wrapper C{exec}s the next, so
   the pid the orchestrator sees is the command's.  Where C{posix_spawn}
   cannot make the session (or Twisted's own spawn path is taken), the
   long form C{env -C DIR setsid setpriv --pdeathsig KILL -- COMMAND} is
   spawned.  C{posix_spawn} does not copy the orchestrator's page tables,
   so a spawn costs well under a millisecond of reactor time whatever its
   size; but it returns only once the child has exec'd, and the parent
   then usually waits for the CPU the child's further C{exec}s run on,
   which is why every wrapper left out counts (C{bench/RESULTS.md},
   "Start-up").
 - L{SessionProcess} (fallback where those tools are missing): Twisted's
   fork path with C{setsid()} and C{prctl(PR_SET_PDEATHSIG)} run in the
   child before C{exec}.  Forking a Python process costs about 3 ms at
   60 MB, growing with its memory (C{bench/RESULTS.md}).

A child that runs as another user or with other limits (C{user},
C{group}, C{umask}, C{rlimits}: a L{ChildSetup}) always takes the fork
path: its C{_setupChild} sets the limits, the umask, the supplementary
groups (C{initgroups}), the gid and last the uid, in the child, before
C{exec}.  C{setpriv} could switch the user but not the umask, and chaining
C{prlimit} and a shell for the rest would put three more programs (and a
shell's quoting) between the orchestrator and every such child; the fork
costs a few milliseconds of reactor time per spawn of those processes only.

Both signal the whole group in C{signalProcess}.  Everything else (pipes,
reaping via SIGCHLD, C{processExited}) is Twisted's.

Descriptors: Twisted's C{posix_spawn} path lists every open descriptor and
asks C{fcntl} about each one, in Python, on every spawn (about 3 us per fd:
2 ms of reactor time at 1000 fds), then asks C{posix_spawn} to close the
inheritable ones.  L{WrappedProcess} instead marks every descriptor from 3
up close-on-exec with one C{close_range(3, ~0, CLOSE_RANGE_CLOEXEC)} call
(Linux 5.11) right before the spawn, so the child gets exactly the pipes it
is given whatever the parent holds, at a flat cost.  And where
C{posix_spawn} itself refuses (glibc answers C{EBADF} for a file action on
a descriptor at or above a lowered C{RLIMIT_NOFILE}, which an inherited
descriptor can be), the spawn falls back to the fork path, once logged.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import functools
import os
import resource
import shutil
import signal as _signal
import subprocess
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from twisted.internet import process as _process
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IProcessProtocol, IProcessTransport
from twisted.logger import Logger

__all__ = [
    "ChildSetup",
    "GroupSignalling",
    "SessionProcess",
    "WrappedProcess",
    "Spawner",
    "killGroup",
    "sessionSpawner",
    "signalNumber",
    "wrapperCommand",
]

#: C{spawner(protocol, executable, args, env, path[, setup=ChildSetup]) -> IProcessTransport}
Spawner = Callable[[IProcessProtocol, str, Sequence[str], Mapping[str, str], str], IProcessTransport]

log = Logger()

_PR_SET_PDEATHSIG = 1


def loadedLibc():
    """
    The C library this interpreter already runs on (C{dlopen(NULL)}: the
    process's own symbols), without C{ctypes.util.find_library}, which
    runs C{ldconfig -p} in a subprocess (about 20 ms at every start).

    @return: the C{ctypes.CDLL}, or C{None} where it cannot be had.
    """
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


_libc = loadedLibc()
_prctl = getattr(_libc, "prctl", None)  # not Linux: the state file still ends leftovers

_SYS_close_range = 436  # the same number on every Linux architecture
_CLOSE_RANGE_CLOEXEC = 1 << 2


def _closeRangeCloexec() -> bool:
    """
    Mark every descriptor from 3 up close-on-exec, in one system call.

    Harmless to the orchestrator itself (Python opens everything
    close-on-exec already; the flag only matters at exec), and it keeps a
    descriptor inherited from whoever started the orchestrator out of every
    child, as Twisted's per-descriptor close actions did.

    @return: whether the kernel did it (Linux 5.11 or later).
    """
    if _libc is None:
        return False
    try:
        result = _libc.syscall(ctypes.c_long(_SYS_close_range), ctypes.c_uint(3),
                               ctypes.c_uint(0xFFFFFFFF), ctypes.c_uint(_CLOSE_RANGE_CLOEXEC))
    except (AttributeError, OSError):
        return False
    return result == 0


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


    def signalLeader(self, signalID):
        """
        Signal the child alone, not its group (C{to: "process"} of the
        signal route).
        """
        if self.pid is None:
            raise ProcessExitedAlready()
        try:
            os.kill(self.pid, signalNumber(signalID))
        except ProcessLookupError:
            raise ProcessExitedAlready()


class WrappedProcess(GroupSignalling, _process.Process):
    """
    A child spawned with C{posix_spawn} behind the session and parent-death
    wrappers (see L{wrapperCommand}); forked instead when C{posix_spawn}
    refuses (see the module's docstring).
    """

    #: Whether a fork fallback was already logged (once per orchestrator).
    _fellBack = False
    #: Whether C{posix_spawn} can make the session (C{POSIX_SPAWN_SETSID},
    #: glibc 2.26); cleared, once, where it cannot.
    _sessionFlag = True

    def __init__(self, *args, sessionArgv: list[str] | None = None, **kwargs) -> None:
        # Set before Process.__init__, which spawns.
        self._sessionArgv = sessionArgv
        super().__init__(*args, **kwargs)

    def _trySpawnInsteadOfFork(self, path, uid, gid, executable, args, environment, kwargs):
        fdmap = kwargs.get("fdmap") or {}
        if (uid is not None or gid is not None or path is not None
                or getattr(self._reactor, "_neverUseSpawn", False) or not _closeRangeCloexec()):
            # Twisted's own way: list every descriptor, close the inheritable ones.
            try:
                return super()._trySpawnInsteadOfFork(path, uid, gid, executable, args,
                                                      environment, kwargs)
            except OSError as e:
                return self._fallBack(e)
        # Everything from 3 up is close-on-exec now: only the child's own
        # descriptors need file actions.  Twisted's _getFileActions still
        # decides the dup2 order, so a pipe that lands on a descriptor
        # number another one needs is moved out of the way first.
        fdState = []
        for fd in {0, 1, 2} | {f for f in fdmap.values() if isinstance(f, int)}:
            try:
                fdState.append((fd, fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC))
            except OSError:
                pass
        options = dict(
            file_actions=_process._getFileActions(
                fdState, fdmap, doClose=_process._PS_CLOSE, doDup2=_process._PS_DUP2),
            setsigdef=[s for s in range(1, _signal.NSIG) if _signal.getsignal(s) == _signal.SIG_IGN],
        )
        try:
            self.pid = self._sessionSpawn(environment, options)
            if self.pid is None:
                self.pid = os.posix_spawnp(executable, args, environment, **options)
        except OSError as e:
            return self._fallBack(e)
        self.status = -1
        return True

    def _sessionSpawn(self, environment, options) -> int | None:
        """
        Spawn the shorter command line (L{sessionSpawner}'s
        C{sessionArgv}) with C{posix_spawn} making the session itself.

        Each wrapper is one more C{exec} (a dynamic link) before the
        command runs, and the reactor waits for most of them: C{posix_spawn}
        returns once the child has exec'd, and the woken parent usually
        runs on the CPU the child's next C{exec}s are using.  Four programs
        per spawn made 100 spawns take 0.3 s; two take about half that.

        @return: the pid, or C{None} when the long form must be spawned.
        """
        if self._sessionArgv is None or not WrappedProcess._sessionFlag:
            return None
        try:
            return os.posix_spawnp(self._sessionArgv[0], self._sessionArgv, environment,
                                   setsid=True, **options)
        except NotImplementedError:  # no POSIX_SPAWN_SETSID in this C library
            WrappedProcess._sessionFlag = False
            return None

    def _fallBack(self, error: OSError) -> bool:
        if error.errno not in (errno.EBADF, errno.EINVAL, errno.EMFILE):
            raise error
        if not WrappedProcess._fellBack:
            WrappedProcess._fellBack = True
            log.warn("posix_spawn refused ({error}); spawning by fork instead "
                     "(RLIMIT_NOFILE too low for an inherited descriptor?)",
                     error=os.strerror(error.errno))
        return False


@dataclass(frozen=True)
class ChildSetup:
    """
    What a child changes about itself before C{exec}: limits, umask and
    identity.  Built from a process's configuration by L{ChildSetup.of}.

    @ivar rlimits: C{(RLIMIT_* number, soft, hard)} triples; C{-1} is
        C{RLIM_INFINITY}, C{None} keeps the current value.
    @ivar umask: the mask, or C{None} to inherit.
    @ivar uid: switch to this user (after the groups), or C{None}.
    @ivar gid: switch to this primary group, or C{None}.
    @ivar username: for C{initgroups} (the user's supplementary groups);
        C{None} sets only C{gid} as supplementary group.
    """

    rlimits: tuple[tuple[int, int | None, int | None], ...] = ()
    umask: int | None = None
    uid: int | None = None
    gid: int | None = None
    username: str | None = None

    @classmethod
    def of(cls, config) -> "ChildSetup | None":
        """
        The setup a L{ProcessConfig} asks for, or C{None} when it asks for
        none (the child then takes the cheaper wrapped path).
        """
        identity = config.identity
        if identity is None and config.umask is None and not config.rlimits:
            return None
        limits = []
        for name, value in config.rlimits.items():
            number = getattr(resource, "RLIMIT_" + name.upper())
            if isinstance(value, Mapping):
                soft, hard = value["soft"], value["hard"]
            else:
                soft = hard = value
            limits.append((number, _limit(soft), _limit(hard)))
        return cls(
            rlimits=tuple(limits),
            umask=int(config.umask, 8) if config.umask is not None else None,
            uid=identity.uid if identity else None,
            gid=identity.gid if identity else None,
            username=identity.name if identity else None,
        )

    def apply(self) -> None:
        """
        Run in the forked child: limits first (raising a hard limit needs
        root), then the umask, the groups, the gid and last the uid.
        """
        for number, soft, hard in self.rlimits:
            current = resource.getrlimit(number)
            hard = current[1] if hard is None else hard
            soft = current[0] if soft is None else soft
            resource.setrlimit(number, (soft, hard))
        if self.umask is not None:
            os.umask(self.umask)
        if self.gid is not None or self.uid is not None:
            if self.username is not None:
                os.initgroups(self.username, self.gid if self.gid is not None else os.getgid())
            else:
                os.setgroups([self.gid] if self.gid is not None else [])
        if self.gid is not None:
            os.setgid(self.gid)
        if self.uid is not None:
            os.setuid(self.uid)


def _limit(value) -> int:
    return resource.RLIM_INFINITY if value == "unlimited" else int(value)


class SessionProcess(GroupSignalling, _process.Process):
    """
    A L{twisted.internet.process.Process} forked to run C{setsid()} and
    C{prctl(PR_SET_PDEATHSIG)} (and a L{ChildSetup}, if given) in the
    child before C{exec}.
    """

    def __init__(self, *args, setup: ChildSetup | None = None, **kwargs) -> None:
        # Taken before the fork: in the child, getppid() already names
        # another parent if the orchestrator died in between.
        self._parentPid = os.getpid()
        self._setup = setup
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
        if self._setup is not None:
            # After the pipes are in place: a limit or user that cannot be
            # set is reported on the child's own stderr (its captured
            # output), and the child exits 1 through the restart policy.
            self._setup.apply()


#: Where C{setsid} sits in L{wrapperCommand}'s prefix (after C{env -C {dir}}).
_SETSID_AT = 3


def _sessionArgv(prefix: list[str], directory: str, here: str | None, command: list[str]) -> list[str]:
    """
    L{wrapperCommand}'s C{prefix} and C{command} without C{setsid} (for
    L{WrappedProcess._sessionSpawn}), and without C{env -C} when the
    child's folder is C{here}, the orchestrator's own.
    """
    changeDir = [part.replace("{dir}", directory) for part in prefix[:_SETSID_AT]]
    return ([] if directory == here else changeDir) + prefix[_SETSID_AT + 1:] + command


def _ownFolder() -> str | None:
    try:
        return os.getcwd()
    except OSError:  # our folder was removed: a child gets env -C
        return None


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
    # With the tools found here, posix_spawn itself can make the session
    # (see WrappedProcess._sessionSpawn); an explicit prefix is used as given.
    standard = wrapper is True and prefix is not None

    def forked(protocol, executable, args, env, path, setup=None):
        return SessionProcess(reactor, executable, list(args), dict(env), path, protocol, setup=setup)

    if prefix is None:
        forked.mechanism = "fork"
        return forked

    def spawn(protocol, executable, args, env, path, setup=None):
        if setup is not None:  # another user, umask or limits: see the module docstring
            return forked(protocol, executable, args, env, path, setup)
        here = _ownFolder()
        directory = path or here or os.getcwd()  # (raises, as it did, when our folder is gone)
        command = [executable] + list(args[1:])
        argv = [part.replace("{dir}", directory) for part in prefix] + command
        # path=None keeps Twisted on its posix_spawn path; env -C changes
        # the directory in the child instead.
        return WrappedProcess(reactor, argv[0], argv, dict(env), None, protocol,
                              sessionArgv=_sessionArgv(prefix, directory, here, command) if standard else None)

    spawn.mechanism = "posix_spawn+wrappers"
    return spawn
