"""
The webhook notifier against receivers that misbehave, in memory: Twisted's
real L{Agent} and HTTP parser over a fake connection the test answers
byte by byte, on a L{Clock}.  A receiver's answer is bounded (status line,
headers and body together), every attempt's connection is aborted when the
attempt ends, and C{Retry-After} sets the next attempt's time.  Secrets
that are malformed or missing never end in a traceback.
"""

from __future__ import annotations

import base64

from twisted.internet.defer import succeed
from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http import datetimeToString

from orchestrator.builtin.notifiers import WebhookNotifier, parseRetryAfter
from orchestrator.errors import ConfigError
from orchestrator.notify.registry import NotifierDisabled, NotifierSet, checkNotifiers
from orchestrator.notify.events import EventBus
from tests.fakes import loadText
from tests.test_notifiers import START, URL, makeEvent, webhookConfig


class Connection(StringTransport):
    """
    One client connection: what the client wrote, and whether it was
    aborted or closed.  Its loss reaches the protocol on the next clock
    turn, as with a real TCP transport.
    """

    def __init__(self, clock, protocol) -> None:
        super().__init__()
        self._clock = clock
        self.protocol = protocol
        self.aborted = False
        self.ended = False

    def _end(self, reason) -> None:
        if not self.ended:
            self.ended = True
            self._clock.callLater(0, self.protocol.connectionLost, Failure(reason))

    def abortConnection(self) -> None:
        self.aborted = True
        self._end(ConnectionAborted())

    def loseConnection(self) -> None:
        super().loseConnection()
        self._end(ConnectionDone())

    def answer(self, data: bytes) -> None:
        """
        The receiver sends C{data} (ignored once the connection ended).
        """
        if not self.ended:
            self.protocol.dataReceived(data)


class Receiver:
    """
    The endpoint every request of the notifier goes to: records each
    connection for the test to answer.
    """

    def __init__(self, clock) -> None:
        self.clock = clock
        self.connections: list[Connection] = []

    def __call__(self, uri):
        return self

    def connect(self, factory):
        protocol = factory.buildProtocol(None)
        connection = Connection(self.clock, protocol)
        protocol.makeConnection(connection)
        self.connections.append(connection)
        return succeed(protocol)

    @property
    def last(self) -> Connection:
        return self.connections[-1]


class BoundsTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.receiver = Receiver(self.clock)

    def make(self, **options) -> WebhookNotifier:
        self.notifier = WebhookNotifier(webhookConfig(**options), self.clock, random=lambda: 0.5,
                                        endpointFor=self.receiver)
        return self.notifier

    def turn(self, seconds: float = 0) -> None:
        self.clock.advance(seconds)


class ResponseBoundTests(BoundsTestCase):
    def test_hugeBodyAfter200IsCutAtTheLimitAndCountedDelivered(self) -> None:
        """A 200 announcing 1 GiB is read up to max_response_bytes, then its connection aborted: delivered, cut counted."""
        self.make(max_response_bytes=4096)
        self.notifier.notify(makeEvent(1))
        connection = self.receiver.last
        self.assertIn(b"POST /services/T00/B00/s3cr3tT0ken HTTP/1.1", connection.value())
        connection.answer(b"HTTP/1.1 200 OK\r\ncontent-length: 1073741824\r\n\r\n")
        for _ in range(10):
            connection.answer(b"x" * 1024)
        self.assertTrue(connection.aborted)
        self.turn()
        self.assertEqual(self.notifier.outcomes, {"delivered": 1})
        self.assertEqual(self.notifier.cut, {"too_large": 1})
        self.assertEqual(len(self.notifier.connections), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_endlessHeadersAreCutAndTheAttemptRetried(self) -> None:
        """Header lines without end are cut at max_response_bytes: the attempt fails, is retried, and nothing is kept."""
        self.make(max_response_bytes=4096, retry_initial=1, max_retries=1)
        self.notifier.notify(makeEvent(1))
        first = self.receiver.last
        first.answer(b"HTTP/1.1 200 OK\r\n")
        for n in range(1000):
            first.answer(b"x-flood-%d: %s\r\n" % (n, b"y" * 64))
        self.assertTrue(first.aborted)
        self.turn()
        self.assertEqual(self.notifier.outcomes, {"retried": 1})
        self.assertEqual(self.notifier.cut, {"too_large": 1})
        self.turn(1)
        self.receiver.last.answer(b"HTTP/1.1 204 No Content\r\n\r\n")
        self.turn()
        self.assertEqual(self.notifier.outcomes, {"retried": 1, "delivered": 1})

    def test_drippingBodyIsAbortedAtTheTimeout(self) -> None:
        """A 200 whose body drips a byte a second is aborted at the timeout; the next event goes out."""
        self.make(timeout=3)
        self.notifier.notify(makeEvent(1))
        self.notifier.notify(makeEvent(2))
        connection = self.receiver.last
        connection.answer(b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n")
        for _ in range(2):
            connection.answer(b"x")
            self.turn(1)
        self.assertFalse(connection.aborted)
        self.turn(1)
        self.assertTrue(connection.aborted)
        self.assertEqual(self.notifier.cut, {"timeout": 1})
        self.assertEqual(self.notifier.outcomes, {"delivered": 1})
        self.assertEqual(len(self.receiver.connections), 2, "the second event was sent")
        self.receiver.last.answer(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
        self.turn()
        self.assertEqual(self.notifier.outcomes, {"delivered": 2})
        self.assertEqual(len(self.notifier.connections), 0)

    def test_silentReceiverIsAbortedAtTheTimeout(self) -> None:
        """A receiver that accepts the connection and never answers is aborted at the timeout and retried."""
        self.make(timeout=2, retry_initial=1, max_retries=0)
        self.notifier.notify(makeEvent(1))
        connection = self.receiver.last
        self.turn(2)
        self.assertTrue(connection.aborted)
        self.turn()
        self.assertEqual(self.notifier.outcomes, {"failed": 1})
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_smallAnswersAreNotCut(self) -> None:
        """An ordinary answer with a small body is read to its end and nothing is counted as cut."""
        self.make()
        self.notifier.notify(makeEvent(1))
        self.receiver.last.answer(b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\n{\"ok\":true}")
        self.turn()
        self.assertEqual(self.notifier.outcomes, {"delivered": 1})
        self.assertEqual(self.notifier.cut, {})


class RetryAfterTests(BoundsTestCase):
    def answer(self, status: bytes, *headers: bytes) -> None:
        self.receiver.last.answer(b"HTTP/1.1 " + status + b"\r\n" + b"".join(h + b"\r\n" for h in headers)
                                  + b"content-length: 0\r\n\r\n")
        self.turn()

    def test_429DeltaSecondsSetsTheNextAttempt(self) -> None:
        """429 with Retry-After: 10 is retried after exactly 10 s, not after the backoff's 1 s."""
        self.make(retry_initial=1)
        self.notifier.notify(makeEvent(1))
        self.answer(b"429 Too Many Requests", b"retry-after: 10")
        self.turn(9.9)
        self.assertEqual(len(self.receiver.connections), 1)
        self.turn(0.1)
        self.assertEqual(len(self.receiver.connections), 2)

    def test_503HttpDateSetsTheNextAttempt(self) -> None:
        """503 with Retry-After as an HTTP date 30 s ahead is retried 30 s later."""
        self.make(retry_initial=1)
        self.notifier.notify(makeEvent(1))
        self.answer(b"503 Service Unavailable", b"retry-after: " + datetimeToString(START + 30))
        self.turn(29.5)
        self.assertEqual(len(self.receiver.connections), 1)
        self.turn(0.5)
        self.assertEqual(len(self.receiver.connections), 2)

    def test_retryAfterIsCappedAtRetryMax(self) -> None:
        """Retry-After: 3600 waits only retry_max seconds."""
        self.make(retry_initial=1, retry_max=20)
        self.notifier.notify(makeEvent(1))
        self.answer(b"429 Too Many Requests", b"retry-after: 3600")
        self.turn(20)
        self.assertEqual(len(self.receiver.connections), 2)

    def test_malformedRetryAfterFallsBackToTheBackoff(self) -> None:
        """An unparsable Retry-After is ignored: the jittered backoff (1 s here) applies."""
        self.make(retry_initial=1)
        self.notifier.notify(makeEvent(1))
        self.answer(b"429 Too Many Requests", b"retry-after: soon")
        self.turn(1)
        self.assertEqual(len(self.receiver.connections), 2)

    def test_retryAfterOn500IsIgnored(self) -> None:
        """Only 429 and 503 are honoured: a 500's Retry-After leaves the backoff in charge."""
        self.make(retry_initial=1)
        self.notifier.notify(makeEvent(1))
        self.answer(b"500 Internal Server Error", b"retry-after: 60")
        self.turn(1)
        self.assertEqual(len(self.receiver.connections), 2)

    def test_parseRetryAfter(self) -> None:
        """Delta seconds, HTTP dates in the past (0) and garbage (None) parse as documented."""
        self.assertEqual(parseRetryAfter(" 120 ", START), 120.0)
        self.assertEqual(parseRetryAfter(datetimeToString(START - 60).decode(), START), 0.0)
        self.assertIsNone(parseRetryAfter("-5", START))
        self.assertIsNone(parseRetryAfter("Wed, 99 Foo 2015", START))
        self.assertGreater(parseRetryAfter("9" * 5000, START), 86400)


class SecretTests(SynchronousTestCase):
    YAML = """
        processes:
          backend: {command: ["{python}"]}
        notifiers:
          - {type: webhook, url: "%s", secret_env: HOOK_SECRET}
    """ % URL

    def test_malformedWhsecSecretIsAConfigError(self) -> None:
        """A whsec_ secret that is not base64 is a configuration error at load naming the notifier and variable."""
        with self.assertRaises(ConfigError) as caught:
            loadText(self.YAML, environ={"HOOK_SECRET": "whsec_not*base64!"})
        [problem] = caught.exception.problems
        self.assertIn("notifiers[0].secret_env: HOOK_SECRET: the whsec_ secret is not valid base64", problem)
        self.assertNotIn("not*base64", problem)

    def test_validSecretPassesTheCheck(self) -> None:
        """A valid whsec_ secret, a raw one, or none at all passes checkNotifiers."""
        for environ in ({"HOOK_SECRET": "whsec_" + base64.b64encode(b"k" * 24).decode()},
                        {"HOOK_SECRET": "raw"}, {}):
            loaded = loadText(self.YAML, environ=environ)
            checkNotifiers(loaded.config, loaded.kinds)

    def test_unsetSecretVariableDisablesTheNotifierWithoutTraceback(self) -> None:
        """secret_env naming an unset variable: the notifier is disabled, logged as one error line, counted."""
        loaded = loadText(self.YAML, environ={})
        with self.assertRaises(NotifierDisabled):
            WebhookNotifier(loaded.config.notifiers[0], Clock())
        seen: list[dict] = []
        globalLogPublisher.addObserver(seen.append)
        self.addCleanup(globalLogPublisher.removeObserver, seen.append)
        clock = Clock()
        notifiers = NotifierSet(EventBus(clock), clock)
        notifiers.start(loaded.config, loaded.kinds)
        self.assertEqual(notifiers.notifiers, [])
        [line] = [e for e in seen if "disabled" in e.get("log_format", "")]
        self.assertEqual(line["log_level"].name, "error")
        self.assertEqual(line["why"], "secret_env HOOK_SECRET is not set")
        self.assertNotIn("log_failure", line)
        [disabled] = [f for f in notifiers.collect() if f.name == "orchestrator_notifier_disabled"]
        self.assertEqual([(s.labels, s.value) for s in disabled.samples],
                         [({"notifier": "notifiers[0]", "type": "webhook"}, 1.0)])


class ClientTests(BoundsTestCase):
    def test_redirectIsNotFollowed(self) -> None:
        """A 302 is a failed attempt (retried), never a POST to wherever the receiver points."""
        self.make(max_retries=0)
        self.notifier.notify(makeEvent(1))
        self.receiver.last.answer(b"HTTP/1.1 302 Found\r\nlocation: http://169.254.169.254/\r\n"
                                  b"content-length: 0\r\n\r\n")
        self.turn()
        self.assertEqual(len(self.receiver.connections), 1)
        self.assertEqual(self.notifier.outcomes, {"failed": 1})

    def test_defaultEndpointsAreTCPAndTLS(self) -> None:
        """Without a test endpoint, http goes over TCP, https over TLS, and other schemes are refused."""
        from twisted.internet.endpoints import HostnameEndpoint
        from twisted.internet.interfaces import IStreamClientEndpoint
        from twisted.internet.testing import MemoryReactorClock
        from twisted.web.client import URI
        from twisted.web.error import SchemeNotSupported

        from orchestrator.builtin._webhookhttp import _defaultEndpoint

        endpointFor = _defaultEndpoint(MemoryReactorClock(), 5)
        self.assertIsInstance(endpointFor(URI.fromBytes(b"http://127.0.0.1:9/x")), HostnameEndpoint)
        tls = endpointFor(URI.fromBytes(b"https://hooks.example.com/x"))
        self.assertTrue(IStreamClientEndpoint.providedBy(tls))
        self.assertNotIsInstance(tls, HostnameEndpoint)  # wrapped in TLS
        self.assertRaises(SchemeNotSupported, endpointFor, URI.fromBytes(b"ftp://hooks.example.com/x"))
