"""
The HTTP probe's own client (L{orchestrator.health.httpclient}) byte by
byte, in memory: parsing, keep-alive reuse and reconnects, the bounds on
status line, headers and body, aborting on timeout and cancel; and the
health monitor's phase spreading and cap on probes in flight.

A scripted server protocol answers each request with exactly the bytes a
test gives it, over L{tests._memhttp.MemoryHTTP}; time is a L{Clock}.
"""

from __future__ import annotations

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from orchestrator.config.types import HealthConfig
from orchestrator.health.httpclient import Origin, parseURL, renderRequest
from orchestrator.health.monitor import HealthMonitor, ProbeGate
from orchestrator.health.results import ProbeResult
from orchestrator.health.stats import probeFamilies
from orchestrator.builtin.probes import HTTPProbe
from tests._memhttp import MemoryHTTP
from tests.fakes import ScriptedProbe

URL = "http://backend.test:3000"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class _Scripted(Protocol):
    """
    Answers every complete request with the next of C{factory.answers}
    (bytes, or a callable given the protocol); records requests and its
    own loss.
    """

    def connectionMade(self):
        self.factory.servers.append(self)
        self.buffer = b""
        self.lost = False

    def dataReceived(self, data):
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            request, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            self.factory.requests.append(request)
            answer = self.factory.answers.pop(0) if self.factory.answers else self.factory.default
            if callable(answer):
                answer(self)
            elif answer:
                self.transport.write(answer)

    def connectionLost(self, reason=None):
        self.lost = True


class _Server(Factory):
    protocol = _Scripted

    def __init__(self, *answers, default=OK) -> None:
        self.answers = list(answers)
        self.default = default
        self.requests: list[bytes] = []
        self.servers: list[_Scripted] = []


def _probe(server: _Server, clock=None, **options) -> tuple[HTTPProbe, MemoryHTTP]:
    memory = MemoryHTTP(serverFactory=server)
    config = HealthConfig(probe="http", url=URL, timeout=1.0, options=options)
    return HTTPProbe(config, clock or Clock(), connect=memory.connect), memory


class _HTTPCase(SynchronousTestCase):
    def check(self, probe, memory) -> ProbeResult:
        d = probe.check()
        memory.flush()
        return self.successResultOf(d)


class ParsingTests(_HTTPCase):
    """
    Answers of every framing HTTP/1.1 allows are read correctly.
    """

    def test_requestBytes(self):
        """The probe sends one GET with Host (port included), its headers, and a Host override wins."""
        server = _Server()
        probe, memory = _probe(server, headers={"X-Probe": "yes"})
        self.check(probe, memory)
        self.assertEqual(server.requests[0].split(b"\r\n"),
                         [b"GET /health HTTP/1.1", b"Host: backend.test:3000",
                          b"User-Agent: orchestrator-probe", b"X-Probe: yes"])
        origin, target = parseURL("https://[::1]/base/ready?x=1")
        self.assertEqual((origin, target), (Origin("https", "::1", 443), "/base/ready?x=1"))
        lines = renderRequest(origin, target, {"Host": "svc"}).split(b"\r\n")
        self.assertEqual([line for line in lines if line.lower().startswith(b"host")], [b"Host: svc"])
        self.assertRaises(ValueError, renderRequest, origin, target, {"X": "a\r\nEvil: 1"})

    def test_keepAliveReused(self):
        """Successive probes go over one connection while the server keeps it open."""
        server = _Server()
        probe, memory = _probe(server)
        for _ in range(3):
            self.assertEqual(self.check(probe, memory).reason, "HTTP 200")
        self.assertEqual((len(memory.connections), len(server.requests)), (1, 3))

    def test_chunked(self):
        """A chunked body (with extensions and trailers) is read whole, and the connection kept."""
        answer = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"5;name=value\r\nhello\r\n7\r\n, ready\r\n0\r\nX-Trailer: 1\r\n\r\n")
        server = _Server(answer, answer)
        probe, memory = _probe(server, expect_body="hello, ready")
        self.assertTrue(self.check(probe, memory).healthy)
        self.assertTrue(self.check(probe, memory).healthy)
        self.assertEqual(len(memory.connections), 1)

    def test_dripped(self):
        """An answer arriving one byte at a time is parsed the same."""
        answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
        server = _Server(b"")
        probe, memory = _probe(server, expect_body="ok")
        d = probe.check()
        memory.flush()
        for i in range(len(answer)):
            self.assertNoResult(d)
            server.servers[0].transport.write(answer[i:i + 1])
            memory.flush()
        self.assertEqual(self.successResultOf(d).reason, "HTTP 200")

    def test_closeDelimited(self):
        """A body without length ends with the connection; the next probe reconnects."""
        def answer(server):
            server.transport.write(b"HTTP/1.1 200 OK\r\n\r\nuntil close")
            server.transport.loseConnection()

        server = _Server(answer, answer)
        probe, memory = _probe(server, expect_body="until close")
        self.assertTrue(self.check(probe, memory).healthy)
        self.assertTrue(self.check(probe, memory).healthy)
        self.assertEqual(len(memory.connections), 2)

    def test_connectionClose(self):
        """C{Connection: close} and HTTP/1.0 answers end the connection after the answer."""
        server = _Server(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
                         b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
        probe, memory = _probe(server)
        for _ in range(3):
            self.assertEqual(self.check(probe, memory).reason, "HTTP 200")
        self.assertEqual(len(memory.connections), 3)
        self.assertEqual(memory.open, 1)

    def test_interimAndNoBody(self):
        """A 100 Continue is skipped; 204 has no body; bare LF line ends are read."""
        server = _Server(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                         b"HTTP/1.1 204 No Content\r\n\r\n",
                         b"HTTP/1.1 503 Down\nContent-Length: 4\n\ndown")
        probe, memory = _probe(server)
        self.assertEqual(self.check(probe, memory).reason, "HTTP 200")
        self.assertEqual(self.check(probe, memory).reason, "HTTP 204")
        result = self.check(probe, memory)
        self.assertEqual((result.healthy, result.reason, result.detail), (False, "HTTP 503", "down"))
        self.assertEqual(len(memory.connections), 1)

    def test_malformed(self):
        """A garbled status line, a bad length or a bad chunk size is unhealthy and named."""
        cases = [
            (b"SSH-2.0-OpenSSH\r\n", "malformed answer: malformed status line b'SSH-2.0-OpenSSH'"),
            (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "malformed answer: bad Content-Length"),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
             "malformed answer: bad chunk size b'zz'"),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1" * 2000,
             "malformed answer: chunk size line too long"),
        ]
        for answer, reason in cases:
            server = _Server(answer)
            probe, memory = _probe(server)
            result = self.check(probe, memory)
            self.assertEqual((result.healthy, result.reason), (False, reason))
            self.assertTrue(server.servers[0].lost)

    def test_closedMidAnswer(self):
        """A connection closed before the answer is complete is unhealthy, not a hang."""
        def half(server):
            server.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
            server.transport.loseConnection()

        probe, memory = _probe(_Server(half))
        result = self.check(probe, memory)
        self.assertEqual(result.reason, "malformed answer: connection closed before a complete answer")

    def test_closedWithoutAnswer(self):
        """A server closing without answering gives the usual C{Connection closed before an answer}."""
        def hangUp(server):
            server.transport.loseConnection()

        probe, memory = _probe(_Server(hangUp))
        clock = Clock()
        results: list = []
        monitor = HealthMonitor(_Watched(), HealthConfig(probe="http", interval=1, timeout=1),
                                probe, clock, managed=False, onResult=lambda n, r: results.append(r))
        monitor.start()
        clock.advance(0.01)
        memory.flush()
        monitor.stop()
        self.assertEqual(results[0].reason, "Connection closed before an answer")

    def test_staleConnectionRetried(self):
        """A kept-alive connection the server closed while idle is replaced once, invisibly."""
        def closeSilently(server):
            server.transport.loseConnection()  # closes instead of answering

        server = _Server(OK, closeSilently, OK)
        probe, memory = _probe(server)
        self.assertTrue(self.check(probe, memory).healthy)
        self.assertTrue(self.check(probe, memory).healthy)
        self.assertEqual((len(memory.connections), len(server.requests)), (2, 3))

    def test_refusedThenReconnects(self):
        """A refused connection is C{Connection refused}; the next probe connects again."""
        server = _Server()
        probe, memory = _probe(server)
        memory.refuse = True
        d = probe.check()
        self.failureResultOf(d)  # the monitor turns it into "Connection refused"
        memory.refuse = False
        self.assertTrue(self.check(probe, memory).healthy)

    def test_httpsUsesTLS(self):
        """An https url connects to port 443 through Twisted's TLS wrapper, verifying the host name."""
        reactor = MemoryReactorClock()
        probe = HTTPProbe(HealthConfig(probe="http", url="https://backend.test", timeout=1.0), reactor)
        probe.check()
        reactor.advance(0)
        host, port, factory, timeout, _ = reactor.tcpClients[0]
        self.assertEqual((port, timeout), (443, 1.0))
        from twisted.protocols.tls import TLSMemoryBIOFactory

        self.assertIsInstance(factory._wrappedFactory, TLSMemoryBIOFactory)

    def test_invalidURL(self):
        """A process without an http(s) url gets an unhealthy result naming it, not a crash."""
        probe = HTTPProbe(HealthConfig(probe="http", url=None, timeout=1.0), Clock())
        result = self.successResultOf(probe.check())
        self.assertEqual((result.healthy, result.reason), (False, "not an http or https URL: '/health'"))

    def test_redirectToOtherOrigin(self):
        """With C{follow_redirects}, a redirect to another host is followed on a connection of its own."""
        server = _Server(b"HTTP/1.1 302 Found\r\nLocation: http://other.test:8081/ready\r\n"
                         b"Content-Length: 0\r\n\r\n", OK)
        probe, memory = _probe(server, follow_redirects=True)
        self.assertEqual(self.check(probe, memory).reason, "HTTP 200")
        self.assertEqual([c[0] for c in memory.connections],
                         [Origin("http", "backend.test", 3000), Origin("http", "other.test", 8081)])
        self.assertEqual(server.requests[1].split(b"\r\n")[:2],
                         [b"GET /ready HTTP/1.1", b"Host: other.test:8081"])

    def test_redirectAfterClose(self):
        """A redirect answered with C{Connection: close} is followed on a new connection to the same host."""
        server = _Server(b"HTTP/1.1 301 Moved\r\nLocation: /ready\r\nConnection: close\r\n"
                         b"Content-Length: 0\r\n\r\n", OK)
        probe, memory = _probe(server, follow_redirects=True)
        self.assertEqual(self.check(probe, memory).reason, "HTTP 200")
        self.assertEqual(len(memory.connections), 2)
        self.assertTrue(server.servers[0].lost)

    def test_redirectLoop(self):
        """A redirect loop ends after 10 redirects, unhealthy."""
        loop = b"HTTP/1.1 307 Again\r\nLocation: /health\r\nContent-Length: 0\r\n\r\n"
        probe, memory = _probe(_Server(default=loop), follow_redirects=True)
        result = self.check(probe, memory)
        self.assertEqual((result.healthy, result.reason), (False, "HTTP 307: more than 10 redirects"))
        self.assertEqual(len(memory.connections), 1)


class BoundTests(_HTTPCase):
    """
    Nothing a server sends makes the probe hold more than its bounds.
    """

    def test_headerBytes(self):
        """Header lines past C{max_header_bytes} are an unhealthy, counted result and the connection is dropped."""
        flood = b"X-Flood: " + b"a" * 400 + b"\r\n"
        server = _Server(b"HTTP/1.1 200 OK\r\n" + flood * 60)
        probe, memory = _probe(server)
        result = self.check(probe, memory)
        self.assertEqual((result.healthy, result.reason, result.limit),
                         (False, "response headers over 16 KiB", "header_bytes"))
        self.assertTrue(server.servers[0].lost)
        server = _Server(b"HTTP/1.1 200 OK\r\n" + b"X-A: " + b"b" * 2000 + b"\r\n\r\n")
        probe, memory = _probe(server, max_header_bytes=1024)
        self.assertEqual(self.check(probe, memory).reason, "response headers over 1 KiB")

    def test_endlessDrippedHeaders(self):
        """Header bytes dripped for ever end at the bound, with never more than that buffered."""
        server = _Server(b"HTTP/1.1 200 OK\r\nX-Endless: ")
        probe, memory = _probe(server, max_header_bytes=4096)
        d = probe.check()
        memory.flush()
        client = memory.connections[0][2].protocol
        for _ in range(5000):
            if d.called:
                break
            server.servers[0].transport.write(b"X")
            memory.flush()
            self.assertLessEqual(len(client._buf), 4096)
        result = self.successResultOf(d)
        self.assertEqual(result.reason, "response headers over 4 KiB")
        self.assertTrue(server.servers[0].lost)

    def test_statusLine(self):
        """An endless status line is cut at the same bound, named as such."""
        server = _Server(b"HTTP/1.1 200 " + b"O" * 20000)
        probe, memory = _probe(server)
        self.assertEqual(self.check(probe, memory).reason, "status line over 16 KiB")

    def test_headerCount(self):
        """More than C{max_headers} header lines are unhealthy, however short."""
        answer = b"HTTP/1.1 200 OK\r\n" + b"A: b\r\n" * 101 + b"Content-Length: 0\r\n\r\n"
        probe, memory = _probe(_Server(answer))
        result = self.check(probe, memory)
        self.assertEqual((result.reason, result.limit), ("over 100 response headers", "headers"))
        probe, memory = _probe(_Server(answer), max_headers=200)
        self.assertTrue(self.check(probe, memory).healthy)

    def test_bodyCut(self):
        """A body over C{max_body_bytes} is judged on its start, counted, and its connection closed."""
        big = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"y" * 100000
        server = _Server(big, OK)
        probe, memory = _probe(server, max_body_bytes=1000)
        result = self.check(probe, memory)
        self.assertEqual((result.healthy, result.reason, result.limit), (True, "HTTP 200", "body_bytes"))
        self.assertTrue(server.servers[0].lost)
        second = self.check(probe, memory)
        self.assertEqual((second.reason, second.limit), ("HTTP 200", None))
        self.assertEqual(len(memory.connections), 2)

    def test_limitsCountedByMonitor(self):
        """Each bound hit is counted per bound by the monitor and shown as a metric family."""
        server = _Server(default=b"HTTP/1.1 200 OK\r\n" + b"A: b\r\n" * 200)
        probe, memory = _probe(server)
        clock = Clock()
        monitor = HealthMonitor(_Watched(), HealthConfig(probe="http", interval=1, timeout=1),
                                probe, clock, managed=False)
        monitor.start()
        for _ in range(3):
            clock.advance(1)
            memory.flush()
        monitor.stop()
        self.assertEqual(monitor.limitHits, {"headers": 3})

        class Supervisor:
            processes = {"backend": type("P", (), {"health": monitor})()}
            probeGate = ProbeGate(4)

        families = {f.name: f for f in probeFamilies(Supervisor())}
        (sample,) = families["orchestrator_probe_limit_hits"].samples
        self.assertEqual((sample.labels, sample.value), ({"process": "backend", "limit": "headers"}, 3))


class _Watched:
    name = "backend"

    def __init__(self) -> None:
        self.told: list = []

    def monitorStatus(self, status, reason):
        self.told.append((status, reason))

    def healthReady(self):
        self.told.append(("ready",))

    def healthFailed(self, reason):
        self.told.append(("failed", reason))


class AbortTests(_HTTPCase):
    """
    A probe that times out or is cancelled releases its connection at once.
    """

    def drippingServer(self) -> _Server:
        def headersThenDrip(server):
            server.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nx")

        return _Server(headersThenDrip, OK)

    def test_timeoutAborts(self):
        """At C{timeout} a dripping answer's connection is aborted; the next probe opens a fresh one."""
        clock = Clock()
        server = self.drippingServer()
        probe, memory = _probe(server, clock)
        config = HealthConfig(probe="http", interval=5, timeout=0.5, failure_threshold=5)
        results: list = []
        monitor = HealthMonitor(_Watched(), config, probe, clock, managed=False,
                                onResult=lambda name, r: results.append(r))
        monitor.start()
        clock.advance(0.01)
        memory.flush()
        self.assertFalse(server.servers[0].lost)
        clock.advance(0.5)
        memory.flush()
        self.assertEqual(results[0].reason, "timeout after 0.5s")
        self.assertTrue(server.servers[0].lost)
        self.assertEqual(memory.open, 0)
        clock.advance(5)
        memory.flush()
        self.assertEqual(results[1].reason, "HTTP 200")
        self.assertEqual(len(memory.connections), 2)
        monitor.stop()

    def test_cancelAborts(self):
        """Cancelling a check (the monitor stopping) aborts its connection, and while connecting too."""
        server = self.drippingServer()
        probe, memory = _probe(server)
        d = probe.check()
        memory.flush()
        d.cancel()
        self.failureResultOf(d, CancelledError)
        memory.flush()
        self.assertTrue(server.servers[0].lost)
        self.assertEqual(memory.open, 0)

        connecting = Deferred()
        probe = HTTPProbe(HealthConfig(probe="http", url=URL, timeout=1.0), Clock(),
                          connect=lambda origin, protocol: connecting)
        d = probe.check()
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertTrue(connecting.called)  # the connection attempt was cancelled

    def test_closeDropsIdleConnection(self):
        """C{close()} drops the kept-alive connection and fires once it is gone."""
        server = _Server()
        probe, memory = _probe(server)
        self.check(probe, memory)
        d = probe.close()
        self.assertNoResult(d)
        memory.flush()
        self.successResultOf(d)
        self.assertTrue(server.servers[0].lost)


class PhaseTests(SynchronousTestCase):
    """
    Probes of processes started together are spread over the interval.
    """

    def test_managedPhaseAfterReady(self):
        """A managed process polls fast while starting, then probes at its random phase of the interval."""
        clock = Clock()
        config = HealthConfig(probe="x", interval=10, timeout=1)
        monitors = []
        for name, sample in (("a", 0.0), ("b", 0.25), ("c", 0.75)):
            probe = ScriptedProbe(auto=True)
            watched = _Watched()
            watched.name = name
            monitor = HealthMonitor(watched, config, probe, clock, random=lambda s=sample: s)
            monitor.start()
            monitors.append((name, probe, monitor))
        clock.advance(0.01)  # the first start poll: all ready at once
        # Steady probes due at 0.01 + (1 - phase) * 10: c at 2.51, b at 7.51, a at 10.01.
        for until, checks in ((2.50, [1, 1, 1]), (2.52, [1, 1, 2]), (7.50, [1, 1, 2]),
                              (7.52, [1, 2, 2]), (10.0, [1, 2, 2]), (10.02, [2, 2, 2]),
                              (12.52, [2, 2, 3])):
            clock.advance(until - clock.seconds())
            self.assertEqual([probe.checks for _, probe, _ in monitors], checks, until)
        for _, _, monitor in monitors:
            monitor.stop()
        self.assertEqual(clock.getDelayedCalls(), [])


class GateTests(SynchronousTestCase):
    """
    The cap on probes in flight at once.
    """

    def test_capDefersAndCounts(self):
        """Beyond the cap a probe waits (counted), goes out when a slot frees, and its timeout starts then."""
        clock = Clock()
        gate = ProbeGate(2)
        config = HealthConfig(probe="x", interval=60, timeout=5, failure_threshold=10)
        probes, monitors, results = [], [], []
        for name in "abc":
            probe = ScriptedProbe()
            watched = _Watched()
            watched.name = name
            monitor = HealthMonitor(watched, config, probe, clock, managed=False, gate=gate,
                                    onResult=lambda n, r: results.append((n, r.reason, clock.seconds())))
            monitor.start()
            probes.append(probe)
            monitors.append(monitor)
        clock.advance(0.01)
        self.assertEqual([p.checks for p in probes], [1, 1, 0])
        self.assertEqual((gate.inFlight, gate.waiting, gate.deferred), (2, 1, 1))
        clock.advance(1)
        probes[0].answer(True)
        self.assertEqual([p.checks for p in probes], [1, 1, 1])
        clock.advance(4.99)  # t = 6.00: b timed out (sent at 0.01); c's 5 s run from 1.01
        self.assertEqual([r[:2] for r in results], [("a", "ok"), ("b", "timeout after 5.0s")])
        clock.advance(0.01)
        self.assertEqual(results[-1][:2], ("c", "timeout after 5.0s"))
        for monitor in monitors:
            monitor.stop()
        self.assertEqual((gate.inFlight, gate.waiting), (0, 0))

    def test_raisedLimitStartsWaiting(self):
        """Raising the cap (a reload) sends a waiting probe out at once."""
        clock = Clock()
        gate = ProbeGate(1)
        config = HealthConfig(probe="x", interval=60, timeout=5)
        first, second = ScriptedProbe(), ScriptedProbe()
        for probe in (first, second):
            HealthMonitor(_Watched(), config, probe, clock, managed=False, gate=gate).start()
        clock.advance(0.01)
        self.assertEqual((first.checks, second.checks, gate.waiting), (1, 0, 1))
        gate.setLimit(2)
        self.assertEqual((second.checks, gate.inFlight, gate.waiting), (1, 2, 0))

    def test_stopWhileQueued(self):
        """A monitor stopped while its probe waits leaves the queue, and the slot count stays right."""
        clock = Clock()
        gate = ProbeGate(1)
        config = HealthConfig(probe="x", interval=60, timeout=5)
        first, second = ScriptedProbe(), ScriptedProbe()
        m1 = HealthMonitor(_Watched(), config, first, clock, managed=False, gate=gate)
        m2 = HealthMonitor(_Watched(), config, second, clock, managed=False, gate=gate)
        m1.start()
        m2.start()
        clock.advance(0.01)
        self.assertEqual(gate.waiting, 1)
        m2.stop()
        self.assertEqual(gate.waiting, 0)
        first.answer(True)
        self.assertEqual((gate.inFlight, second.checks), (0, 0))
        m1.stop()


class RealTCPTests(TestCase):
    """
    The probe over a real loopback socket (the one-send() fast path).
    """

    timeout = 20

    def test_keepAliveOverTCP(self):
        """Three probes against a real twisted.web server share one TCP connection."""
        from twisted.internet import reactor
        from twisted.web.resource import Resource
        from twisted.web.server import Site

        class Health(Resource):
            isLeaf = True

            def render_GET(self, request):
                return b'{"status": "ok"}'

        class CountingSite(Site):
            built = 0

            def buildProtocol(self, addr):
                CountingSite.built += 1
                return Site.buildProtocol(self, addr)

        port = reactor.listenTCP(0, CountingSite(Health()), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        url = f"http://127.0.0.1:{port.getHost().port}"
        probe = HTTPProbe(HealthConfig(probe="http", url=url, timeout=5.0,
                                       options={"expect_json": {"status": "ok"}}), reactor)
        results: list = []

        def again(result):
            results.append(result)
            return probe.check() if len(results) < 3 else None

        d = probe.check().addCallback(again).addCallback(again).addCallback(again)

        def checked(_):
            self.assertEqual([r.reason for r in results], ["HTTP 200"] * 3)
            self.assertEqual(CountingSite.built, 1)
            (client,) = probe._clients.values()
            self.assertIsNotNone(client._conn._socket)  # requests went out by the direct send()
            return probe.close()

        return d.addCallback(checked)


class ProbeConfigTests(SynchronousTestCase):
    """
    The http probe's bounds and headers in the configuration.
    """

    def load(self, health: str):
        from tests.fakes import loadText

        return loadText('processes:\n  b:\n    command: ["{python}"]\n    url: "http://127.0.0.1:1"\n'
                        f"    health: {health}\n")

    def test_limitKeys(self):
        """C{max_header_bytes} and C{max_headers} default to 16 KiB and 100 and are validated."""
        from orchestrator.errors import ConfigError

        options = self.load("{probe: http}").config.processes["b"].health.options
        self.assertEqual((options["max_header_bytes"], options["max_headers"], options["max_body_bytes"]),
                         (16384, 100, 65536))
        with self.assertRaises(ConfigError) as e:
            self.load("{probe: http, max_header_bytes: 10}")
        self.assertIn("processes.b.health.max_header_bytes", str(e.exception))
        self.assertEqual(self.load("{probe: http}").config.max_concurrent_probes, 256)

    def test_headerInjectionRefused(self):
        """A header value with a newline, or a name with a space, is a configuration error."""
        from orchestrator.errors import ConfigError

        with self.assertRaises(ConfigError) as value:
            self.load('{probe: http, headers: {"X-A": "a\\nEvil: 1"}}')
        self.assertIn("processes.b.health.headers.X-A", str(value.exception))
        with self.assertRaises(ConfigError) as name:
            self.load('{probe: http, headers: {"Bad Name": "x"}}')
        self.assertIn("'Bad Name' does not match", str(name.exception))
