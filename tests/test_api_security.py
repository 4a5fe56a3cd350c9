"""
The admin API's protections, in memory: the token, the Host and Origin
checks, the body cap, and answers that are JSON whatever goes wrong.
"""

from __future__ import annotations

import json

import pytest
from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher, formatEvent

from orchestrator.web import AdminSite
from tests.test_api import TOKEN, ApiHarness, config

ROUTES = [
    ("GET", "/api/v1/admin/backend/status"),
    ("GET", "/api/v1/admin/backend/health"),
    ("POST", "/api/v1/admin/backend/start"),
    ("POST", "/api/v1/admin/backend/stop"),
    ("POST", "/api/v1/admin/backend/restart"),
    ("POST", "/api/v1/admin/reload"),
    ("GET", "/api/v1/processes"),
    ("GET", "/api/v1/processes/backend"),
    ("GET", "/api/v1/processes/backend/status"),
    ("POST", "/api/v1/processes/backend/start"),
    ("POST", "/api/v1/processes/backend/stop"),
    ("POST", "/api/v1/processes/backend/restart"),
    ("GET", "/api/v1/processes/backend/logs"),
    ("GET", "/api/v1/processes/backend/health"),
    ("GET", "/api/v1/events"),
    ("GET", "/api/v1/events/stream"),
    ("GET", "/api/v1/openapi.json"),
    ("GET", "/api/v1/orchestrator"),
    ("GET", "/api/v1/nope"),
    ("GET", "/nope"),
]  # (the status page at / and /ui/ needs none: tests/test_ui.py)


@pytest.fixture
def api():
    harness = ApiHarness()
    yield harness
    harness.stopOrchestrator()


def raw(api, data: bytes, local=None, log=None) -> StringTransport:
    """
    Feed raw bytes to the API's site over a fake connection; what it
    wrote back is in the returned transport's C{value()}; its access log
    goes to C{log}, if given.
    """
    site = AdminSite(api.root, api.admin, reactor=api.reactor)
    if log is not None:
        site.logFile = log
    protocol = site.buildProtocol(None)
    transport = StringTransport(hostAddress=local or IPv4Address("TCP", "127.0.0.1", 8000),
                                peerAddress=IPv4Address("TCP", "127.0.0.1", 50000))
    protocol.makeConnection(transport)
    protocol.dataReceived(data)
    return transport


def parseRaw(data: bytes) -> tuple[int, dict, dict]:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    return int(lines[0].split()[1]), headers, json.loads(body)


# -- the token ---------------------------------------------------------------------------------


class TestToken:
    @pytest.mark.parametrize("method, path", ROUTES)
    def test_every_route_needs_the_token(self, api, method, path):
        """Without the token every route (even an unknown one) is a 401 JSON with WWW-Authenticate."""
        answer = api.call(method, path, token=False)
        assert answer.status == 401
        assert answer.json == {"success": False,
                               "error": "missing token: send 'Authorization: Bearer <token>'"}
        assert answer.header("www-authenticate") == 'Bearer realm="orchestrator"'

    @pytest.mark.parametrize("header", [f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", "Bearer ",
                                        f"Basic {TOKEN}", TOKEN])
    def test_wrong_token(self, api, header):
        """A wrong token, or the right one in another scheme, is a 401 invalid_token."""
        answer = api.get("/api/v1/processes", headers={"Authorization": header}, token=False)
        assert answer.status == 401
        assert answer.json["error"] == "invalid token"
        assert 'error="invalid_token"' in answer.header("www-authenticate")

    def test_scheme_is_case_insensitive(self, api):
        """'bearer' works like 'Bearer'."""
        answer = api.get("/api/v1/processes", headers={"Authorization": f"bearer {TOKEN}"}, token=False)
        assert answer.status == 200

    def test_compared_in_constant_time(self, api, monkeypatch):
        """The token is compared with hmac.compare_digest."""
        import orchestrator.web.security as security

        calls = []
        real = security.hmac.compare_digest
        monkeypatch.setattr(security.hmac, "compare_digest", lambda a, b: calls.append((a, b)) or real(a, b))
        api.get("/api/v1/processes", token="guess")
        assert calls == [(b"guess", TOKEN.encode())]

    def test_metrics_without_token(self, api):
        """/metrics needs no token by default, and serves Prometheus text."""
        answer = api.get("/metrics", token=False)
        assert answer.status == 200
        assert answer.header("content-type").startswith("text/plain")
        assert "backend_status" in answer.text

    def test_metrics_token_when_configured(self):
        """With admin.metrics_requires_token, /metrics needs the token too."""
        api = ApiHarness(config(admin="  metrics_requires_token: true"))
        assert api.get("/metrics", token=False).status == 401
        assert api.get("/metrics").status == 200

    def test_no_token_configured(self):
        """Without admin.token (loopback only), requests need no Authorization."""
        api = ApiHarness(config(token=None))
        assert api.get("/api/v1/processes", token=False).status == 200

    def test_token_never_logged_nor_in_events(self, api):
        """Neither the right nor a wrong token appears in any log event or in the event list."""
        events = []
        globalLogPublisher.addObserver(events.append)
        try:
            api.ready()
            api.get("/api/v1/processes")
            api.get("/api/v1/processes", token="wrong-" + TOKEN)
            api.post("/api/v1/admin/backend/restart?wait=false")
            api.get("/api/v1/nope")
        finally:
            globalLogPublisher.removeObserver(events.append)
        text = "\n".join(formatEvent(e) or "" for e in events) + repr(events)
        assert TOKEN not in text
        bus = "\n".join(json.dumps(e.toJSON()) for e in api.orchestrator.events.recent)
        assert TOKEN not in bus

    def test_access_log_has_no_authorization(self, api):
        """twisted.web's access log line carries no Authorization header."""
        import io

        log = io.StringIO()
        transport = raw(api, b"GET /api/v1/processes HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n"
                             b"Authorization: Bearer " + TOKEN.encode() + b"\r\n\r\n", log=log)
        assert b" 200 OK" in transport.value()
        assert '"GET /api/v1/processes HTTP/1.1" 200' in log.getvalue()
        assert TOKEN not in log.getvalue()


    @staticmethod
    def _requestThroughStartedSite(api, admin):
        """
        Start a site, send it one GET, stop it: what it answered, the log
        events meanwhile, and the delayed calls its start added.
        """
        from twisted.logger import globalLogPublisher

        site = AdminSite(api.root, admin, reactor=api.reactor)
        calls = len(api.reactor.getDelayedCalls())
        site.doStart()
        added = len(api.reactor.getDelayedCalls()) - calls
        seen = []
        globalLogPublisher.addObserver(seen.append)
        try:
            protocol = site.buildProtocol(None)
            transport = StringTransport(hostAddress=IPv4Address("TCP", "127.0.0.1", 8000),
                                        peerAddress=IPv4Address("TCP", "127.0.0.1", 50000))
            protocol.makeConnection(transport)
            protocol.dataReceived(b"GET /api/v1/processes HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n"
                                  b"Authorization: Bearer " + TOKEN.encode() + b"\r\n\r\n")
        finally:
            globalLogPublisher.removeObserver(seen.append)
            site.doStop()
        return transport.value(), seen, added

    def test_no_access_log_and_no_timer_by_default(self, api):
        """By default a started site logs no request line and arms no timer (an idle orchestrator stays asleep)."""
        answer, seen, added = self._requestThroughStartedSite(api, api.admin)
        assert added == 0
        assert b" 200 OK" in answer
        assert not [e for e in seen if "HTTP/1.1" in str(e.get("log_io", e.get("message", "")))]

    def test_access_log_when_asked(self, api):
        """With admin.access_log: true, each request is one combined-log line in the orchestrator's log, dated."""
        import dataclasses

        _, seen, _ = self._requestThroughStartedSite(api, dataclasses.replace(api.admin, access_log=True))
        lines = [e["log_io"] for e in seen if "log_io" in e]
        assert len(lines) == 1 and '"GET /api/v1/processes HTTP/1.1" 200' in lines[0], lines
        assert "[01/Jan/1970:00:00:00 +0000]" in lines[0]


# -- Host --------------------------------------------------------------------------------------


class TestHost:
    @pytest.mark.parametrize("host", ["127.0.0.1:8000", "localhost:8000", "[::1]:8000", "LOCALHOST:8000",
                                      "localhost.:8000"])
    def test_loopback_names_accepted(self, api, host):
        """127.0.0.1, localhost and [::1] with the listener's port are accepted."""
        assert api.get("/api/v1/processes", headers={"Host": host}).status == 200

    @pytest.mark.parametrize("host", ["evil.example:8000", "127.0.0.1:9999", "localhost",
                                      "10.0.0.1:8000", "attacker.localhost:8000"])
    def test_foreign_host_refused(self, api, host):
        """A Host that does not name the listener (DNS rebinding) is a 421 JSON."""
        answer = api.get("/api/v1/processes", headers={"Host": host})
        assert answer.status == 421
        assert answer.json["error"] == (f"Host {host!r} does not name this server; "
                                        "add it to admin.allowed_hosts if it should")

    def test_allowed_hosts(self):
        """Names in admin.allowed_hosts are accepted: a bare name on any port, name:port exactly."""
        api = ApiHarness(config(admin='  allowed_hosts: ["orch.internal", "proxy.example:443"]'))
        assert api.get("/api/v1/processes", headers={"Host": "orch.internal:8000"}).status == 200
        assert api.get("/api/v1/processes", headers={"Host": "orch.internal"}).status == 200
        assert api.get("/api/v1/processes", headers={"Host": "proxy.example:443"}).status == 200
        assert api.get("/api/v1/processes", headers={"Host": "proxy.example:80"}).status == 421

    def test_remembered_verdicts_are_bounded_and_per_host(self, api):
        """Each Host gets its own verdict, asked again or not; a client naming 600 Hosts leaves at most 256 remembered."""
        for round in range(2):  # the second round answers from memory
            assert api.get("/api/v1/processes", headers={"Host": "127.0.0.1:8000"}).status == 200
            assert api.get("/api/v1/processes", headers={"Host": "evil.example:8000"}).status == 421
        for n in range(600):
            assert api.get("/api/v1/processes", headers={"Host": f"h{n}.example:8000"}).status == 421
        assert 0 < len(api.root._hostVerdicts) <= 256
        assert api.get("/api/v1/processes", headers={"Host": "localhost:8000"}).status == 200
        long = "a" * 300 + ".example:8000"
        assert api.get("/api/v1/processes", headers={"Host": long}).status == 421
        assert not any(key[0] == long.encode() for key in api.root._hostVerdicts)

    def test_local_address_asked_once_per_connection(self, api):
        """Three requests on one connection ask the socket for its own address once (Twisted asked once per request: a getsockname each)."""
        asked = []

        class Counting(StringTransport):
            def getHost(self):
                asked.append(1)
                return super().getHost()

        site = AdminSite(api.root, api.admin, reactor=api.reactor)
        protocol = site.buildProtocol(None)
        transport = Counting(hostAddress=IPv4Address("TCP", "127.0.0.1", 8000),
                             peerAddress=IPv4Address("TCP", "127.0.0.1", 50000))
        protocol.makeConnection(transport)
        request = (b"GET /api/v1/processes HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n"
                   b"Authorization: Bearer " + TOKEN.encode() + b"\r\n\r\n")
        for _ in range(3):
            protocol.dataReceived(request)
        assert transport.value().count(b"HTTP/1.1 200 OK") == 3
        assert len(asked) == 1

    def test_host_checked_before_token(self, api):
        """A foreign Host is refused even without a token (421, not 401)."""
        assert api.get("/metrics", headers={"Host": "evil.example:8000"}, token=False).status == 421

    def test_missing_host(self, api):
        """A request without a Host header is a 400 JSON."""
        status, headers, body = parseRaw(raw(api, b"GET /metrics HTTP/1.0\r\n\r\n").value())
        assert status == 400
        assert headers["content-type"] == "application/json"
        assert body == {"success": False, "error": "missing Host header"}

    def test_malformed_host(self, api):
        """A Host header that is not host[:port] is a 400."""
        assert api.get("/api/v1/processes", headers={"Host": "127.0.0.1:80:80"}).status == 400

    def test_unix_socket_accepts_any_host(self, api):
        """Over a unix socket any Host is accepted (whoever can open the socket is trusted)."""
        transport = raw(api, b"GET /api/v1/processes HTTP/1.1\r\nHost: anything\r\nAuthorization: Bearer "
                             + TOKEN.encode() + b"\r\n\r\n", local=UNIXAddress(b"/tmp/orch.sock"))
        status, _, body = parseRaw(transport.value())
        assert status == 200
        assert [p["name"] for p in body["processes"]] == ["backend", "worker"]


# -- Origin ------------------------------------------------------------------------------------


class TestOrigin:
    def test_foreign_origin_refused(self, api):
        """A request with a foreign Origin is a 403 JSON, even with the token (CSRF)."""
        answer = api.post("/api/v1/admin/backend/stop", headers={"Origin": "https://evil.example"})
        assert answer.status == 403
        assert answer.json["error"] == ("requests from origin 'https://evil.example' are refused; "
                                        "add it to admin.allowed_origins if it should be allowed")
        assert api.orchestrator.processes["backend"].status == "starting"

    def test_no_cors_headers_by_default(self, api):
        """Without an Origin no CORS header is sent."""
        answer = api.get("/api/v1/processes")
        assert not any(h.startswith("access-control-") for h in answer.headers)

    def test_same_origin_allowed(self, api):
        """An Origin that is this very server (a page it serves) is allowed, without CORS headers."""
        answer = api.get("/api/v1/processes", headers={"Origin": "http://127.0.0.1:8000"})
        assert answer.status == 200
        assert not any(h.startswith("access-control-") for h in answer.headers)

    def test_allowed_origin(self):
        """An origin in admin.allowed_origins is allowed and told so with CORS headers."""
        api = ApiHarness(config(admin='  allowed_origins: ["https://ops.example"]'))
        answer = api.get("/api/v1/processes", headers={"Origin": "https://ops.example"})
        assert answer.status == 200
        assert answer.header("access-control-allow-origin") == "https://ops.example"
        assert answer.header("vary") == "Origin"

    def test_preflight(self):
        """A CORS preflight from an allowed origin is answered 204 without a token; others 403."""
        api = ApiHarness(config(admin='  allowed_origins: ["https://ops.example"]'))
        headers = {"Origin": "https://ops.example", "Access-Control-Request-Method": "POST",
                   "Access-Control-Request-Headers": "authorization"}
        answer = api.call("OPTIONS", "/api/v1/admin/backend/restart", headers=headers, token=False)
        assert answer.status == 204
        assert answer.header("access-control-allow-methods") == "GET, POST"
        assert answer.header("access-control-allow-headers") == "Authorization, Content-Type"
        headers["Origin"] = "https://evil.example"
        assert api.call("OPTIONS", "/api/v1/admin/backend/restart", headers=headers,
                        token=False).status == 403


# -- the body cap ------------------------------------------------------------------------------------


class TestBodyCap:
    def test_too_large_body(self, api):
        """A body over admin.max_body_bytes is a 413 JSON and the command does not run."""
        answer = api.post("/api/v1/admin/backend/stop", body=b"x" * 65537)
        assert answer.status == 413
        assert answer.json == {"success": False, "error": "request body (65537 bytes) is larger than "
                                                         "admin.max_body_bytes (65536 bytes)"}
        assert api.orchestrator.processes["backend"].status == "starting"

    def test_refused_before_the_body_is_sent(self, api):
        """The 413 is written as soon as the headers announce the length: no body byte was read."""
        transport = raw(api, b"POST /api/v1/admin/backend/stop HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n"
                             b"Content-Length: 1000000000\r\n\r\n")
        status, headers, body = parseRaw(transport.value())
        assert status == 413
        assert headers["connection"] == "close"
        assert transport.disconnecting
        assert api.orchestrator.processes["backend"].status == "starting"

    def test_no_100_continue_for_a_refused_body(self, api):
        """A client that asks 'Expect: 100-continue' gets the 413, not a 100."""
        transport = raw(api, b"POST /api/v1/admin/reload HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n"
                             b"Expect: 100-continue\r\nContent-Length: 70000\r\n\r\n")
        assert transport.value().startswith(b"HTTP/1.1 413 ")
        assert b"100 Continue" not in transport.value()

    def test_chunked_body_over_the_cap(self, api):
        """A chunked body is refused once it grows past the cap."""
        chunk = b"x" * 40000
        transport = raw(api, b"POST /api/v1/admin/reload HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n"
                             b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
                             b"Transfer-Encoding: chunked\r\n\r\n"
                             + (b"%x\r\n" % len(chunk) + chunk + b"\r\n") * 2 + b"0\r\n\r\n")
        assert transport.value().startswith(b"HTTP/1.1 413 ")
        assert transport.value().count(b"HTTP/1.1") == 1

    def test_body_under_the_cap(self):
        """A body within the cap is read (and, if malformed, a 400)."""
        api = ApiHarness(config(admin="  max_body_bytes: 10"))
        assert api.post("/api/v1/admin/backend/start", body=b'{"a": 1}').status == 400
        assert api.post("/api/v1/admin/backend/start", body=b'{"wait": 1}').status == 413


# -- JSON, whatever happens ------------------------------------------------------------------------------


class TestErrors:
    @pytest.mark.parametrize("path", ["/api", "/api/v1", "/api/v1/admin", "/nope",
                                      "/api/v1/admin/backend/nope", "/api/v1/processes/backend/start/x",
                                      "/api/v1/plugins", "/api/v1/plugins/none"])
    def test_unknown_path(self, api, path):
        """An unknown path is a 404 JSON, never twisted.web's HTML page."""
        answer = api.get(path)
        assert answer.status == 404
        assert answer.header("content-type") == "application/json"
        assert answer.json["success"] is False
        assert answer.json["error"].startswith("no such route: ")

    @pytest.mark.parametrize("method, path, allow", [
        ("GET", "/api/v1/admin/backend/start", "POST"),
        ("DELETE", "/api/v1/processes/backend", "GET, HEAD"),
        ("POST", "/api/v1/processes", "GET, HEAD"),
        ("PUT", "/api/v1/admin/reload", "POST"),
        ("POST", "/metrics", "GET, HEAD"),
        ("POST", "/api/v1/events/stream", "GET"),
    ])
    def test_wrong_method(self, api, method, path, allow):
        """A wrong method is a 405 JSON with an Allow header."""
        answer = api.call(method, path)
        assert answer.status == 405
        assert answer.header("allow") == allow
        assert answer.header("content-type") == "application/json"
        assert answer.json["success"] is False

    def test_head(self, api):
        """HEAD on a GET route answers its headers without a body."""
        answer = api.call("HEAD", "/api/v1/processes")
        assert answer.status == 200
        assert answer.header("content-type") == "application/json"
        assert answer.text == ""

    def test_trailing_slash(self, api):
        """A trailing slash names the same route."""
        assert api.get("/api/v1/processes/").status == 200
        assert api.get("/api/v1/processes/backend/").json["name"] == "backend"

    def test_unexpected_failure_is_a_json_500(self, api, monkeypatch):
        """A handler that fails unexpectedly answers a 500 JSON without a traceback."""
        from orchestrator.web import views

        def broken(snapshot):
            raise RuntimeError("secret internals")

        monkeypatch.setattr(views, "processStatus", broken)
        answer = api.get("/api/v1/processes/backend")
        assert answer.status == 500
        assert answer.json == {"success": False, "error": "internal error (see the orchestrator's log)"}
        assert "secret internals" not in answer.text and "Traceback" not in answer.text

    def test_failure_outside_the_tree_is_a_json_500(self, api, monkeypatch):
        """Even a failure while finding the route answers JSON, not twisted.web's HTML."""
        from orchestrator.web import api as routes

        def broken(self, path, request):
            raise RuntimeError("secret internals")

        monkeypatch.setattr(routes._Processes, "getChild", broken)
        answer = api.get("/api/v1/processes/backend")
        assert answer.status == 500
        assert answer.header("content-type") == "application/json"
        assert "secret internals" not in answer.text
