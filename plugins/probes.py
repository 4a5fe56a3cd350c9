"""
Built-in probe kinds: C{http}, C{tcp} and C{exec}.

Each is constructed as C{kind(config, reactor)} with the process's
L{orchestrator.config.types.HealthConfig}; C{check()} returns a Deferred
L{ProbeResult}.  The scheduler enforces C{health.timeout} by cancelling
that Deferred, and each kind makes cancellation real: the HTTP connection is
aborted, the TCP attempt dropped, the exec probe's process group killed.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
from urllib.parse import urljoin, urlsplit

from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.protocol import Protocol, ProcessProtocol

from orchestrator.health.httpclient import (DEFAULT_LIMITS, KeepAliveClient, LimitExceeded, Limits,
                                            MalformedResponse, Response, endpointConnector, parseURL,
                                            renderRequest)
from orchestrator.plugin import ProbeResult, hookimpl
from orchestrator.supervision.spawn import killGroup, sessionSpawner

__all__ = ["HTTPProbe", "TCPProbe", "ExecProbe"]


def _statusRanges(spec) -> list[tuple[int, int]]:
    ranges = []
    for item in spec:
        if isinstance(item, int):
            ranges.append((item, item))
        else:
            low, _, high = str(item).partition("-")
            ranges.append((int(low), int(high or low)))
    return ranges


_REDIRECTS = frozenset((301, 302, 303, 307, 308))
#: Redirects followed in one check (C{follow_redirects}), and origins a
#: probe keeps a connection to (its own plus redirect targets).
_MAX_REDIRECTS = 10
_MAX_ORIGINS = 4


class HTTPProbe:
    """
    GET C{url} + C{path}; healthy when the status is in C{expect_status}
    and, if given, the body contains C{expect_body} and the JSON body has
    C{expect_json}'s fields with those values.  Redirects are not followed
    unless C{follow_redirects}.

    Every probe of a process goes over one persistent keep-alive connection
    (L{orchestrator.health.httpclient}, reconnected after a close or a
    backend restart), so a probe costs one write and one parse.  The
    answer is bounded: status line and headers together at most
    C{max_header_bytes}, at most C{max_headers} header lines (over either:
    unhealthy, C{response headers over 16 KiB}), and only the first
    C{max_body_bytes} of the body are read and judged (the connection is
    then closed, the rest unread).  A probe cancelled by its timeout aborts
    its connection at once.

    @param connect: C{connect(origin, protocol)} -> Deferred protocol; tests
        connect in memory.  Default: TCP (TLS for https) with the reactor.
    """

    name = "http"
    config_schema = {
        "type": "object",
        "properties": {
            "path": {"type": "string", "default": "/health",
                     "description": "http probe: path requested on the process's url."},
            "expect_status": {
                "type": "array",
                "items": {"anyOf": [
                    {"type": "integer", "minimum": 100, "maximum": 599},
                    {"type": "string", "pattern": "^[1-5][0-9][0-9](-[1-5][0-9][0-9])?$"},
                ]},
                "minItems": 1,
                "default": ["200-399"],
                "description": "http probe: healthy status codes or ranges (\"200-399\").",
            },
            "expect_body": {"type": ["string", "null"], "default": None,
                            "description": "http probe: a substring the body must contain."},
            "expect_json": {"type": ["object", "null"], "default": None,
                            "description": "http probe: top-level JSON fields the body must have, with these values."},
            "follow_redirects": {"type": "boolean", "default": False,
                                 "description": "http probe: follow redirects (at most 10)."},
            "max_body_bytes": {"type": "integer", "minimum": 0, "default": DEFAULT_LIMITS.body_bytes,
                               "description": "http probe: most body bytes read and judged; a longer "
                                              "body is cut there (counted) and its connection closed."},
            "max_header_bytes": {"type": "integer", "minimum": 256, "maximum": 1048576,
                                 "default": DEFAULT_LIMITS.header_bytes,
                                 "description": "http probe: most bytes of status line and response "
                                                "headers together; more is an unhealthy result "
                                                "(response headers over N KiB)."},
            "max_headers": {"type": "integer", "minimum": 1, "maximum": 10000,
                            "default": DEFAULT_LIMITS.headers,
                            "description": "http probe: most response header lines; more is an "
                                           "unhealthy result."},
            "headers": {"type": "object",
                        "propertyNames": {"pattern": "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"},
                        "additionalProperties": {"type": "string", "pattern": "^[^\\r\\n\\x00]*$"},
                        "default": {}, "description": "http probe: extra request headers."},
        },
    }

    def __init__(self, config, reactor, connect=None) -> None:
        options = config.options
        path = options.get("path", "/health")
        self.url = (config.url or "").rstrip("/") + "/" + path.lstrip("/")
        self._expect = _statusRanges(options.get("expect_status", ["200-399"]))
        self._body = options.get("expect_body")
        self._json = options.get("expect_json")
        self._redirects = options.get("follow_redirects", False)
        self._max = options.get("max_body_bytes", DEFAULT_LIMITS.body_bytes)
        self._limits = Limits(header_bytes=options.get("max_header_bytes", DEFAULT_LIMITS.header_bytes),
                              headers=options.get("max_headers", DEFAULT_LIMITS.headers),
                              body_bytes=self._max)
        self._headers = dict(options.get("headers", {}))
        if connect is None:
            timeout = config.timeout

            def connect(origin, protocol):
                return endpointConnector(reactor, origin, timeout)(protocol)
        self._connect = connect
        self._clients: dict = {}
        try:
            self._origin, target = parseURL(self.url)
            self._request = renderRequest(self._origin, target, self._headers)
        except ValueError as e:
            self._origin, self._request, self._invalid = None, b"", str(e)
        else:
            self._invalid = None

    def _client(self, origin) -> KeepAliveClient:
        client = self._clients.get(origin)
        if client is None:
            if len(self._clients) >= _MAX_ORIGINS:
                # A redirect to yet another origin: forget the oldest
                # redirect target (never the probe's own).
                oldest = next(o for o in self._clients if o != self._origin)
                self._clients.pop(oldest).close()
            connect = self._connect
            client = self._clients[origin] = KeepAliveClient(
                lambda protocol: connect(origin, protocol), self._limits)
        return client

    def check(self) -> Deferred:
        if self._invalid is not None:
            return succeed(ProbeResult(False, self._invalid))
        d = self._client(self._origin).get(self._request)
        return d.addCallbacks(self._response, self._failed, (self._origin, 0))

    def _response(self, response: Response, origin, hops: int):
        code = response.code
        if self._redirects and code in _REDIRECTS and response.location:
            if hops >= _MAX_REDIRECTS:
                return ProbeResult(False, f"HTTP {code}: more than {_MAX_REDIRECTS} redirects")
            try:
                base = f"{origin.scheme}://{origin.host}:{origin.port}"
                nextOrigin, target = parseURL(urljoin(base, response.location.decode("latin-1")))
                request = renderRequest(nextOrigin, target, self._headers)
            except ValueError as e:
                return ProbeResult(False, f"HTTP {code}: bad redirect: {e}")
            d = self._client(nextOrigin).get(request)
            return d.addCallbacks(self._response, self._failed, (nextOrigin, hops + 1))
        result = self._judge(code, response.body)
        if response.truncated:
            return ProbeResult(result.healthy, result.reason, result.detail, limit="body_bytes")
        return result

    def _failed(self, failure):
        e = failure.value
        if isinstance(e, LimitExceeded):
            return ProbeResult(False, str(e), limit=e.limit)
        if isinstance(e, MalformedResponse):
            return ProbeResult(False, f"malformed answer: {e}")
        return failure

    def _judge(self, code: int, body: bytes) -> ProbeResult:
        excerpt = body[:200].decode("utf-8", errors="replace")
        if not any(low <= code <= high for low, high in self._expect):
            return ProbeResult(False, f"HTTP {code}", excerpt)
        if self._body is not None and self._body.encode("utf-8") not in body:
            return ProbeResult(False, f"HTTP {code}: body lacks {self._body!r}", excerpt)
        if self._json is not None:
            try:
                document = json.loads(body)
            except ValueError:
                return ProbeResult(False, f"HTTP {code}: body is not JSON", excerpt)
            for key, wanted in self._json.items():
                got = document.get(key) if isinstance(document, dict) else None
                if got != wanted:
                    return ProbeResult(False, f"HTTP {code}: {key} is {got!r}, not {wanted!r}", excerpt)
        return ProbeResult(True, f"HTTP {code}", excerpt)

    def close(self) -> Deferred:
        """
        Close every connection; fires once they are gone.
        """
        clients, self._clients = list(self._clients.values()), {}
        return DeferredList([client.close() for client in clients], consumeErrors=True)


class TCPProbe:
    """
    Healthy when a TCP connection to C{host}:C{port} (default: the
    process's url) is accepted.
    """

    name = "tcp"
    config_schema = {
        "type": "object",
        "properties": {
            "host": {"type": ["string", "null"], "default": None,
                     "description": "tcp probe: host (default: from url)."},
            "port": {"type": ["integer", "null"], "minimum": 1, "maximum": 65535, "default": None,
                     "description": "tcp probe: port (default: from url)."},
        },
    }

    def __init__(self, config, reactor) -> None:
        from twisted.internet.endpoints import HostnameEndpoint  # after the TLS decision (orchestrator.tls)

        parts = urlsplit(config.url or "")
        self.host = config.options.get("host") or parts.hostname or "127.0.0.1"
        self.port = config.options.get("port") or parts.port or (443 if parts.scheme == "https" else 80)
        self._endpoint = HostnameEndpoint(reactor, self.host, self.port, timeout=config.timeout)

    def check(self) -> Deferred:
        from twisted.internet.endpoints import connectProtocol

        def connected(protocol):
            protocol.transport.loseConnection()
            return ProbeResult(True, f"connected to {self.host}:{self.port}")

        return connectProtocol(self._endpoint, Protocol()).addCallback(connected)


class _ExecProtocol(ProcessProtocol):
    """
    Keeps the last C{cap} bytes of each stream (the end of the output is
    what explains a failure) and ends the probe's process group once the
    probe itself exited, so a background child holding the pipes cannot
    delay the result or outlive the check.
    """

    def __init__(self, cap: int, killGroup) -> None:
        self.cap = cap
        self.output = {1: b"", 2: b""}
        self.pid: int | None = None
        self.done: Deferred = Deferred()
        self._exited = None
        self._killGroup = killGroup

    def connectionMade(self):
        # Twisted reaps a child that is already gone from inside the
        # spawn, before the transport is returned (and it then forgets the
        # pid): a fast probe on a loaded host exits here, and its
        # background children must still be ended.
        self.pid = self.transport.pid

    def childDataReceived(self, fd, data):
        if fd in self.output and self.cap:
            self.output[fd] = (self.output[fd] + data)[-self.cap:]

    def processExited(self, reason):
        self._exited = reason.value
        if self.pid is not None:
            self._killGroup(self.pid, signal.SIGKILL)

    def processEnded(self, reason):
        if not self.done.called:
            self.done.callback(self._exited if self._exited is not None else reason.value)


class ExecProbe:
    """
    Run C{command} (an argv list, or a string split like a shell would,
    or run by C{/bin/sh -c} when C{shell} is true); exit 0 is healthy.
    The last C{max_output_bytes} of each stream are kept as the result's
    detail, and the last line of stderr (else stdout) joins the reason
    (C{exit 2: database unreachable}).  The probe runs in its own session:
    on timeout, and once it exited, its process group is killed.

    @param spawner: see L{orchestrator.supervision.spawn.sessionSpawner} (tests inject
        a fake).
    @param killGroup: C{killGroup(pgid, signal)}.
    """

    name = "exec"
    config_schema = {
        "type": "object",
        "required": ["command"],
        "properties": {
            "command": {
                "anyOf": [{"type": "array", "items": {"type": "string"}, "minItems": 1},
                          {"type": "string", "minLength": 1}],
                "description": "exec probe: argv list, or a shell command string with shell: true.",
            },
            "shell": {"type": "boolean", "default": False,
                      "description": "exec probe: run command through /bin/sh -c."},
            "max_output_bytes": {"type": "integer", "minimum": 0, "default": 4096,
                                 "description": "exec probe: output kept per stream."},
        },
    }

    def __init__(self, config, reactor, spawner=None, killGroup=killGroup) -> None:
        options = config.options
        command = options["command"]
        if options.get("shell"):
            self.argv = ["/bin/sh", "-c", command if isinstance(command, str) else shlex.join(command)]
        else:
            self.argv = shlex.split(command) if isinstance(command, str) else list(command)
        self._cap = options.get("max_output_bytes", 4096)
        self._spawn = spawner or sessionSpawner(reactor)
        self._killGroup = killGroup
        # The supervisor hands over the process's own environment (never
        # the orchestrator's secrets); a bare PATH when used on its own.
        self._env = dict(config.env) if config.env else {"PATH": os.environ.get("PATH", os.defpath)}

    def check(self) -> Deferred:
        protocol = _ExecProtocol(self._cap, self._killGroup)
        transport = self._spawn(protocol, self.argv[0], self.argv, self._env, None)
        pid = protocol.pid
        transport.closeStdin()  # a probe reading stdin gets EOF, not a hang

        def cancel(d):
            if pid is not None:
                self._killGroup(pid, signal.SIGKILL)

        result: Deferred = Deferred(cancel)

        def ended(reason):
            if result.called:
                return
            code = getattr(reason, "exitCode", None)
            stdout, stderr = (protocol.output[fd].decode("utf-8", "replace").strip() for fd in (1, 2))
            detail = "\n".join(text for text in (stdout, stderr) if text)
            # The reason is one line: the last line of stderr (or stdout).
            lines = (stderr or stdout).splitlines()
            tail = lines[-1].strip()[-200:] if lines else ""
            if code == 0:
                result.callback(ProbeResult(True, "exit 0", detail))
            elif getattr(reason, "signal", None) is not None:
                result.callback(ProbeResult(False, f"killed by signal {reason.signal}", detail))
            else:
                result.callback(ProbeResult(False, f"exit {code}: {tail}" if tail else f"exit {code}", detail))

        protocol.done.addCallback(ended)
        return result


@hookimpl
def register_probe_kinds():
    return [HTTPProbe, TCPProbe, ExecProbe]
