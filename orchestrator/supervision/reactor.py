"""
The reactor C{twistd orchestrator} runs on: Twisted's epoll reactor, except
that a child's exit is handled before the next ready descriptor, not after
a whole batch of them.

Why: Twisted learns of an exit through its C{SIGCHLD} waker, a pipe the
signal writes a byte to (C{signal.set_wakeup_fd}).  C{EPollReactor.doPoll}
serves every descriptor one C{epoll_wait} returned, in order; with 50 busy
admin API connections a batch is ~50 requests (~8 ms), so an exit that
happens during one batch waits for the rest of it, and then for its place
in the next one, before it is reaped and the child respawned: respawn p95
3.8x its unloaded value (C{bench/RESULTS.md}, "Respawn under API load").

How: Twisted's C{SIGCHLD} handling is kept as it is (its no-op Python
handler and wakeup fd, C{siginterrupt(SIGCHLD, False)}); once it is
installed, L{ChildFirstReactor} replaces only the Python-level handler by
one that also sets a flag (C{siginterrupt} again: C{signal.signal} resets
it).  CPython runs that handler on the reactor thread at the next bytecode,
so before dispatching each ready descriptor the reactor looks at the flag
and, if it is set, reaps first (C{twisted.internet.process.reapAllProcesses},
what the waker's own C{doRead} calls).  The waker still fires later and
sweeps again, finding nothing: one C{waitpid(WNOHANG)} per child, the cost
Twisted pays for every C{SIGCHLD} anyway.  One such early sweep per batch:
a crash loop cannot come between every pair of requests.

Writes go out in the turn that made them.  Twisted's transports only
buffer in C{write} and ask the reactor for writability (C{addWriter}: an
C{epoll_ctl}); the data is sent on the next turn, once C{epoll_wait} said
the socket is writable, and C{removeWriter} is a second C{epoll_ctl}.  For
an API answer that is one extra C{epoll_wait}, two C{epoll_ctl} and a
reactor turn of latency per request (7 system calls where 4 do).
L{ChildFirstReactor} keeps a new writer aside instead and, at the end of
the batch (and before sleeping, for writers that timers added), lets it
write, as the reactor would on a writable event (same error handling);
only a writer that still has data left (the kernel took part of it) is
registered with epoll and waits as before.  Those writes are served like
descriptors: a child's exit noted during them is swept before the next
one (one early sweep per flush), or fifty answers' sends would come
before the respawn.

It is installed by L{orchestrator.tap.makeService} only when no reactor is
installed yet, so C{twistd --reactor=poll} (or any other) still wins; a
reactor run without signal handlers reaps like C{EPollReactor}.
"""

from __future__ import annotations

import signal
import sys

from twisted.internet import process
from twisted.internet.epollreactor import EPOLLOUT, EPollReactor
from twisted.logger import Logger
from twisted.python import log as _legacyLog

__all__ = ["ChildFirstReactor", "install", "installIfNone"]

try:  # where Twisted keeps it; without it the only cost is a redundant sweep
    from twisted.internet._signals import _SIGCHLDWaker
except ImportError:  # pragma: no cover
    _SIGCHLDWaker = ()


class _FlagChildExits:
    """
    Twisted's signal handling plus the flag: a C{SignalHandling} (its
    C{install}/C{uninstall} protocol) wrapping the reactor's default one.
    """

    def __init__(self, twisted, reactor: "ChildFirstReactor") -> None:
        self._twisted = twisted
        self._reactor = reactor

    def install(self) -> None:
        self._twisted.install()
        # Only over Twisted's own (Python-level) handler: if there is
        # none, Twisted is not watching SIGCHLD and neither are we.
        if callable(signal.getsignal(signal.SIGCHLD)):
            signal.signal(signal.SIGCHLD, self._reactor._childSignalled)
            signal.siginterrupt(signal.SIGCHLD, False)

    def uninstall(self) -> None:
        # Twisted's uninstall puts SIG_DFL back, over ours too.
        self._twisted.uninstall()


class ChildFirstReactor(EPollReactor):
    """
    An L{EPollReactor} that reaps exited children before serving the next
    ready descriptor of a batch (see the module docstring).

    @ivar exitsPending: a C{SIGCHLD} arrived and was not swept yet.
    """

    log = Logger()
    exitsPending = False
    #: Sweeps left before the waker's turn in the current batch: one.  A
    #: crash loop whose every respawn dies at once would otherwise sweep
    #: and respawn between each pair of requests of a batch (and keep each
    #: old run's pipes open until the batch ends); its further exits wait
    #: for the waker, as on L{EPollReactor}.
    _earlySweeps = 0
    #: The writer whose eager write is running (see L{_flushWriters}).
    _flushing = None
    #: Rounds of eager writes per flush (writes made by a write's callbacks).
    FLUSH_ROUNDS = 4

    def __init__(self) -> None:
        #: Writers added since the last flush, not registered with epoll
        #: (a dict: insertion order, and no writer twice).
        self._newWriters: dict = {}
        super().__init__()

    def doPoll(self, timeout):
        self._earlySweeps = 1
        if self._newWriters:
            # Added by timers or thread calls since the last batch; what
            # they run may have made something due at once.
            self._flushWriters()
            soon = self.timeout()
            if soon is not None and (timeout is None or soon < timeout):
                timeout = soon
        super().doPoll(timeout)
        if self._newWriters:
            self._flushWriters()

    doIteration = doPoll

    # -- writes in the turn that made them (see the module docstring) ------------------

    def addWriter(self, writer):
        if writer is self._flushing or writer in self._newWriters:
            return
        if writer.fileno() in self._writes or self._continuousPolling.isWriting(writer):
            return  # registered already: waiting for the kernel
        self._newWriters[writer] = None

    def removeWriter(self, writer):
        if writer is self._flushing:
            self._flushing = None  # it wrote everything (or is closing)
            return
        if self._newWriters.pop(writer, False) is None:
            return
        super().removeWriter(writer)

    def getWriters(self):
        return super().getWriters() + list(self._newWriters)

    def removeAll(self):
        kept, self._newWriters = list(self._newWriters), {}
        removed = super().removeAll()
        return removed + [w for w in kept if w not in removed]

    def _flushWriters(self) -> None:
        """
        Let each new writer write now, as on a writable event; register
        with epoll only those the kernel did not take everything from.
        What a write's callbacks write in turn is flushed too, in at most
        L{FLUSH_ROUNDS} rounds; any writer left after them is registered
        (never left aside while the reactor sleeps).
        """
        # The writes are descriptors served too: a child's exit noted
        # meanwhile is swept before the next one (one early sweep for the
        # flush, as for a batch), not after fifty answers are sent.
        self._earlySweeps = max(self._earlySweeps, 1)
        for _ in range(self.FLUSH_ROUNDS):
            if not self._newWriters:
                return
            writers, self._newWriters = self._newWriters, {}
            for writer in writers:
                self._sweepEarly()
                fd = writer.fileno()
                if fd == -1:
                    continue  # closed meanwhile: epoll would never report it either
                self._flushing = writer
                try:
                    _legacyLog.callWithLogger(writer, super()._doReadOrWrite, writer, fd, EPOLLOUT)
                finally:
                    still = self._flushing is writer
                    self._flushing = None
                if still and writer.fileno() != -1:
                    super().addWriter(writer)
        writers, self._newWriters = self._newWriters, {}
        for writer in writers:
            if writer.fileno() != -1:
                super().addWriter(writer)

    def _signalsFactory(self):
        return _FlagChildExits(super()._signalsFactory(), self)

    def _childSignalled(self, signum, frame) -> None:
        # A signal handler: only note it; the sweep runs between two
        # descriptors, never inside another one's callback.
        self.exitsPending = True

    def _doReadOrWrite(self, selectable, fd, event):
        if self.exitsPending:
            if isinstance(selectable, _SIGCHLDWaker):
                self.exitsPending = False  # its doRead is the sweep
            elif self._sweepEarly() and self._selectables.get(fd) is not selectable:
                # The exit's handling let go of this descriptor (a spawn
                # closing an old run's pipes): its event is stale.
                return None
        return super()._doReadOrWrite(selectable, fd, event)

    def _sweepEarly(self) -> bool:
        """
        Sweep now if a child's exit is pending and the early sweep of this
        batch (or flush) is not spent; whether it swept.
        """
        if self.exitsPending and self._earlySweeps:
            self._earlySweeps -= 1
            self.reapNow()
            return True
        return False

    def reapNow(self) -> None:
        """
        Sweep the children now (what the C{SIGCHLD} waker would do when its
        turn in the batch came).
        """
        # Cleared first: a SIGCHLD during the sweep sets it again.
        self.exitsPending = False
        try:
            process.reapAllProcesses()
        except Exception:
            self.log.failure("reaping children")


def install() -> ChildFirstReactor:
    """
    Install a L{ChildFirstReactor} as C{twisted.internet.reactor}.
    """
    from twisted.internet.main import installReactor

    reactor = ChildFirstReactor()
    installReactor(reactor)
    return reactor


def installIfNone() -> None:
    """
    Install a L{ChildFirstReactor} unless a reactor is installed already
    (C{twistd --reactor}, a test's, or an import of
    C{twisted.internet.reactor}) or epoll is missing (not Linux).
    """
    import select

    if "twisted.internet.reactor" not in sys.modules and hasattr(select, "epoll"):
        install()
