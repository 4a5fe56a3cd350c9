"""
The admin API's bounds, in memory over fake connections (real twisted.web
parsing on a L{StringTransport}, time on the fake reactor's clock): the
event stream's per-client buffer, stall timeout, lifetime and client cap;
the deadlines on a request's head and body and the idle timeout; the
header limits; JSON nesting; the token before the body; the connection
cap; and the counters of all of them in C{/metrics}.
"""

from __future__ import annotations

import json

import pytest
from prometheus_client import generate_latest
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web.resource import Resource

from orchestrator.web import AdminSite
from orchestrator.web.channel import RefusedConnection
from orchestrator.web.limits import AdminCounters, REASONS, jsonTooDeep
from tests.fakes import loadText, makeOrchestrator
from tests.test_api import TOKEN, ApiHarness, config
from tests.test_api_plugins import Plugin

HOST = b"Host: 127.0.0.1:8000\r\n"
AUTH = b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
STREAM = b"GET /api/v1/events/stream HTTP/1.1\r\n" + HOST + AUTH + b"\r\n"

LIMITS = """\
  stream_buffer_bytes: 2048
  max_stream_clients: 3
  stream_keepalive: 15
  stream_stall_timeout: 30
  stream_max_seconds: 600
  header_timeout: 10
  body_timeout: 10
  idle_timeout: 60
  max_connections: 4
  max_json_depth: 8"""


class Wire:
    """
    The API's real site, its connections on fake transports.
    """

    def __init__(self, admin: str = LIMITS) -> None:
        self.api = ApiHarness(config(admin=admin))
        self.site = AdminSite(self.api.root, self.api.admin, reactor=self.api.reactor)
        self.counters = self.site.counters
        self.stream = self.api.root._tree.children[b"api"].children[b"v1"].children[
            b"events"].children[b"stream"]
        self._port = 50000

    def connect(self):
        """
        A new connection: C{(protocol, transport)}; C{protocol} is C{None}
        if the site refused to build one.
        """
        self._port += 1
        protocol = self.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", self._port))
        transport = StringTransport(hostAddress=IPv4Address("TCP", "127.0.0.1", 8000),
                                    peerAddress=IPv4Address("TCP", "127.0.0.1", self._port))
        if protocol is not None:
            protocol.makeConnection(transport)
        return protocol, transport

    def send(self, data: bytes):
        protocol, transport = self.connect()
        protocol.dataReceived(data)
        return protocol, transport

    def advance(self, seconds: float) -> None:
        self.api.reactor.advance(seconds)

    def emit(self, count: int) -> None:
        for i in range(count):
            self.api.orchestrator.events.emit("restart_scheduled", "backend", reason=f"test {i}")

    def close(self) -> None:
        self.api.stopOrchestrator()


@pytest.fixture
def wire():
    w = Wire()
    yield w
    w.close()


def lost(protocol) -> None:
    protocol.connectionLost(Failure(ConnectionDone()))


def answer(transport) -> tuple[int, dict, dict]:
    head, _, body = transport.value().partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    return int(lines[0].split()[1]), headers, json.loads(body)


# -- the event stream ---------------------------------------------------------------------------


class TestStreamBuffer:
    def test_paused_client_is_bounded_then_dropped_with_overflow(self, wire):
        """A client whose connection stops draining holds at most stream_buffer_bytes, then gets 'event: overflow' and is closed."""
        protocol, transport = wire.send(STREAM)
        [client] = wire.stream.clients
        transport.producer.pauseProducing()  # the write buffer is full
        sent = len(transport.value())
        for _ in range(100):
            wire.emit(1)
            assert client.queued <= 2048
            if transport.disconnecting:
                break
        assert transport.disconnecting
        tail = transport.value()[sent:].decode()
        assert "event: overflow\ndata: " in tail
        data = json.loads(tail.split("event: overflow\ndata: ")[1].split("\n")[0])
        assert "admin.stream_buffer_bytes (2048 bytes)" in data["error"]
        assert "event: restart_scheduled" not in tail  # the queue went, not to the socket
        assert wire.counters.rejected["stream_overflow"] == 1
        assert wire.stream.clients == set()
        assert len(wire.api.orchestrator.events._subscribers) == 1  # only the supervisor's
        wire.advance(5)
        assert transport.disconnected  # aborted if it does not take the last words

    def test_resumed_client_gets_every_queued_event_in_order(self, wire):
        """Events queued while the connection was full are written, in order, once it drains."""
        protocol, transport = wire.send(STREAM)
        transport.producer.pauseProducing()
        before = len(transport.value())
        wire.emit(4)
        assert len(transport.value()) == before
        transport.producer.resumeProducing()
        text = transport.value()[before:].decode()
        assert [line for line in text.splitlines() if line.startswith("data: ")] == [
            line for e in list(wire.api.orchestrator.events.recent)[-4:]
            for line in ["data: " + json.dumps(e.toJSON(), separators=(", ", ": "))]]
        assert not transport.disconnecting
        assert wire.counters.rejected["stream_overflow"] == 0

    def test_stalled_client_is_aborted(self, wire):
        """A client paused for stream_stall_timeout is aborted and counted; a resume in time keeps it."""
        protocol, transport = wire.send(STREAM)
        transport.producer.pauseProducing()
        wire.advance(29)
        transport.producer.resumeProducing()
        wire.advance(29)
        assert not transport.disconnecting
        transport.producer.pauseProducing()
        wire.advance(30)
        assert transport.disconnected
        assert wire.counters.rejected["stream_stalled"] == 1
        lost(protocol)
        assert wire.stream.clients == set()

    def test_no_keepalive_queued_while_paused(self, wire):
        """Keep-alive comments go to a client that reads, and are not queued for one that does not."""
        protocol, transport = wire.send(STREAM)
        wire.advance(15)
        assert transport.value().endswith(b": keep-alive\n\n\r\n")
        transport.producer.pauseProducing()
        wire.advance(15)
        [client] = wire.stream.clients
        assert client.queued == 0

    def test_stream_lifetime(self, wire):
        """After stream_max_seconds the stream ends cleanly (counted) and the connection stays usable."""
        protocol, transport = wire.send(STREAM)
        [client] = wire.stream.clients
        wire.advance(600)
        assert transport.value().endswith(b"reconnect\n\n\r\n0\r\n\r\n")
        assert not transport.disconnecting
        assert wire.counters.rejected["stream_lifetime"] == 1
        assert wire.stream.clients == set()
        assert not client._ping.running and client._stall is None and client._lifetime is None

    def test_client_cap(self, wire):
        """Past max_stream_clients a new client gets a counted 503 with Retry-After; a free slot is reused."""
        streams = [wire.send(STREAM) for _ in range(3)]
        protocol, transport = wire.send(STREAM)
        status, headers, body = answer(transport)
        assert status == 503
        assert headers["retry-after"] == "5"
        assert body == {"success": False, "error": "too many stream clients (event and log streams together, "
                                                   "admin.max_stream_clients: 3); try again later"}
        assert wire.counters.rejected["stream_clients"] == 1
        assert wire.counters.streamClients == 3
        lost(streams[0][0])
        assert wire.counters.streamClients == 2
        protocol, transport = wire.send(STREAM)
        assert transport.value().startswith(b"HTTP/1.1 200 OK")

    def test_client_that_leaves_releases_everything(self, wire):
        """A client that goes away is unsubscribed, its timers cancelled, its slot freed."""
        calls = len(wire.api.reactor.getDelayedCalls())
        protocol, transport = wire.send(STREAM)
        transport.producer.pauseProducing()
        wire.emit(2)
        lost(protocol)
        assert wire.stream.clients == set()
        assert len(wire.api.orchestrator.events._subscribers) == 1
        assert len([c for c in wire.api.reactor.getDelayedCalls() if c.active()]) <= calls + 1


# -- deadlines ---------------------------------------------------------------------------------


def _closedAtIdleTimeout(wire, transport) -> None:
    """
    The connection is still open 1 s before idle_timeout (60 s) from now,
    and closed and counted at it.
    """
    wire.advance(59)
    assert not transport.disconnecting
    wire.advance(1)
    assert transport.disconnecting
    assert wire.counters.rejected["idle_timeout"] == 1


class TestDeadlines:
    def test_slow_head_is_cut_at_header_timeout(self, wire):
        """A client dripping its head a byte every 3 s gets a 408 JSON at header_timeout and is closed."""
        protocol, transport = wire.connect()
        request = b"GET /api/v1/processes HTTP/1.1\r\n" + HOST
        for byte in request[:4]:
            protocol.dataReceived(bytes([byte]))
            wire.advance(3)
        assert transport.disconnecting
        status, headers, body = answer(transport)
        assert status == 408
        assert headers["connection"] == "close"
        assert body["error"] == "request line and headers not received within admin.header_timeout (10 s)"
        assert wire.counters.rejected["header_timeout"] == 1

    def test_slow_body_is_cut_at_body_timeout(self, wire):
        """A body still incomplete body_timeout after the headers is a 408; the command does not run."""
        protocol, transport = wire.send(b"POST /api/v1/admin/backend/stop HTTP/1.1\r\n" + HOST + AUTH
                                        + b"Content-Length: 20\r\n\r\n{\"wait\"")
        wire.advance(9.9)
        assert transport.value() == b""
        wire.advance(0.2)
        status, _, body = answer(transport)
        assert status == 408
        assert body["error"] == "request body not received within admin.body_timeout (10 s)"
        assert wire.counters.rejected["body_timeout"] == 1
        assert wire.api.orchestrator.processes["backend"].status not in ("stopping", "stopped")

    def test_silent_connection_closed_at_idle_timeout(self, wire):
        """A connection that sends nothing is closed after idle_timeout, counted."""
        protocol, transport = wire.connect()
        _closedAtIdleTimeout(wire, transport)

    def test_keepalive_connection_gets_a_new_deadline_per_request(self, wire):
        """Two requests on one connection each get header_timeout; an answered one leaves no deadline."""
        protocol, transport = wire.send(b"GET /api/v1/processes HTTP/1.1\r\n" + HOST + AUTH + b"\r\n")
        assert transport.value().startswith(b"HTTP/1.1 200 OK")
        wire.advance(9)
        protocol.dataReceived(b"GET /api/v1/processes HTTP/1.1\r\n" + HOST + AUTH + b"\r\n")
        assert transport.value().count(b"HTTP/1.1 200 OK") == 2
        wire.advance(30)
        assert not transport.disconnecting
        assert wire.counters.rejected["header_timeout"] == 0

    def test_idle_timeout_counts_from_the_last_answer(self, wire):
        """idle_timeout runs from the end of the last request, not from the connection's start."""
        request = b"GET /api/v1/processes HTTP/1.1\r\n" + HOST + AUTH + b"\r\n"
        protocol, transport = wire.send(request)
        wire.advance(50)
        protocol.dataReceived(request)
        assert transport.value().count(b"HTTP/1.1 200 OK") == 2
        _closedAtIdleTimeout(wire, transport)

    def test_keepalive_requests_share_one_timer(self, wire):
        """A hundred requests on one connection set no new timer each: one alarm serves them all."""
        request = b"GET /api/v1/processes HTTP/1.1\r\n" + HOST + AUTH + b"\r\n"
        protocol, transport = wire.connect()
        made = []
        callLater = protocol.callLater
        protocol.callLater = lambda *a, **kw: made.append(callLater(*a, **kw)) or made[-1]
        for _ in range(100):
            protocol.dataReceived(request)
            wire.advance(0.01)
        assert transport.value().count(b"HTTP/1.1 200 OK") == 100
        assert len(made) == 0
        wire.advance(60)  # the alarm rings at the first due date, then once more at the real one
        assert len(made) == 1
        assert transport.disconnecting and wire.counters.rejected["idle_timeout"] == 1


# -- the request head --------------------------------------------------------------------------


class TestHead:
    def test_too_many_headers(self, wire):
        """More than 100 header lines is a 431 JSON, counted."""
        headers = b"".join(b"X-%d: 1\r\n" % i for i in range(101))
        protocol, transport = wire.send(b"GET /api/v1/processes HTTP/1.1\r\n" + HOST + headers + b"\r\n")
        status, _, body = answer(transport)
        assert status == 431
        assert body["error"] == "more than 100 header lines in one request"
        assert transport.disconnecting
        assert wire.counters.rejected["too_many_headers"] == 1

    @pytest.mark.parametrize("head", [
        b"GET /" + b"a" * 17000 + b" HTTP/1.1\r\n",
        b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 2000) for i in range(9)),
    ])
    def test_head_too_large(self, wire, head):
        """A request line or a head over 16 KiB is a 431 JSON, counted, whether it ends or not."""
        protocol, transport = wire.send(head)
        status, _, body = answer(transport)
        assert status == 431
        assert body["error"] == "request line and headers are larger than 16384 bytes"
        assert wire.counters.rejected["headers_too_large"] == 1

    def test_malformed_request_is_json(self, wire):
        """What Twisted's parser refuses is a 400 JSON (not a bare status line), counted."""
        protocol, transport = wire.send(b"GET / HTTP/1.1\r\nno colon here\r\n\r\n")
        status, _, body = answer(transport)
        assert status == 400
        assert body == {"success": False, "error": "malformed HTTP request"}
        assert wire.counters.rejected["malformed"] == 1


# -- bodies ------------------------------------------------------------------------------------


class TestBody:
    def test_token_checked_before_the_body(self, wire):
        """Without the token, a request announcing a body is refused (401) before any of it is sent."""
        protocol, transport = wire.send(b"POST /api/v1/admin/backend/stop HTTP/1.1\r\n" + HOST
                                        + b"Content-Length: 60000\r\n\r\n")
        status, headers, body = answer(transport)
        assert status == 401
        assert headers["www-authenticate"] == 'Bearer realm="orchestrator"'
        assert headers["connection"] == "close"
        protocol.dataReceived(b"x" * 60000)  # thrown away
        assert transport.disconnecting
        assert wire.api.orchestrator.processes["backend"].status == "starting"

    @pytest.mark.parametrize("body", [b"[" * 100_000, b"[" * 100_000 + b"]" * 100_000,
                                      b'{"wait": ' * 9 + b"1" + b"}" * 9])
    def test_deep_json_is_a_400(self, wire, body):
        """JSON nested past max_json_depth (balanced or not) is a 400 JSON before any route parses it."""
        wire.site.maxBodyBytes = 1_000_000
        protocol, transport = wire.send(b"POST /api/v1/admin/backend/stop HTTP/1.1\r\n" + HOST + AUTH
                                        + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        status, _, answered = answer(transport)
        assert status == 400
        assert answered["error"] == ("the request body nests JSON arrays and objects deeper than "
                                     "admin.max_json_depth (8 levels)")
        assert wire.counters.rejected["json_too_deep"] == 1
        assert wire.api.orchestrator.processes["backend"].status == "starting"

    def test_json_at_the_depth_limit_reaches_the_route(self, wire):
        """JSON exactly max_json_depth deep is parsed by the route (which judges its content)."""
        body = b'{"wait": ' * 7 + b"[1]" + b"}" * 7
        protocol, transport = wire.send(b"POST /api/v1/admin/backend/stop HTTP/1.1\r\n" + HOST + AUTH
                                        + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        status, _, answered = answer(transport)
        assert status == 400
        assert answered["error"] == "field 'wait' must be a bool"
        assert wire.counters.rejected["json_too_deep"] == 0

    def test_any_post_is_covered(self):
        """A plugin's POST route is protected too: deep JSON never reaches its json.loads."""
        parsed = []

        class Echo(Resource):
            isLeaf = True

            def render_POST(self, request):
                parsed.append(json.loads(request.content.read()))
                return b"{}"

        api = ApiHarness(config(admin="  max_json_depth: 8"), plugins=[Plugin(("echo", lambda o: Echo()))])
        body = b"[" * 30_000 + b"]" * 30_000
        answered = api.post("/api/v1/plugins/echo", body=body)
        assert answered.status == 400
        assert "admin.max_json_depth (8 levels)" in answered.json["error"]
        assert parsed == []
        assert api.post("/api/v1/plugins/echo", body=b"[[1]]").status == 200
        assert parsed == [[[1]]]

    @pytest.mark.parametrize("raw, deep", [(b"{}", False), (b'"[[[[[[[[[[[["', False),
                                           (b'["]]]]", [[]]]', False), (b"[" * 9 + b"]" * 9, True),
                                           (b"  \n[[[[[[[[[", True), (b"not json [[[[[[[[[[", False)])
    def test_depth_check(self, raw, deep):
        """The depth check ignores brackets in strings and judges unbalanced text by its open brackets."""
        assert jsonTooDeep(raw, 8) is deep


# -- the connection cap ----------------------------------------------------------------------------


class TestConnectionCap:
    def busy(self, wire):
        """
        Make every one of the 4 connections busy: 3 event streams and a
        restart waiting for its process.
        """
        for _ in range(3):
            wire.send(STREAM)
        wire.send(b"POST /api/v1/processes/worker/restart HTTP/1.1\r\n" + HOST + AUTH + b"\r\n")

    def test_oldest_idle_connection_makes_room(self, wire):
        """At max_connections a new connection closes the oldest idle one (counted), not a busy one."""
        busy, busyTransport = wire.send(STREAM)
        first, firstTransport = wire.connect()
        wire.advance(1)
        second, secondTransport = wire.connect()
        third, thirdTransport = wire.connect()
        fourth, fourthTransport = wire.connect()
        assert fourth is not None
        assert firstTransport.disconnecting
        assert not secondTransport.disconnecting and not thirdTransport.disconnecting
        assert not busyTransport.disconnecting
        assert wire.counters.rejected["evicted"] == 1

    def test_idle_before_receiving(self, wire):
        """A connection between requests is closed before one still sending its request, even a newer one."""
        sending, sendingTransport = wire.send(b"GET /api/v1/proc")
        wire.advance(1)
        idle, idleTransport = wire.send(b"GET /api/v1/processes HTTP/1.1\r\n" + HOST + AUTH + b"\r\n")
        wire.send(STREAM)
        wire.send(STREAM)
        wire.connect()
        assert idleTransport.disconnecting and not sendingTransport.disconnecting

    def test_receiving_connection_aborted_when_nothing_is_idle(self, wire):
        """With no idle connection, the oldest one still sending its request is aborted for the new one."""
        sending, sendingTransport = wire.send(b"GET /api/v1/proc")
        for _ in range(3):
            wire.send(STREAM)
        protocol, transport = wire.connect()
        assert sendingTransport.disconnected
        assert not isinstance(protocol, RefusedConnection)
        assert wire.counters.rejected["evicted"] == 1

    def test_503_when_every_connection_is_busy(self, wire):
        """With every connection busy the new one gets a counted 503 JSON and is closed."""
        self.busy(wire)
        protocol, transport = wire.connect()
        assert isinstance(protocol, RefusedConnection)
        status, headers, body = answer(transport)
        assert status == 503
        assert headers["retry-after"] == "1"
        assert body["error"] == ("too many connections to the admin API (admin.max_connections: 4); "
                                 "try again later")
        assert wire.counters.rejected["connections"] == 1
        assert transport.disconnecting
        protocol.dataReceived(b"GET / HTTP/1.1\r\n" * 10000)  # over the read limit: aborted
        assert transport.disconnected

    def test_refused_connection_half_closes_and_drains(self, wire):
        """A refused plain socket has its write side closed after the 503 and is read until the client closes."""
        class HalfCloseable(StringTransport):
            writeClosed = False

            def loseWriteConnection(self):
                self.writeClosed = True

        self.busy(wire)
        protocol = wire.site.buildProtocol(None)
        transport = HalfCloseable()
        protocol.makeConnection(transport)
        assert transport.writeClosed and not transport.disconnecting
        assert transport.value().startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
        protocol.dataReceived(b"GET /api/v1/processes HTTP/1.1\r\n\r\n")  # thrown away
        protocol.readConnectionLost()
        assert transport.disconnecting
        assert wire.site.connectionCap.refusing == 1
        lost(protocol)
        assert wire.site.connectionCap.refusing == 0

    def test_refusals_are_bounded_too(self, wire):
        """Past max_connections lingering refusals, a new connection is closed without an answer."""
        self.busy(wire)
        refused = [wire.connect() for _ in range(5)]
        assert [p is None for p, _ in refused] == [False, False, False, False, True]
        assert wire.counters.rejected["connections"] == 5
        wire.advance(5)
        assert all(t.disconnected for p, t in refused if p is not None)

    def test_closed_connections_free_their_slot(self, wire):
        """Connections that close leave the cap (and the gauge) at once."""
        connections = [wire.connect() for _ in range(4)]
        assert wire.counters.connections == 4
        for protocol, _ in connections:
            lost(protocol)
        assert wire.counters.connections == 0
        assert wire.site.connectionCap.open == 0


# -- counted -------------------------------------------------------------------------------------------


class TestCounted:
    def test_every_reason_is_exposed(self):
        """The counters are on the orchestrator's /metrics with every reason, from zero."""
        loaded = loadText(config())
        from tests.fakes import FakeProcessReactor

        r = FakeProcessReactor()
        o = makeOrchestrator(loaded, r, listen=True)
        o.web.site.counters.count("stream_overflow")
        text = generate_latest(o.metrics.registry).decode()
        for reason in REASONS:
            value = 1.0 if reason == "stream_overflow" else 0.0
            assert f'orchestrator_admin_rejected_total{{reason="{reason}"}} {value}' in text
        assert "orchestrator_admin_connections 0.0" in text
        assert "orchestrator_admin_stream_clients 0.0" in text

    def test_unknown_reason_is_a_bug(self):
        """Counting a reason that is not documented fails loudly in tests."""
        with pytest.raises(AssertionError):
            AdminCounters().count("nope")


class TestDocumented:
    def test_refusals_match_the_openapi_document(self):
        """The 503 of the stream cap and the 400 of deep JSON conform to the served OpenAPI document."""
        api = ApiHarness(config(admin="  max_stream_clients: 1"))
        api.send("GET", "/api/v1/events/stream")
        refused = api.get("/api/v1/events/stream")  # (checked against the document)
        assert refused.status == 503
        assert refused.header("retry-after") == "5"
        deep = api.post("/api/v1/admin/backend/restart", body=b"[" * 40 + b"]" * 40)
        assert deep.status == 400
        operation = api.openapi["paths"]["/api/v1/processes/{name}/start"]["post"]
        assert {"408", "431", "503"} <= set(operation["responses"])
