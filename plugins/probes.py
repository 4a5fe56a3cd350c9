"""
Built-in probe kinds: C{http}, C{tcp} and C{exec}.

Each is constructed as C{kind(config, reactor)} with the process's
L{orchestrator.config.types.HealthConfig}; C{check()} returns a Deferred
L{ProbeResult}.  The scheduler enforces C{health.timeout} by cancelling
that Deferred, and each kind makes cancellation real: the HTTP request is
aborted, the TCP attempt dropped, the exec probe's process group killed.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol
from twisted.internet.protocol import Protocol, ProcessProtocol

from orchestrator.plugin import ProbeResult, hookimpl
from orchestrator.supervision.spawn import killGroup, sessionSpawner

__all__ = ["HTTPProbe", "TCPProbe", "ExecProbe"]


class _BodyTooLong(Exception):
    pass


def _statusRanges(spec) -> list[tuple[int, int]]:
    ranges = []
    for item in spec:
        if isinstance(item, int):
            ranges.append((item, item))
        else:
            low, _, high = str(item).partition("-")
            ranges.append((int(low), int(high or low)))
    return ranges


def _quietFactory():
    from twisted.web.client import _HTTP11ClientFactory

    class QuietClientFactory(_HTTP11ClientFactory):
        noisy = False

    return QuietClientFactory


class HTTPProbe:
    """
    GET C{url} + C{path}; healthy when the status is in C{expect_status}
    and, if given, the body contains C{expect_body} and the JSON body has
    C{expect_json}'s fields with those values.  Redirects are not followed
    unless C{follow_redirects}; at most C{max_body_bytes} of the body are
    read.  Connections are kept in a persistent pool, which reconnects
    after a backend restart.
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
                                 "description": "http probe: follow redirects."},
            "max_body_bytes": {"type": "integer", "minimum": 0, "default": 65536,
                               "description": "http probe: most body bytes read."},
            "headers": {"type": "object", "additionalProperties": {"type": "string"},
                        "default": {}, "description": "http probe: extra request headers."},
        },
    }

    def __init__(self, config, reactor, client=None) -> None:
        options = config.options
        path = options.get("path", "/health")
        self.url = (config.url or "").rstrip("/") + "/" + path.lstrip("/")
        self._expect = _statusRanges(options.get("expect_status", ["200-399"]))
        self._body = options.get("expect_body")
        self._json = options.get("expect_json")
        self._redirects = options.get("follow_redirects", False)
        self._max = options.get("max_body_bytes", 65536)
        self._headers = {k: [v] for k, v in options.get("headers", {}).items()}
        self._pool = None
        if client is None:
            from treq.client import HTTPClient
            from twisted.web.client import Agent, HTTPConnectionPool

            self._pool = HTTPConnectionPool(reactor, persistent=True)
            self._pool._factory = _quietFactory()  # no log line per connection
            self._pool.maxPersistentPerHost = 1
            self._pool.retryAutomatically = True
            client = HTTPClient(Agent(reactor, pool=self._pool, connectTimeout=config.timeout))
        self._client = client

    def check(self) -> Deferred:
        d = self._client.get(self.url, headers=self._headers, allow_redirects=self._redirects)
        return d.addCallback(self._response)

    def _response(self, response):
        import treq

        chunks: list[bytes] = []
        size = [0]

        def collector(data: bytes) -> None:
            chunks.append(data)
            size[0] += len(data)
            if size[0] > self._max:
                raise _BodyTooLong()

        def judge(_):
            body = b"".join(chunks)[: self._max]
            return self._judge(response.code, body)

        def tooLong(failure):
            failure.trap(_BodyTooLong)
            return judge(None)

        return treq.collect(response, collector).addCallbacks(judge, tooLong)

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

    def close(self):
        if self._pool is not None:
            return self._pool.closeCachedConnections()


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
        parts = urlsplit(config.url or "")
        self.host = config.options.get("host") or parts.hostname or "127.0.0.1"
        self.port = config.options.get("port") or parts.port or (443 if parts.scheme == "https" else 80)
        self._endpoint = HostnameEndpoint(reactor, self.host, self.port, timeout=config.timeout)

    def check(self) -> Deferred:
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
        pid = protocol.pid = transport.pid
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
