"""
Unit tests of the service-manager surface on a fake reactor: the
C{sd_notify} datagrams (L{orchestrator.sdnotify}), the exit status and the
meaning of SIGHUP (L{orchestrator.lifecycle}).
"""

from __future__ import annotations

import signal

from twisted.internet.error import CannotListenError
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from orchestrator.lifecycle import ExitStatus, Hangup, TerminalWatch, underServiceManager
from orchestrator.sdnotify import SystemdLink, SystemdNotifier, statusLine, watchdogPeriod
from tests.fakes import FakeProcessReactor, ScriptedProbe, loadText, makeOrchestrator


class _Port:
    def __init__(self, fail: Exception | None = None) -> None:
        self.datagrams: list[bytes] = []
        self.fail = fail
        self.connected = 1
        self.closed = 0

    def write(self, data: bytes):
        if self.fail is not None:
            raise self.fail
        self.datagrams.append(data)

    def stopListening(self):
        self.connected = 0
        self.closed += 1


class _DatagramReactor:
    """
    Only C{connectUNIXDatagram}: records where the notifier connects and
    what it writes.
    """

    def __init__(self, fail: Exception | None = None) -> None:
        self.ports: list[_Port] = []
        self.addresses: list[str] = []
        self.fail = fail

    def connectUNIXDatagram(self, address, protocol):
        self.addresses.append(address)
        self.ports.append(_Port(self.fail))
        return self.ports[-1]

    def messages(self) -> list[dict[str, str]]:
        return [dict(line.split("=", 1) for line in d.decode().splitlines())
                for port in self.ports for d in port.datagrams]


CONFIG = """
    processes:
      backend:
        command: ["{python}"]
        url: "http://127.0.0.1:3000"
        health: {interval: 1}
        restart: {policy: always, interval: 1, max_attempts: 1}
      worker:
        command: ["{python}"]
        start: {ready_after: 2}
    """


class NotifierTests(SynchronousTestCase):
    """
    L{SystemdNotifier}: where it sends, and what a failed send does.
    """

    def test_addressFromEnvironment(self):
        """A path and an @abstract name are unix sockets; unset or another scheme means no notifier."""
        reactor = _DatagramReactor()
        self.assertEqual(SystemdNotifier.fromEnvironment(reactor, {"NOTIFY_SOCKET": "/run/n"}).address,
                         "/run/n")
        self.assertEqual(SystemdNotifier.fromEnvironment(reactor, {"NOTIFY_SOCKET": "@sd/n"}).address,
                         "\0sd/n")
        self.assertIsNone(SystemdNotifier.fromEnvironment(reactor, {}))
        self.assertIsNone(SystemdNotifier.fromEnvironment(reactor, {"NOTIFY_SOCKET": "vsock:2:9"}))

    def test_messagesAreKeyValueLines(self):
        """READY carries the status; RELOADING carries MONOTONIC_USEC from the monotonic clock; one socket for all."""
        reactor = _DatagramReactor()
        notifier = SystemdNotifier(reactor, "/run/n", monotonicUsec=lambda: 123456)
        notifier.ready("2/2 running")
        notifier.reloading()
        notifier.stopping()
        notifier.watchdog()
        self.assertEqual(reactor.messages(), [
            {"READY": "1", "STATUS": "2/2 running"},
            {"RELOADING": "1", "MONOTONIC_USEC": "123456", "STATUS": "reloading the configuration"},
            {"STOPPING": "1", "STATUS": "stopping every process"},
            {"WATCHDOG": "1"},
        ])
        self.assertEqual((len(reactor.ports), notifier.sent, notifier.failed), (1, 4, 0))

    def test_statusIsOneBoundedLine(self):
        """A status with newlines or of any length is sent as one line of at most 200 characters."""
        reactor = _DatagramReactor()
        SystemdNotifier(reactor, "/run/n").status("a\nb " + "x" * 500)
        status = reactor.messages()[0]["STATUS"]
        self.assertTrue(status.startswith("a b x"))
        self.assertEqual(len(status), 200)

    def test_failedSendIsCountedNotRaised(self):
        """A send the kernel refuses is dropped and counted; the next send tries a fresh socket."""
        reactor = _DatagramReactor(fail=OSError(111, "Connection refused"))
        notifier = SystemdNotifier(reactor, "/run/n")
        self.assertFalse(notifier.watchdog())
        self.assertFalse(notifier.watchdog())
        self.assertEqual((notifier.sent, notifier.failed, len(reactor.ports)), (0, 2, 2))

    def test_watchdogPeriod(self):
        """Half of WATCHDOG_USEC, only for this pid; unset or malformed means no watchdog."""
        self.assertEqual(watchdogPeriod({"WATCHDOG_USEC": "30000000"}, 7), 15.0)
        self.assertEqual(watchdogPeriod({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "7"}, 7), 15.0)
        self.assertIsNone(watchdogPeriod({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "8"}, 7))
        self.assertIsNone(watchdogPeriod({"WATCHDOG_USEC": "soon"}, 7))
        self.assertIsNone(watchdogPeriod({}, 7))


class LinkTests(SynchronousTestCase):
    """
    L{SystemdLink} driven by a real orchestrator on the fake process reactor.
    """

    def start(self, text: str = CONFIG, watchdog: float | None = None, probe=None):
        self.probe = probe or ScriptedProbe()
        self.datagrams = _DatagramReactor()
        self.reactor = FakeProcessReactor()
        self.link = SystemdLink(SystemdNotifier(self.datagrams, "/run/n", monotonicUsec=lambda: 5),
                                self.reactor, watchdog)
        self.orchestrator = makeOrchestrator(loadText(text), self.reactor,
                                             probeFactory=lambda health: self.probe,
                                             random=lambda: 0.0,
                                             systemd=self.link)
        self.orchestrator.startService()
        return self.orchestrator

    def kinds(self) -> list[str]:
        return [next(k for k in ("READY", "RELOADING", "STOPPING", "WATCHDOG", "STATUS") if k in m)
                for m in self.datagrams.messages()]

    def test_readyOnceEveryAutostartProcessRuns(self):
        """READY=1 waits for the probed backend and the ready_after worker, then says 2/2 running."""
        self.start()
        self.reactor.advance(0.1)
        self.probe.answer(True)
        self.assertEqual(self.datagrams.messages(), [])
        self.reactor.advance(2)
        self.assertEqual(self.datagrams.messages(), [{"READY": "1", "STATUS": "2/2 running"}])

    def test_statusFollowsChangesAfterReady(self):
        """After READY, a crash and the recovery each update STATUS (once per change)."""
        self.start()
        self.reactor.advance(0.1)
        self.probe.answer(True)
        self.reactor.advance(2)
        backend = self.reactor.spawned[0]
        backend.exited(3)
        self.reactor.advance(1)
        statuses = [m["STATUS"] for m in self.datagrams.messages()]
        self.assertIn("1/2 running; backend crashed", statuses)
        self.assertIn("1/2 running; backend starting", statuses)
        self.assertEqual(len(statuses), len(set(statuses)))

    def test_readyWhenAProcessFailsForGood(self):
        """A process that gave up counts as settled: READY=1 comes, and the status says so."""
        self.start()
        backend = self.orchestrator.process("backend")
        for _ in range(2):  # the first run and its one automatic restart
            self.reactor.advance(1)
            [child for child in self.reactor.spawned if child.pid == backend.pid][0].exited(1)
        self.reactor.advance(3)
        messages = self.datagrams.messages()
        self.assertTrue(self.orchestrator.process("backend").gaveUp)
        ready = [m for m in messages if "READY" in m]
        self.assertEqual(len(ready), 1)
        self.assertEqual(ready[0]["STATUS"], "1/2 running; backend crashed (gave up)")

    def test_monitorOnlyIsReadyWhenListening(self):
        """Monitor-only: nothing to wait for, READY=1 at once (the watched backend may be down)."""
        self.start("""
            orchestrator: {enabled: false}
            processes:
              backend: {url: "http://127.0.0.1:3000"}
            """)
        self.assertEqual(self.kinds(), ["READY"])
        self.assertTrue(self.datagrams.messages()[0]["STATUS"].startswith("monitor-only: 0/1 healthy"))

    def test_reloadIsBracketed(self):
        """A reload sends RELOADING=1 with MONOTONIC_USEC, then READY=1 when applied."""
        orchestrator = self.start()
        self.reactor.advance(0.1)
        self.probe.answer(True)
        self.reactor.advance(2)
        orchestrator._reloader = lambda: orchestrator.loaded
        self.successResultOf(orchestrator.reload())
        self.assertEqual(self.kinds(), ["READY", "RELOADING", "READY"])
        self.assertEqual(self.datagrams.messages()[1]["MONOTONIC_USEC"], "5")

    def test_rejectedReloadStillEndsWithReady(self):
        """A reload with a bad configuration is rejected, and READY=1 still follows RELOADING=1."""
        from orchestrator.errors import ConfigError

        orchestrator = self.start()
        self.reactor.advance(0.1)
        self.probe.answer(True)
        self.reactor.advance(2)

        def bad():
            raise ConfigError(["x.yaml:1:1: nope"])

        orchestrator._reloader = bad
        self.failureResultOf(orchestrator.reload(), ConfigError)
        self.assertEqual(self.kinds(), ["READY", "RELOADING", "READY"])

    def test_watchdogFromTheReactor(self):
        """WATCHDOG=1 at start and every period on the reactor's clock, until the orchestrator stopped."""
        orchestrator = self.start(watchdog=15)
        for _ in range(45):
            self.reactor.advance(1)
        self.assertEqual(self.kinds().count("WATCHDOG"), 4)
        d = orchestrator.stopService()
        for child in self.reactor.spawned:
            if child.alive:
                child.exited(0)
        self.successResultOf(d)
        self.assertIn("STOPPING", self.kinds())
        before = self.kinds().count("WATCHDOG")
        self.reactor.advance(60)
        self.assertEqual(self.kinds().count("WATCHDOG"), before)
        self.assertEqual(self.datagrams.ports[-1].closed, 1)

    def test_statusLine(self):
        """The summary counts running processes and names the others, at most five."""
        class P:
            def __init__(self, name, status, gaveUp=False):
                self.name, self.status, self.gaveUp = name, status, gaveUp

        processes = {f"p{i}": P(f"p{i}", "crashed") for i in range(7)}
        processes["web"] = P("web", "running")
        line = statusLine(processes, True)
        self.assertTrue(line.startswith("1/8 running; p0 crashed, p1 crashed"))
        self.assertTrue(line.endswith(", +2 more"))


class StartupTests(SynchronousTestCase):
    """
    What the orchestrator does when it cannot come up.
    """

    def test_adminBoundBeforeAnySpawn(self):
        """The admin endpoint is bound before the supervisor spawns; a failed bind spawns nothing and records exit 1."""
        reactor = FakeProcessReactor()
        loaded = loadText(CONFIG)
        failing = []

        def listenTCP(port, factory, backlog=50, interface=""):
            failing.append(len(reactor.spawned))
            raise CannotListenError(interface, port, OSError(98, "Address already in use"))

        reactor.listenTCP = listenTCP
        orchestrator = makeOrchestrator(loaded, reactor, listen=True)
        orchestrator.startService()
        reactor.advance(5)
        self.assertEqual((failing, reactor.spawned), ([0], []))
        self.assertEqual(orchestrator.exitStatus.code, 1)
        self.assertIn("admin API cannot listen on tcp:8000:interface=127.0.0.1", orchestrator.exitStatus.message)

    def test_listeningThenSpawning(self):
        """With the admin endpoint bound, the processes start and no failure is recorded."""
        reactor = FakeProcessReactor()
        order = []
        real = reactor.listenTCP
        reactor.listenTCP = lambda *a, **k: (order.append(("listen", len(reactor.spawned))), real(*a, **k))[1]
        orchestrator = makeOrchestrator(loadText(CONFIG), reactor, listen=True)
        orchestrator.startService()
        self.assertEqual(order, [("listen", 0)])
        self.assertEqual(len(reactor.spawned), 2)
        self.assertIsNone(orchestrator.exitStatus.code)


class ExitStatusTests(SynchronousTestCase):
    """
    L{ExitStatus}: the first failure is the one that counts, said on one line.
    """

    def test_firstFailureWinsOnOneLine(self):
        """The first failure's code stays; its message is written once, on one bounded line."""
        lines = []
        status = ExitStatus(lines.append)
        self.assertTrue(status.fail(1, "admin API cannot listen:\n  port taken"))
        self.assertFalse(status.fail(2, "something that followed"))
        self.assertEqual((status.code, lines), (1, ["orchestrator: admin API cannot listen: port taken\n"]))
        status = ExitStatus(lines.append)
        status.fail(1, "x" * 5000)
        self.assertEqual(len(status.message), 1000)


class HangupTests(SynchronousTestCase):
    """
    L{Hangup}: what a SIGHUP means.
    """

    def test_withoutTerminalItReloads(self):
        """No controlling terminal (daemon, container): SIGHUP reloads."""
        self.assertEqual(Hangup({}, hasTerminal=lambda: False, inherited=signal.SIG_DFL).meaning(),
                         Hangup.RELOAD)

    def test_underServiceManagerItReloads(self):
        """Under systemd (INVOCATION_ID or NOTIFY_SOCKET) SIGHUP reloads even if a terminal went away."""
        terminal = iter([True, False])
        hangup = Hangup({"INVOCATION_ID": "abc"}, hasTerminal=lambda: next(terminal),
                        inherited=signal.SIG_DFL)
        self.assertEqual(hangup.meaning(), Hangup.RELOAD)
        self.assertTrue(underServiceManager({"NOTIFY_SOCKET": "/run/n"}))
        self.assertFalse(underServiceManager({"TERM": "xterm"}))

    def test_terminalGoneStops(self):
        """Started from a terminal that is gone when SIGHUP arrives: stop gracefully."""
        terminal = iter([True, False])
        hangup = Hangup({}, hasTerminal=lambda: next(terminal), inherited=signal.SIG_DFL)
        self.assertEqual(hangup.meaning(), Hangup.STOP)

    def test_killHupWithTerminalStillThereReloads(self):
        """A kill -HUP while the terminal is still there is a reload order."""
        hangup = Hangup({}, hasTerminal=lambda: True, inherited=signal.SIG_DFL)
        self.assertEqual(hangup.meaning(), Hangup.RELOAD)

    def test_nohupIgnoresTheHangup(self):
        """Started under nohup (SIGHUP ignored), a hang-up is ignored too."""
        terminal = iter([True, False])
        hangup = Hangup({}, hasTerminal=lambda: next(terminal), inherited=signal.SIG_IGN)
        self.assertEqual(hangup.meaning(), Hangup.IGNORE)


class TerminalWatchTests(SynchronousTestCase):
    """
    L{TerminalWatch}: a hang-up that sends no SIGHUP (C{make} as the
    session leader) still stops the orchestrator.
    """

    def _watch(self, terminal, inherited=signal.SIG_DFL):
        clock, lost = Clock(), []
        hangup = Hangup({}, hasTerminal=lambda: terminal[0], inherited=inherited)
        return clock, lost, TerminalWatch(hangup, clock, lambda: lost.append(clock.seconds()))

    def test_terminalGoneWithoutSighupStops(self):
        """While the terminal is there nothing happens; once it is gone onLost runs once and nothing stays scheduled."""
        terminal = [True]
        clock, lost, watch = self._watch(terminal)
        watch.start()
        clock.advance(10)
        self.assertEqual(lost, [])
        terminal[0] = False
        clock.advance(1)
        self.assertEqual(lost, [11])
        clock.advance(10)
        self.assertEqual((lost, clock.getDelayedCalls()), ([11], []))

    def test_nothingToWatchWithoutTerminalOrUnderNohup(self):
        """Started without a terminal, or under nohup, nothing is watched (a hang-up means nothing then)."""
        for terminal, inherited in [([False], signal.SIG_DFL), ([True], signal.SIG_IGN)]:
            clock, lost, watch = self._watch(terminal, inherited)
            watch.start()
            terminal[0] = False
            self.assertEqual((clock.getDelayedCalls(), lost), ([], []))

    def test_stopCancelsTheCheck(self):
        """stop() leaves nothing scheduled, and a later hang-up is not acted on."""
        terminal = [True]
        clock, lost, watch = self._watch(terminal)
        watch.start()
        watch.stop()
        terminal[0] = False
        clock.advance(5)
        self.assertEqual((clock.getDelayedCalls(), lost), ([], []))
