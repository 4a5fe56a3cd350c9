"""
Tests for L{orchestrator.web._render.ApiResource}: an answer ready at once,
a Deferred one and a coroutine's are written alike; an L{ApiError} is its
JSON; anything else a logged 500 with no traceback for the client.
"""

from __future__ import annotations

import json

from twisted.internet.defer import Deferred
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http import HTTPChannel
from twisted.web.http_headers import Headers
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest

from orchestrator.web._render import Answer, ApiError, ApiResource
from orchestrator.web.channel import AdminChannel


class _Route(ApiResource):
    def __init__(self, outcome) -> None:
        super().__init__()
        self._outcome = outcome

    def GET(self, request):
        return self._outcome(request)


def _render(outcome, method=b"GET"):
    request = DummyRequest([b""])
    request.method = method
    request.path = b"/api/v1/thing"
    result = _Route(outcome).render(request)
    return request, result


def _body(request) -> dict:
    return json.loads(b"".join(request.written))


class RenderTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.logged: list[dict] = []
        globalLogPublisher.addObserver(self.logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.logged.append)

    def test_readyAnswerWrittenAtOnce(self) -> None:
        """A dict returned at once is the JSON answer, finished within render."""
        request, result = _render(lambda r: {"ok": 1})
        self.assertIs(result, NOT_DONE_YET)
        self.assertEqual((request.responseCode or 200, request.finished, _body(request)), (200, 1, {"ok": 1}))
        self.assertEqual(request.responseHeaders.getRawHeaders(b"content-type"), [b"application/json"])

    def test_headHasNoBody(self) -> None:
        """HEAD is GET's headers without the body."""
        request, _ = _render(lambda r: Answer({"ok": 1}, 200), method=b"HEAD")
        self.assertEqual((request.written, request.finished), ([], 1))

    def test_apiErrorIsItsJSON(self) -> None:
        """An ApiError raised at once is its status and JSON error."""
        def refuse(request):
            raise ApiError(409, "busy")
        request, _ = _render(refuse)
        self.assertEqual((request.responseCode, _body(request)), (409, {"success": False, "error": "busy"}))

    def test_unexpectedErrorIsALogged500(self) -> None:
        """Any other exception: a 500 that says to read the log, and the traceback in the log."""
        request, _ = _render(lambda r: 1 / 0)
        self.assertEqual(request.responseCode, 500)
        self.assertNotIn("ZeroDivisionError", json.dumps(_body(request)))
        self.assertTrue([e for e in self.logged if e.get("log_failure") is not None
                         and e["log_failure"].check(ZeroDivisionError)])
        self.flushLoggedErrors(ZeroDivisionError)

    def test_deferredAnswerWrittenWhenItFires(self) -> None:
        """A Deferred answer is written when it fires, not before."""
        d: Deferred = Deferred()
        request, _ = _render(lambda r: d)
        self.assertEqual((request.written, request.finished), ([], 0))
        d.callback(Answer({"done": True}, 202))
        self.assertEqual((request.responseCode, _body(request)), (202, {"done": True}))

    def test_coroutineAnswer(self) -> None:
        """A coroutine (an async def handler) is awaited like a Deferred."""
        d: Deferred = Deferred()

        async def handler(request):
            return {"waited": await d}
        request, _ = _render(handler)
        self.assertEqual(request.written, [])
        d.callback(3)
        self.assertEqual(_body(request), {"waited": 3})


class HeadWriteTests(SynchronousTestCase):
    """
    L{orchestrator.web.channel.AdminChannel.writeHeaders} sends the status
    line and headers in one write, byte for byte what Twisted's would.
    """

    def _written(self, channelClass, headers) -> list[bytes]:
        writes: list[bytes] = []

        class _Transport(StringTransport):
            def write(self, data):
                writes.append(data)

            def writeSequence(self, data):
                writes.append(b"".join(data))

        channel = channelClass()
        channel.transport = _Transport()
        channel.writeHeaders(b"HTTP/1.1", b"200", b"OK", headers)
        return writes

    def test_oneWriteSameBytes(self) -> None:
        headers = Headers()
        headers.setRawHeaders(b"content-type", [b"application/json"])
        headers.setRawHeaders(b"set-cookie", [b"a=1", b"b=2"])
        headers.setRawHeaders(b"x-odd", [b"line\r\nbreak"])  # sanitised when set
        ours = self._written(AdminChannel, headers)
        self.assertEqual(len(ours), 1)
        self.assertEqual(ours, self._written(HTTPChannel, headers))
        self.assertIn(b"Set-Cookie: a=1\r\nSet-Cookie: b=2\r\n", ours[0])
        self.assertTrue(ours[0].endswith(b"\r\n\r\n"))

    def test_pairsStillAccepted(self) -> None:
        pairs = [(b"X-A", b"1")]
        self.assertEqual(b"".join(self._written(AdminChannel, pairs)),
                         b"".join(self._written(HTTPChannel, pairs)))
