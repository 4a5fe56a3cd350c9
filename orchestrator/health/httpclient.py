"""
A lean HTTP/1.1 client for health probes.

Why not treq/L{twisted.web.client.Agent}: a probe sends the same small GET
to the same target every few seconds, and the full client stack (a request
object, a connection pool, a factory and log lines per connection, a
header dict per response) was measured to cost about 1 ms of CPU per probe.
Here one L{KeepAliveClient} holds one persistent connection per target and
a probe is one pre-rendered write and an incremental parse of the answer.

What it does: C{GET} over HTTP/1.1 (https through Twisted's public TLS
APIs, verified against the platform's trust roots like C{Agent}), reusing
the connection while the server allows it (C{Connection: close}, HTTP/1.0
and close-delimited bodies end it), reconnecting after a close, retrying
once on a fresh connection when a reused one turns out to be closed before
any byte of the answer; C{Content-Length}, chunked and close-delimited
bodies; interim C{1xx} answers skipped.

What it refuses to buffer (every input has a bound, see L{Limits}): the
status line and the header lines together are at most C{header_bytes}, at
most C{headers} header lines, a chunk-size line at most 1 KiB; crossing one
fails the request with L{LimitExceeded} and closes the connection at once.
At most C{body_bytes} of the body are kept: the response is complete at
that point (C{truncated}) and the connection is closed, the rest unread.
A cancelled request (the probe's timeout) aborts its connection at once, so
a server that drips its answer keeps no descriptor of ours.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple
from urllib.parse import urlsplit

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

__all__ = [
    "DEFAULT_LIMITS", "KeepAliveClient", "LimitExceeded", "Limits", "MalformedResponse",
    "Origin", "Response", "endpointConnector", "parseURL", "renderRequest",
]

#: Longest chunk-size line (size, extensions) accepted in a chunked body.
MAX_CHUNK_LINE = 1024


@dataclass(frozen=True, slots=True)
class Limits:
    """
    What one response may make the client hold.

    @ivar header_bytes: status line and header lines together (and the
        trailers of a chunked body), CRLFs included.
    @ivar headers: header lines (and trailer lines).
    @ivar body_bytes: body bytes kept; the rest is not read.
    """

    header_bytes: int = 16384
    headers: int = 100
    body_bytes: int = 65536


DEFAULT_LIMITS = Limits()


class LimitExceeded(Exception):
    """
    A response crossed one of the L{Limits}; C{limit} names which
    (C{header_bytes}, C{headers}) and C{str()} is the probe's reason.
    """

    def __init__(self, limit: str, message: str) -> None:
        super().__init__(message)
        self.limit = limit


class MalformedResponse(Exception):
    """
    The server's answer is not HTTP/1.x as this client reads it.
    """


class Response(NamedTuple):
    """
    One answer: the status code, the first C{body_bytes} of the body,
    whether the body was longer, and the C{Location} header (for redirects).
    """

    code: int
    body: bytes
    truncated: bool
    location: bytes | None


class Origin(NamedTuple):
    """
    Where requests go: C{scheme} (C{http} or C{https}), C{host}, C{port}.
    """

    scheme: str
    host: str
    port: int


def parseURL(url: str) -> tuple[Origin, str]:
    """
    Split C{url} into its L{Origin} and the request target (path and
    query, C{/} when empty).

    @raise ValueError: not an http(s) URL with a host.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http or https URL: {url!r}")
    port = parts.port or (443 if scheme == "https" else 80)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return Origin(scheme, parts.hostname, port), target


def renderRequest(origin: Origin, target: str, headers) -> bytes:
    """
    The bytes of C{GET target} to C{origin}, rendered once per probe and
    target.  C{headers} (name -> value) are added; a C{Host} among them
    replaces the default one.  CR and LF are refused (the schema refuses
    them too) so a header value cannot smuggle a second request.
    """
    host = origin.host if ":" not in origin.host else f"[{origin.host}]"
    default = 443 if origin.scheme == "https" else 80
    if origin.port != default:
        host += f":{origin.port}"
    lines = [f"GET {target} HTTP/1.1"]
    names = {name.lower() for name in headers}
    if "host" not in names:
        lines.append(f"Host: {host}")
    if "user-agent" not in names:
        lines.append("User-Agent: orchestrator-probe")
    for name, value in headers.items():
        if any(c in name + value for c in "\r\n\0") or not name or ":" in name:
            raise ValueError(f"invalid request header {name!r}")
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


# Parser states.
_STATUS, _HEADERS, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILERS, _UNTIL_CLOSE = range(8)
_LINE_STATES = frozenset((_STATUS, _HEADERS, _CHUNK_SIZE, _CHUNK_END, _TRAILERS))


def _kib(n: int) -> str:
    return f"{n // 1024} KiB" if n % 1024 == 0 and n else f"{n} bytes"


class _Stale(Exception):
    """
    A reused connection was closed before any byte of the answer: the
    server closed it while idle.  Retried once on a fresh connection.
    """


class _HTTP11Connection(Protocol):
    """
    One connection, one request at a time, answers parsed as they arrive.

    The owner (a L{KeepAliveClient}) is told C{_done(self, response)},
    C{_failed(self, failure)} and C{_lost(self)}.
    """

    def __init__(self, owner: KeepAliveClient, limits: Limits) -> None:
        self._owner = owner
        self._limits = limits
        self.busy = False
        self.used = 0
        self._state = _STATUS
        self._buf = b""
        self._socket = None

    # -- the owner's side ---------------------------------------------------

    def send(self, request: bytes) -> None:
        self.busy = True
        self.used += 1
        self._state = _STATUS
        self._buf = b""
        self._received = False
        self._headBytes = 0
        self._headerCount = 0
        self._code = 0
        self._length = -1
        self._chunked = False
        self._close = False
        self._location = None
        self._body: list[bytes] = []
        self._bodyLen = 0
        self._write(request)

    def connectionMade(self) -> None:
        # A plain TCP connection whose buffer is empty takes the request
        # with one send() now, rather than a poll for writability and two
        # epoll_ctl calls per probe; TLS and test transports use write().
        from twisted.internet import tcp  # here: imported after the TLS decision (orchestrator.tls)

        transport = self.transport
        self._socket = transport.socket if type(transport) is tcp.Client else None

    def _write(self, data: bytes) -> None:
        transport = self.transport
        sock = self._socket
        # Writing to the socket directly is only safe when the transport
        # holds nothing unsent.  Twisted offers no public "is the write
        # buffer empty" (IConsumer has none); a plain tcp.Client keeps
        # unsent bytes in dataBuffer and the private _tempDataBuffer.  This
        # is the one use of it, limited to that exact class (checked in
        # connectionMade); any other transport goes through write().
        if (sock is not None and not transport.dataBuffer and not transport._tempDataBuffer
                and not transport.disconnecting):
            try:
                sent = sock.send(data)
            except OSError:
                sent = 0  # EAGAIN, or an error the transport reports itself
            if sent == len(data):
                return
            data = data[sent:]
        transport.write(data)

    def abort(self) -> None:
        """
        Drop the connection at once (nothing more is read or sent).
        """
        self.busy = False
        self._owner = None
        self.transport.abortConnection()

    # -- the transport's side -------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if not self.busy:
            # Bytes nobody asked for: the connection is out of step.
            self.abort()
            return
        self._received = True
        try:
            self._feed(data)
        except (LimitExceeded, MalformedResponse) as e:
            self._finish(Failure(e), reusable=False)

    def connectionLost(self, reason=None) -> None:
        owner, self._owner = self._owner, None
        if owner is None:
            return
        # Forget this connection before anyone is told: a callback may send
        # the next request (a redirect) at once.
        owner._lost(self)
        if self.busy:
            self.busy = False
            if self._state == _UNTIL_CLOSE:
                owner._done(self, self._response(False))
            elif not self._received and self.used > 1:
                owner._failed(self, Failure(_Stale()))
            elif self._received and (reason is None or reason.check(ConnectionDone)):
                owner._failed(self, Failure(MalformedResponse(
                    "connection closed before a complete answer")))
            else:
                owner._failed(self, reason or Failure(ConnectionDone()))

    # -- parsing --------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        buf = self._buf + data if self._buf else data
        pos = 0
        end = len(buf)
        while pos < end:
            state = self._state
            if state in _LINE_STATES:
                nl = buf.find(b"\n", pos)
                if nl < 0:
                    self._partialLine(end - pos)
                    self._buf = buf[pos:]
                    return
                line = buf[pos:nl]
                size = nl + 1 - pos
                pos = nl + 1
                if line.endswith(b"\r"):
                    line = line[:-1]
                if self._line(state, line, size):
                    break  # the response is complete
            elif state == _LENGTH or state == _CHUNK_DATA:
                take = min(self._length, end - pos)
                self._length -= take
                self._keep(buf[pos:pos + take])
                pos += take
                if self._state != state:
                    return  # truncated: finished, the connection dropped
                if self._length == 0:
                    if state == _CHUNK_DATA:
                        self._state = _CHUNK_END
                    else:
                        self._complete()
                        break
            elif state == _UNTIL_CLOSE:
                self._keep(buf[pos:] if pos else buf)
                pos = end
            else:
                return  # finished (not busy any more)
        self._buf = b""
        if pos < end and self.busy is False and self.transport is not None:
            # Bytes after a complete answer: nothing was asked for them.
            self.transport.abortConnection()

    def _partialLine(self, size: int) -> None:
        if self._state in (_STATUS, _HEADERS, _TRAILERS):
            self._checkHead(self._headBytes + size)
        elif size > MAX_CHUNK_LINE:
            raise MalformedResponse("chunk size line too long")

    def _checkHead(self, total: int) -> None:
        if total > self._limits.header_bytes:
            what = "status line" if self._state == _STATUS else "response headers"
            raise LimitExceeded("header_bytes", f"{what} over {_kib(self._limits.header_bytes)}")

    def _line(self, state: int, line: bytes, size: int) -> bool:
        """
        Handle one complete line; return True when the response is complete.
        """
        if state == _STATUS or state == _HEADERS or state == _TRAILERS:
            self._headBytes += size
            self._checkHead(self._headBytes)
        if state == _STATUS:
            self._statusLine(line)
            return False
        if state == _HEADERS:
            if line:
                self._header(line)
                return False
            return self._endOfHead()
        if state == _CHUNK_SIZE:
            if len(line) > MAX_CHUNK_LINE:
                raise MalformedResponse("chunk size line too long")
            digits = line.split(b";", 1)[0].strip()
            try:
                size = int(digits, 16)
            except ValueError:
                raise MalformedResponse(f"bad chunk size {digits[:20]!r}") from None
            if size < 0 or not digits.isalnum():
                raise MalformedResponse(f"bad chunk size {digits[:20]!r}")
            if size == 0:
                self._state = _TRAILERS
            else:
                self._length = size
                self._state = _CHUNK_DATA
            return False
        if state == _CHUNK_END:
            if line:
                raise MalformedResponse("chunk not followed by CRLF")
            self._state = _CHUNK_SIZE
            return False
        # _TRAILERS
        if line:
            self._countHeader()
            return False
        self._complete()
        return True

    def _statusLine(self, line: bytes) -> None:
        parts = line.split(None, 2)
        if (len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or len(parts[1]) != 3
                or not parts[1].isdigit()):
            raise MalformedResponse(f"malformed status line {line[:40]!r}")
        self._code = int(parts[1])
        if parts[0] == b"HTTP/1.0":
            self._close = True
        self._state = _HEADERS

    def _countHeader(self) -> None:
        self._headerCount += 1
        if self._headerCount > self._limits.headers:
            raise LimitExceeded("headers", f"over {self._limits.headers} response headers")

    def _header(self, line: bytes) -> None:
        self._countHeader()
        if line[:1] in (b" ", b"\t"):
            return  # obsolete line folding: a continuation of a header we do not read
        name, sep, value = line.partition(b":")
        if not sep:
            raise MalformedResponse(f"malformed header line {line[:40]!r}")
        name = name.strip().lower()
        if name == b"content-length":
            value = value.strip()
            if not value.isdigit() or (self._length >= 0 and int(value) != self._length):
                raise MalformedResponse("bad Content-Length")
            self._length = int(value)
        elif name == b"transfer-encoding":
            codings = [c.strip() for c in value.lower().split(b",")]
            if codings[-1] != b"chunked":
                self._close = True  # the body ends with the connection
            else:
                self._chunked = True
        elif name == b"connection":
            # HTTP/1.0 keep-alive is not honoured: such a connection is
            # closed after the answer (simpler, and rare).
            if b"close" in [t.strip() for t in value.lower().split(b",")]:
                self._close = True
        elif name == b"location":
            self._location = value.strip()

    def _endOfHead(self) -> bool:
        code = self._code
        if 100 <= code < 200 and code != 101:
            self._state = _STATUS  # interim answer; the real one follows
            self._headerCount = 0
            return False
        if code == 204 or code == 304 or 100 <= code < 200:
            self._length = 0
            self._state = _LENGTH
            self._complete()
            return True
        if self._chunked:
            self._length = -1
            self._state = _CHUNK_SIZE
        elif self._length >= 0:
            self._state = _LENGTH
            if self._length == 0:
                self._complete()
                return True
        else:
            self._close = True
            self._state = _UNTIL_CLOSE
        return False

    def _keep(self, data: bytes) -> None:
        room = self._limits.body_bytes - self._bodyLen
        if len(data) > room:
            if room > 0:
                self._body.append(data[:room])
                self._bodyLen += room
            self._finish(self._response(True), reusable=False)
            return
        if data:
            self._body.append(data)
            self._bodyLen += len(data)

    def _response(self, truncated: bool) -> Response:
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        return Response(self._code, body, truncated, self._location)

    def _complete(self) -> None:
        self._finish(self._response(False), reusable=not self._close)

    def _finish(self, result, reusable: bool) -> None:
        owner = self._owner
        self.busy = False
        self._state = -1
        self._body = []
        if not reusable:
            self._owner = None
            self.transport.abortConnection()
        if owner is None:
            return
        if not reusable:
            owner._lost(self)  # before the callbacks, which may send again
        if isinstance(result, Failure):
            owner._failed(self, result)
        else:
            owner._done(self, result)


#: C{connect(protocol)} -> Deferred firing with the connected protocol.
Connector = Callable[[Protocol], Deferred]


def endpointConnector(reactor, origin: Origin, timeout: float) -> Connector:
    """
    Connect to C{origin} with L{HostnameEndpoint} (both address families,
    C{timeout} to connect), wrapped in TLS for https with
    L{optionsForClientTLS} (the platform's trust roots, host name checked).
    """
    from twisted.internet.endpoints import HostnameEndpoint

    endpoint = HostnameEndpoint(reactor, origin.host, origin.port, timeout=timeout)
    if origin.scheme == "https":
        from twisted.internet.endpoints import wrapClientTLS
        from twisted.internet.ssl import optionsForClientTLS

        endpoint = wrapClientTLS(optionsForClientTLS(origin.host), endpoint)
    return lambda protocol: endpoint.connect(_OneProtocol(protocol))


class _OneProtocol(Factory):
    """
    Builds the given protocol once, quietly: unlike C{connectProtocol}'s
    factory it logs no C{Starting factory} line per connection.
    """

    noisy = False

    def __init__(self, protocol: Protocol) -> None:
        self._protocol = protocol

    def buildProtocol(self, addr) -> Protocol:
        return self._protocol


class KeepAliveClient:
    """
    Requests to one L{Origin} over one persistent connection, one at a time.

    @param connect: see L{Connector}; tests connect the protocol in memory.
    @param limits: the L{Limits} of each response.
    """

    def __init__(self, connect: Connector, limits: Limits = DEFAULT_LIMITS) -> None:
        self._connect = connect
        self._limits = limits
        self._conn: _HTTP11Connection | None = None
        self._connecting: Deferred | None = None
        self._waiting: Deferred | None = None
        self._request = b""
        self._retried = False
        #: Connections opened so far (a kept-alive one is opened once).
        self.connections = 0

    def get(self, request: bytes) -> Deferred:
        """
        Send C{request} (from L{renderRequest}); the Deferred fires with a
        L{Response}, or fails (L{LimitExceeded}, L{MalformedResponse}, a
        connection error).  Cancelling it aborts the connection at once.
        """
        if self._waiting is not None:
            raise RuntimeError("a request is already in flight")
        d = self._waiting = Deferred(self._cancel)
        self._request = request
        self._retried = False
        conn = self._conn
        if conn is not None and not conn.busy:
            conn.send(request)
        else:
            self._open()
        return d

    def close(self) -> Deferred:
        """
        Drop the connection (and any request in flight); fires once it is
        gone.
        """
        waiting, self._waiting = self._waiting, None
        if self._connecting is not None:
            connecting, self._connecting = self._connecting, None
            connecting.cancel()
        conn, self._conn = self._conn, None
        if conn is not None:
            d: Deferred = Deferred()
            conn._owner = _Closing(d)
            conn.busy = False
            conn.transport.abortConnection()
        else:
            d = succeed(None)
        if waiting is not None:
            waiting.errback(CancelledError())
        return d

    # -- internals -------------------------------------------------------------

    def _open(self) -> None:
        self._conn = None
        protocol = _HTTP11Connection(self, self._limits)
        self.connections += 1
        d = self._connecting = self._connect(protocol)
        d.addCallbacks(self._connected, self._connectFailed)

    def _connected(self, protocol: _HTTP11Connection) -> None:
        self._connecting = None
        if self._waiting is None:
            protocol.abort()  # nobody wants it any more
            return
        self._conn = protocol
        protocol.send(self._request)

    def _connectFailed(self, failure: Failure) -> None:
        self._connecting = None
        self._fire(failure)

    def _cancel(self, d: Deferred) -> None:
        self._waiting = None
        if self._connecting is not None:
            connecting, self._connecting = self._connecting, None
            connecting.cancel()
        conn = self._conn
        if conn is not None and conn.busy:
            self._conn = None
            conn.abort()

    def _fire(self, result) -> None:
        d, self._waiting = self._waiting, None
        if d is None:
            return
        if isinstance(result, Failure):
            d.errback(result)
        else:
            d.callback(result)

    # Told by the connection:

    def _done(self, conn, response: Response) -> None:
        self._fire(response)

    def _failed(self, conn, failure: Failure) -> None:
        if self._conn is conn:
            self._conn = None
        if failure.check(_Stale) and self._waiting is not None and not self._retried:
            self._retried = True
            self._open()
            return
        if failure.check(_Stale):
            failure = Failure(ConnectionDone())  # "Connection closed before an answer"
        self._fire(failure)

    def _lost(self, conn) -> None:
        if self._conn is conn:
            self._conn = None


class _Closing:
    """
    The owner of a connection being closed: fires C{d} when it is gone.
    """

    def __init__(self, d: Deferred) -> None:
        self._d = d

    def _done(self, conn, response) -> None:
        pass

    def _failed(self, conn, failure) -> None:
        pass

    def _lost(self, conn) -> None:
        if not self._d.called:
            self._d.callback(None)
