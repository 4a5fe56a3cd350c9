"""
How the orchestrator comes up and goes away, as a service manager sees it:
the documented exit codes, the one line that says why it could not come up,
and what a SIGHUP means.

Exit codes (documented in the README, "Exit codes and signals"):

  - C{0}: a clean stop (SIGTERM, SIGINT, a terminal hang-up), every child gone;
  - C{1}: a failure to come up at run time (the admin endpoint cannot
    listen, a plugin's C{startup} hook failed) or a runtime failure;
  - C{2}: the configuration is invalid (nothing was started);
  - C{3}: another orchestrator owns this configuration's state file.

twistd has no public way for an application to choose its exit status: the
reactor stops, C{twistd} removes its pid file, stops logging and returns,
and the interpreter exits 0 (or re-raises the signal that stopped the
reactor).  L{ProcessExitStatus} therefore registers an C{atexit} hook that,
only when a failure was recorded, flushes the standard streams and leaves
with that code via C{os._exit}: it runs after twistd has finished all of
its own clean-up, which is the moment a real exit status can still be set.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
from typing import Callable, Mapping

__all__ = [
    "EXIT_OK", "EXIT_FAILURE", "EXIT_CONFIG", "EXIT_ALREADY_RUNNING",
    "ExitStatus", "ProcessExitStatus", "Hangup", "TerminalWatch", "underServiceManager",
]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2
EXIT_ALREADY_RUNNING = 3

#: The longest explanation written to stderr (one line, never a traceback).
MAX_MESSAGE = 1000


def oneLine(message: str) -> str:
    """
    C{message} on one bounded line: a service manager's journal and a
    terminal show one line per failure.
    """
    text = " ".join(str(message).split())
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


class ExitStatus:
    """
    The exit status the orchestrator asks for, and the line that explains
    it.  The first failure wins: what follows from it (a stop, its log
    lines) never replaces the cause.

    @ivar code: C{None} until L{fail} is called.
    @ivar message: the one-line explanation of C{code}.
    """

    def __init__(self, write: Callable[[str], None] | None = None) -> None:
        self._write = write
        self.code: int | None = None
        self.message: str | None = None

    def fail(self, code: int, message: str) -> bool:
        """
        Record a failure and say it on one line.

        @return: whether this was the first failure (the one that counts).
        """
        if self.code is not None:
            return False
        self.code = code
        self.message = oneLine(message)
        if self._write is not None:
            self._write(f"orchestrator: {self.message}\n")
        return True


def _writeStderr(line: str) -> None:
    # twistd redirects sys.stderr into its log once logging starts; the
    # operator's line goes to the real standard error, file descriptor 2.
    try:
        os.write(2, line.encode("utf-8", "replace"))
    except OSError:
        pass


class ProcessExitStatus(ExitStatus):
    """
    L{ExitStatus} for the real process under twistd: the line goes to the
    real stderr, and L{install} makes the interpreter exit with the code.
    """

    def __init__(self) -> None:
        super().__init__(_writeStderr)
        self._installed = False

    def install(self) -> None:
        """
        Register the exit hook (once).  It does nothing unless a failure
        was recorded.
        """
        if not self._installed:
            self._installed = True
            atexit.register(self._exit)

    def _exit(self) -> None:
        if not self.code:
            return
        import logging

        for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
            try:
                stream.flush()
            except Exception:
                pass
        logging.shutdown()
        os._exit(self.code)


def underServiceManager(environ: Mapping[str, str]) -> bool:
    """
    Whether a service manager runs us: systemd sets C{INVOCATION_ID} for
    every unit (and C{NOTIFY_SOCKET} for C{Type=notify}); supervisord sets
    C{SUPERVISOR_ENABLED}.
    """
    return any(environ.get(name) for name in ("INVOCATION_ID", "NOTIFY_SOCKET",
                                               "SUPERVISOR_ENABLED"))


def _hasTerminal() -> bool:
    """
    Whether this process has a controlling terminal right now: C{/dev/tty}
    opens only then (after a hang-up the kernel has already detached the
    session from it when the SIGHUP arrives).
    """
    try:
        fd = os.open("/dev/tty", os.O_RDONLY | os.O_NOCTTY)
    except OSError:  # ENXIO: no controlling terminal (any other error: none usable)
        return False
    os.close(fd)
    return True


class Hangup:
    """
    What a SIGHUP means to this orchestrator.

    Under a service manager, or without a controlling terminal (a daemon,
    a container), SIGHUP is the reload order (C{ExecReload=kill -HUP
    $MAINPID}, nginx's habit).  Started from a terminal (C{make run},
    C{twistd -n} in a shell), a SIGHUP that arrives once the terminal is
    gone is the terminal hanging up: the orchestrator stops gracefully, as
    on SIGINT, instead of living on without a terminal and holding the
    state file.  A C{kill -HUP} while the terminal is still there reloads.
    Started under C{nohup} (SIGHUP ignored when we started), a hang-up is
    ignored too.

    @param environ: the orchestrator's environment at start.
    @param hasTerminal: whether there is a controlling terminal now.
    @param inherited: the SIGHUP disposition we were started with.
    """

    RELOAD = "reload"
    STOP = "stop"
    IGNORE = "ignore"

    def __init__(self, environ: Mapping[str, str], hasTerminal: Callable[[], bool] = _hasTerminal,
                 inherited=None) -> None:
        self._hasTerminal = hasTerminal
        self.managed = underServiceManager(environ)
        self.hadTerminal = not self.managed and hasTerminal()
        self.nohup = (inherited if inherited is not None
                      else signal.getsignal(signal.SIGHUP)) == signal.SIG_IGN

    def meaning(self) -> str:
        """
        L{RELOAD}, L{STOP} or L{IGNORE}, for a SIGHUP received now.
        """
        if not self.hadTerminal or self._hasTerminal():
            return self.RELOAD
        return self.IGNORE if self.nohup else self.STOP

    def terminalLost(self) -> bool:
        """
        Whether the terminal we were started from is gone without the
        SIGHUP that should have said so having reached us (see
        L{TerminalWatch}): only for an orchestrator that had one, outside a
        service manager and not under C{nohup}.
        """
        return self.hadTerminal and not self.nohup and not self._hasTerminal()


class TerminalWatch:
    """
    Notice a terminal hang-up that sends us no SIGHUP.

    The kernel sends the hang-up's SIGHUP to the session leader only, and
    relies on it to pass it on.  An interactive shell does; C{make} does
    not: run as the session leader (C{tmux new 'make run'}, C{ssh -t host
    make run}, an IDE's terminal), it waits for its children on SIGHUP,
    so C{twistd} below it would live on without a terminal, holding the
    state file and the ports.  Checking every C{interval} seconds whether
    the controlling terminal is still there (one C{open} of C{/dev/tty})
    catches that case too, from the reactor.

    @param hangup: what a hang-up means to us (L{Hangup}).
    @param clock: the reactor's clock.
    @param onLost: called once, when the terminal is gone.
    """

    interval = 1.0

    def __init__(self, hangup: Hangup, clock, onLost: Callable[[], None]) -> None:
        self._hangup = hangup
        self._clock = clock
        self._onLost = onLost
        self._call = None

    def start(self) -> None:
        """
        Start watching, if there is a terminal to watch.
        """
        if self._hangup.hadTerminal and not self._hangup.nohup and self._call is None:
            self._call = self._clock.callLater(self.interval, self._check)

    def stop(self) -> None:
        """
        Stop watching (the orchestrator stops).
        """
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _check(self) -> None:
        self._call = None
        if self._hangup.terminalLost():
            self._onLost()
        else:
            self._call = self._clock.callLater(self.interval, self._check)
