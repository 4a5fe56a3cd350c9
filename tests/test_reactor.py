"""
Tests for L{orchestrator.supervision.reactor.ChildFirstReactor}: a real
epoll reactor (not installed, not run) serving real socketpairs, and a
real child whose exit is signalled while they are ready.

The order of a batch is observed by calling C{doIteration(0)} once; no
wall-clock time is measured.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import socket
import sys
import time

from twisted.internet import abstract, process
from twisted.internet.protocol import ProcessProtocol
from twisted.trial.unittest import SynchronousTestCase

from orchestrator.supervision.reactor import ChildFirstReactor, installIfNone


class _Reader:
    """
    One end of a socketpair with a byte waiting; reading it records
    C{name} in C{order} and runs C{then} (once).
    """

    def __init__(self, name: str, order: list, then=None) -> None:
        self.name = name
        self._order = order
        self._then = then
        self._mine, self._theirs = socket.socketpair()
        self._mine.setblocking(False)
        self._theirs.send(b"x")

    def fileno(self) -> int:
        return self._mine.fileno()

    def doRead(self):
        self._mine.recv(16)
        self._order.append(self.name)
        then, self._then = self._then, None
        if then is not None:
            then()

    def logPrefix(self) -> str:
        return self.name

    def connectionLost(self, reason) -> None:
        self.close()

    def close(self) -> None:
        self._mine.close()
        self._theirs.close()


class _Sweep:
    """
    An entry in Twisted's C{reapProcessHandlers} that records each sweep.
    """

    def __init__(self, order: list) -> None:
        self._order = order

    def reapProcess(self) -> None:
        self._order.append("reap")


class _ExitRecorder(ProcessProtocol):
    def __init__(self, order: list) -> None:
        self._order = order

    def processExited(self, reason) -> None:
        self._order.append("exit")


class ChildFirstReactorTests(SynchronousTestCase):
    """
    A child's exit is handled before the next ready descriptor of a batch.
    """

    def setUp(self) -> None:
        self.reactor = ChildFirstReactor()
        self.addCleanup(self._unbuild)
        self.order: list[str] = []

    def _unbuild(self) -> None:
        reactor = self.reactor
        for reader in list(reactor._internalReaders):
            reactor.removeReader(reader)
            reader.connectionLost(None)
        reactor._internalReaders.clear()
        for selectable in reactor.removeAll():
            selectable.connectionLost(None)
        for call in reactor.getDelayedCalls():
            call.cancel()
        reactor._poller.close()

    def readers(self, count: int, then=None) -> list[_Reader]:
        readers = [_Reader(f"socket {i}", self.order, then if i == 0 else None) for i in range(count)]
        for reader in readers:
            self.reactor.addReader(reader)  # (closed by _unbuild)
        return readers

    def test_signalDuringABatchReapsBeforeTheNextDescriptor(self) -> None:
        """A SIGCHLD noted while one ready socket is served: the children are swept before any other socket of the batch."""
        sweep = _Sweep(self.order)
        key = "tests.test_reactor.sweep"
        process.reapProcessHandlers[key] = sweep
        self.addCleanup(process.reapProcessHandlers.pop, key, None)
        # The first socket served gets the signal (whichever epoll lists first).
        self.readers(1, then=lambda: self.reactor._childSignalled(signal.SIGCHLD, None))
        first = self.order
        others = self.readers(3)
        self.reactor.doIteration(0)
        self.assertEqual(len(first), 5)
        self.assertEqual(first[1], "reap")
        self.assertEqual(sorted(first[2:]), sorted(r.name for r in others))
        self.assertFalse(self.reactor.exitsPending)

    def test_oneEarlySweepPerBatch(self) -> None:
        """SIGCHLDs noted while each of three sockets is served (a crash loop): one sweep in the batch; the rest wait for the waker."""
        key = "tests.test_reactor.sweep"
        process.reapProcessHandlers[key] = _Sweep(self.order)
        self.addCleanup(process.reapProcessHandlers.pop, key, None)
        for reader in self.readers(3):
            reader._then = lambda: self.reactor._childSignalled(signal.SIGCHLD, None)
        self.reactor.doIteration(0)
        self.assertEqual(self.order.count("reap"), 1)
        self.assertEqual(self.order[1], "reap")
        self.assertTrue(self.reactor.exitsPending)

    def test_descriptorReleasedByTheSweepIsNotServed(self) -> None:
        """A ready socket the exit's handling let go of (as a respawn closes an old run's pipes) is not served its stale event."""
        readers: list[_Reader] = []

        class Release(_Sweep):
            def reapProcess(this) -> None:
                super().reapProcess()
                for reader in readers:
                    if reader.name not in self.order:
                        self.reactor.removeReader(reader)

        key = "tests.test_reactor.sweep"
        process.reapProcessHandlers[key] = Release(self.order)
        self.addCleanup(process.reapProcessHandlers.pop, key, None)
        readers += self.readers(3, then=lambda: self.reactor._childSignalled(signal.SIGCHLD, None))
        for reader in readers[1:]:
            reader._then = readers[0]._then  # whichever is served first gets the signal
        self.reactor.doIteration(0)
        self.assertEqual(len(self.order), 2)
        self.assertEqual(self.order[1], "reap")
        for reader in readers:
            if reader.name not in self.order:
                reader.close()

    def test_noSignalNoSweep(self) -> None:
        """Without a SIGCHLD, serving ready sockets sweeps no children."""
        sweep = _Sweep(self.order)
        key = "tests.test_reactor.sweep"
        process.reapProcessHandlers[key] = sweep
        self.addCleanup(process.reapProcessHandlers.pop, key, None)
        self.readers(3)
        self.reactor.doIteration(0)
        self.assertEqual(sorted(self.order), ["socket 0", "socket 1", "socket 2"])

    def test_realChildExitComesBeforeReadySockets(self) -> None:
        """With the reactor's signal handling installed, a child that exited while three sockets were ready has its exit handled before any of them is served."""
        saved = {sig: signal.getsignal(sig) for sig in (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM)}

        def restore() -> None:
            for sig, handler in saved.items():
                signal.signal(sig, handler)

        self.addCleanup(restore)
        handling = self.reactor._makeSignalHandling(True)
        handling.install()
        self.addCleanup(handling.uninstall)
        sleep = shutil.which("sleep") or "/bin/sleep"
        child = self.reactor.spawnProcess(_ExitRecorder(self.order), sleep, [sleep, "600"], env={},
                                          childFDs={0: "w", 1: "r", 2: "r"})
        self.readers(3)
        pid = child.pid
        child.signalProcess("KILL")
        # Wait for the exit without reaping it (WNOWAIT), then for
        # CPython to run the Python-level handler on this thread.
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
        deadline = time.monotonic() + 30
        while not self.reactor.exitsPending and time.monotonic() < deadline:
            time.sleep(0.001)
        self.assertTrue(self.reactor.exitsPending, "no SIGCHLD noted within 30 s")
        self.reactor.doIteration(0)
        self.assertEqual(self.order[:1], ["exit"])
        self.assertEqual(sorted(self.order[1:]), ["socket 0", "socket 1", "socket 2"])

    def test_withoutSignalHandlersItIsTwistedsEPoll(self) -> None:
        """A reactor run with installSignalHandlers=False leaves SIGCHLD alone, as EPollReactor does."""
        before = signal.getsignal(signal.SIGCHLD)
        handling = self.reactor._makeSignalHandling(False)
        handling.install()
        self.addCleanup(handling.uninstall)
        self.assertIs(signal.getsignal(signal.SIGCHLD), before)


class InstallTests(SynchronousTestCase):
    def test_anInstalledReactorWins(self) -> None:
        """installIfNone keeps a reactor that is already installed (twistd --reactor, a test's)."""
        from twisted.internet import reactor

        installIfNone()
        self.assertIs(sys.modules["twisted.internet.reactor"], reactor)
        self.assertNotIsInstance(reactor, ChildFirstReactor)


class _SocketWriter(abstract.FileDescriptor):
    """
    One end of a socketpair as a Twisted writer (what a TCP transport's
    writing half does), recording its C{connectionLost}.
    """

    def __init__(self, reactor, sock: socket.socket) -> None:
        super().__init__(reactor)
        self.connected = 1
        self.socket = sock
        self.socket.setblocking(False)
        self.lost: list = []

    def fileno(self) -> int:
        return self.socket.fileno()

    def writeSomeData(self, data):
        try:
            return self.socket.send(data)
        except BlockingIOError:
            return 0

    def doRead(self):
        return None

    def connectionLost(self, reason) -> None:
        super().connectionLost(reason)
        self.lost.append(reason)
        self.socket.close()


class _RecordingPoller:
    """
    The reactor's epoll object, recording each registration that asks for
    writability.
    """

    def __init__(self, poller) -> None:
        self._poller = poller
        self.writable: list[int] = []

    def register(self, fd, flags):
        return self._poller.register(fd, self._noted(fd, flags))

    def modify(self, fd, flags):
        return self._poller.modify(fd, self._noted(fd, flags))

    def _noted(self, fd, flags):
        if flags & select.EPOLLOUT:
            self.writable.append(fd)
        return flags

    def __getattr__(self, name):
        return getattr(self._poller, name)


class EagerWriteTests(SynchronousTestCase):
    """
    A write goes out in the turn that made it; only a writer the kernel
    did not take everything from waits for epoll.
    """

    def setUp(self) -> None:
        self.reactor = ChildFirstReactor()
        self.poller = self.reactor._poller = _RecordingPoller(self.reactor._poller)
        self.addCleanup(self.poller._poller.close)
        mine, self.peer = socket.socketpair()
        self.addCleanup(self.peer.close)
        self.peer.setblocking(False)
        self.writer = _SocketWriter(self.reactor, mine)
        self.addCleanup(lambda: self.writer.socket.close())

    def received(self) -> bytes:
        data = b""
        while True:
            try:
                chunk = self.peer.recv(1 << 20)
            except BlockingIOError:
                return data
            if not chunk:
                return data
            data += chunk

    def test_writeGoesOutWithoutAskingEpoll(self) -> None:
        """A small answer is sent at the end of the turn, and epoll is never asked for writability."""
        self.writer.write(b"HTTP/1.1 200 OK\r\n\r\n")
        self.assertEqual(self.received(), b"")  # buffered until the turn ends
        self.reactor.doIteration(0)
        self.assertEqual(self.received(), b"HTTP/1.1 200 OK\r\n\r\n")
        self.assertEqual(self.poller.writable, [])
        self.assertEqual(self.reactor.getWriters(), [])

    def test_whatTheKernelDoesNotTakeWaitsForEpoll(self) -> None:
        """4 MiB into a small socket buffer: registered for writability, then all of it arrives as the peer reads, and the registration ends."""
        self.writer.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        payload = os.urandom(4 << 20)
        self.writer.write(payload)
        self.reactor.doIteration(0)
        self.assertEqual(self.poller.writable, [self.writer.fileno()])
        self.assertIn(self.writer, self.reactor.getWriters())
        got = b""
        for _ in range(100_000):  # bounded: each turn moves at least one socket buffer
            got += self.received()
            if len(got) == len(payload):
                break
            self.reactor.doIteration(0)
        self.assertEqual(got, payload)
        self.reactor.doIteration(0)
        self.assertEqual(self.reactor.getWriters(), [])

    def test_loseConnectionAfterAWrite(self) -> None:
        """Data then close: the peer reads everything, then end-of-file; connectionLost once."""
        self.writer.write(b"bye\n")
        self.writer.loseConnection()
        self.reactor.doIteration(0)
        self.assertEqual(self.received(), b"bye\n")
        self.assertEqual(len(self.writer.lost), 1)
        self.assertEqual(self.reactor.getWriters(), [])

    def test_stoppedBeforeTheTurnEndsSendsNothing(self) -> None:
        """stopWriting before the flush: nothing is sent and nothing is registered (as with epoll)."""
        self.writer.write(b"later")
        self.writer.stopWriting()
        self.reactor.doIteration(0)
        self.assertEqual(self.received(), b"")
        self.assertEqual((self.poller.writable, self.reactor.getWriters()), ([], []))
        self.writer.startWriting()
        self.reactor.doIteration(0)
        self.assertEqual(self.received(), b"later")

    def test_writeFromATimerGoesOutBeforeTheReactorSleeps(self) -> None:
        """A write made by a timer is sent before the next epoll_wait, not after it."""
        self.reactor.callLater(0, self.writer.write, b"tick")
        self.reactor.runUntilCurrent()
        self.assertIn(self.writer, self.reactor.getWriters())
        self.reactor.doIteration(0)
        self.assertEqual(self.received(), b"tick")
        self.assertEqual(self.poller.writable, [])

    def test_aWriteThatWritesAgainIsFlushedToo(self) -> None:
        """What a write's callbacks write (another writer) is flushed in the same turn."""
        mine, peer = socket.socketpair()
        self.addCleanup(peer.close)
        peer.setblocking(False)
        other = _SocketWriter(self.reactor, mine)
        self.addCleanup(lambda: other.socket.close())
        sent = self.writer.writeSomeData

        def chained(data):
            other.write(b"echo")
            return sent(data)

        self.writer.writeSomeData = chained
        self.writer.write(b"first")
        self.reactor.doIteration(0)
        self.assertEqual(self.received(), b"first")
        try:
            echoed = peer.recv(16)
        except BlockingIOError:
            echoed = b""
        self.assertEqual(echoed, b"echo")
        self.assertEqual(self.poller.writable, [])

    def test_exitDuringTheFlushIsSweptBeforeTheNextWrite(self) -> None:
        """A SIGCHLD noted while one answer is sent: the children are swept before the next answer, once (a crash loop's further exits wait for the waker)."""
        order: list[str] = []
        key = "tests.test_reactor.sweep"
        process.reapProcessHandlers[key] = _Sweep(order)
        self.addCleanup(process.reapProcessHandlers.pop, key, None)
        writers = [self.writer]
        for _ in range(2):
            mine, peer = socket.socketpair()
            self.addCleanup(peer.close)
            writer = _SocketWriter(self.reactor, mine)
            self.addCleanup(lambda w=writer: w.socket.close())
            writers.append(writer)
        for i, writer in enumerate(writers):
            sent = writer.writeSomeData

            def signalled(data, sent=sent, name=f"write {i}"):
                order.append(name)
                self.reactor._childSignalled(signal.SIGCHLD, None)  # every answer: a crash loop
                return sent(data)

            writer.writeSomeData = signalled
            writer.write(b"answer")
        self.reactor.doIteration(0)
        self.assertEqual(order, ["write 0", "reap", "write 1", "write 2"])
        self.assertTrue(self.reactor.exitsPending)  # left for the waker
