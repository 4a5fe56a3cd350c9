"""
The admin API's protections, in front of every route.

L{Guard} wraps the resource tree and checks, in this order, before any
route (or a plugin's resource) sees a request:

 1. C{Host} names this server (DNS rebinding): else 421 (400 if missing);
 2. an C{Origin} header, if any, is the server itself or in
    C{admin.allowed_origins} (browser CSRF): else 403; a CORS preflight
    from an allowed origin is answered here (204);
 3. C{Authorization: Bearer <admin.token>}, compared in constant time,
    when a token is configured (C{/metrics} is exempt unless
    C{admin.metrics_requires_token}, and so are the C{public} segments:
    the status page's static files): else 401.

The body cap cannot live in the tree: twisted.web reads and spools the
whole body before it looks for a resource.  L{CappedRequest} refuses an
oversized body (413) as soon as the headers announce it, and never stores
it; for a request that has a body it also runs the guard's checks then,
so a client without the token is refused (401) before it has sent a byte
of its body.  A body that looks like JSON and nests deeper than
C{admin.max_json_depth} is a 400 before any route parses it (Python's
parser would recurse once per level).  L{AdminSite} uses it and
L{orchestrator.web.channel.AdminChannel} (deadlines, the connection cap),
answers JSON even when something fails outside the tree, and never shows
a traceback.
"""

from __future__ import annotations

import hmac
import io
import ipaddress

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.python import log as _legacyLog
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.http import datetimeToLogString
from twisted.web.server import Request, Site

from orchestrator.config._checks import tcpListenAddress
from orchestrator.config.types import AdminConfig
from orchestrator.web._render import ApiError, ErrorResource, writeJSON
from orchestrator.web.channel import AdminChannel, ConnectionCap, RefusedConnection
from orchestrator.web.limits import AdminCounters, jsonTooDeep, rawAnswer

__all__ = ["AdminSite", "CappedRequest", "Guard", "listenerInterface"]

_log = Logger()

#: After refusing a body, how much of it is still read (and thrown away)
#: so the client, busy sending, gets to read the 413 rather than a reset.
_DRAIN_LIMIT = 1024 * 1024

_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def listenerInterface(listen: str) -> str | None:
    """
    The interface a TCP endpoint string binds (C{None} for unix sockets,
    C{""} for all interfaces).
    """
    address = tcpListenAddress(listen)
    return address[0] if address is not None else None


def _splitHost(value: str) -> tuple[str, int | None]:
    """
    C{"[::1]:8000"} -> C{("::1", 8000)}; C{"Example.com"} -> C{("example.com", None)}.

    @raise ValueError: not a host[:port].
    """
    value = value.strip().lower()
    if value.startswith("["):
        name, _, rest = value[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else None
        if rest and port is None:
            raise ValueError(value)
    elif value.count(":") == 1:
        name, port = value.split(":")
    elif ":" in value:  # an IPv6 address must be in brackets
        raise ValueError(value)
    else:
        name, port = value, None
    if port is not None and not port.isdigit():
        raise ValueError(value)
    if not name:
        raise ValueError(value)
    return name.rstrip("."), int(port) if port is not None else None


#: Host verdicts a guard remembers (clients name a handful of Hosts; a
#: client sending a new one per request empties the memory, nothing more),
#: and the longest Host header remembered.
_HOST_VERDICTS = 256
_HOST_VERDICT_MAX_BYTES = 255


def _normalAddress(name: str) -> str:
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return name
    mapped = getattr(address, "ipv4_mapped", None)
    return str(mapped or address)


def _isLoopback(name: str) -> bool:
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return name == "localhost"


class Guard(Resource):
    """
    The root of the admin API: checks every request, then hands it to the
    route tree.

    @param tree: the routes (see L{orchestrator.web.api.buildTree}).
    @param admin: the C{admin} configuration the listener was started with.
    @param counters: where the API's limits count their hits (the site
        serving this root counts there too).
    @param public: first path segments served without a token (the Host
        and Origin checks still apply): static files that hold no state.
    """

    def __init__(self, tree: Resource, admin: AdminConfig, counters: AdminCounters | None = None,
                 public=frozenset()) -> None:
        super().__init__()
        self._tree = tree
        self.counters = counters if counters is not None else AdminCounters()
        self._admin = admin
        self._public = frozenset(public)
        self._token = admin.token.encode("utf-8") if admin.token else None
        interface = listenerInterface(admin.listen)
        self._interface = _normalAddress(interface) if interface not in (None, "", "0.0.0.0", "::") else None
        self._origins = frozenset(o.rstrip("/").lower() for o in admin.allowed_origins)
        self._hostNames = frozenset(h.lower() for h in admin.allowed_hosts)
        #: (Host header, local host, local port, TLS) -> allowed; at most
        #: L{_HOST_VERDICTS} entries, emptied when full.
        self._hostVerdicts: dict[tuple, bool] = {}

    def getChildWithDefault(self, path: bytes, request):
        try:
            preflight = self._check(path, request)
        except ApiError as e:
            return ErrorResource(e)
        if preflight is not None:
            return preflight
        return self._tree.getChildWithDefault(path, request)

    def render(self, request):  # only reached if a request has no path at all
        return self._tree.render(request)

    def refusal(self, path: bytes, request) -> ApiError | None:
        """
        The guard's verdict on a request whose body has not been read yet
        (see L{CappedRequest.gotLength}): the error it would answer, or
        C{None} (a CORS preflight is left to the tree).

        @param path: the request's target as sent (C{/metrics?x=1}).
        """
        first = path.split(b"?", 1)[0].lstrip(b"/").split(b"/", 1)[0]
        try:
            self._check(first, request)
        except ApiError as e:
            return e
        return None

    def _check(self, first: bytes, request):
        self._checkHost(request)
        origin = request.getHeader(b"origin")
        if origin is not None:
            origin = origin.decode("latin-1").rstrip("/").lower()
            if origin in self._origins:
                # A configured cross-origin client: tell the browser (CORS).
                request.setHeader(b"access-control-allow-origin", origin.encode("latin-1"))
                request.setHeader(b"vary", b"Origin")
                if request.method == b"OPTIONS" and request.getHeader(b"access-control-request-method"):
                    return _Preflight()
            elif not self._sameOrigin(origin, request):
                raise ApiError(403, f"requests from origin {origin!r} are refused; "
                                    "add it to admin.allowed_origins if it should be allowed")
        if self._token is not None and first not in self._public and \
                not (first == b"metrics" and not self._admin.metrics_requires_token):
            self._checkToken(request)
        return None

    # -- Host ------------------------------------------------------------------

    def _checkHost(self, request) -> None:
        local = request.getHost()
        if not isinstance(local, (IPv4Address, IPv6Address)):
            return  # a unix socket: whoever can open it may name it anything
        header = request.getHeader(b"host")
        if header is None:
            raise ApiError(400, "missing Host header")
        secure = request.isSecure()
        # The verdict is remembered: every request of a client names the
        # same Host, and parsing addresses was a tenth of a status answer.
        key = (header, local.host, local.port, secure)
        allowed = self._hostVerdicts.get(key)
        if allowed is None:
            try:
                name, port = _splitHost(header.decode("latin-1"))
            except ValueError:
                raise ApiError(400, f"malformed Host header {header.decode('latin-1')!r}")
            allowed = self._hostAllowed(name, port, local, secure)
            if len(header) <= _HOST_VERDICT_MAX_BYTES:
                if len(self._hostVerdicts) >= _HOST_VERDICTS:
                    self._hostVerdicts.clear()
                self._hostVerdicts[key] = allowed
        if allowed:
            return
        raise ApiError(421, f"Host {header.decode('latin-1')!r} does not name this server; "
                            "add it to admin.allowed_hosts if it should")

    def _hostAllowed(self, name: str, port: int | None, local, secure: bool) -> bool:
        if "*" in self._hostNames or name in self._hostNames:
            return True
        if port is not None and f"{name}:{port}" in self._hostNames:
            return True
        if port is None:
            port = 443 if secure else 80
        if port != local.port:
            return False
        name = _normalAddress(name)
        localAddress = _normalAddress(local.host)
        if name in (localAddress, self._interface):
            return True
        return name in _LOOPBACK_NAMES and _isLoopback(localAddress)

    # -- Origin ----------------------------------------------------------------

    def _sameOrigin(self, origin: str, request) -> bool:
        # A page served from this very listener (by a plugin): the Origin's
        # authority is the Host the request was just checked for.
        host = request.getHeader(b"host")
        scheme = "https" if request.isSecure() else "http"
        return host is not None and origin == f"{scheme}://{host.decode('latin-1').lower()}"

    # -- token -----------------------------------------------------------------

    def _checkToken(self, request) -> None:
        header = request.getHeader(b"authorization")
        if header is None:
            raise ApiError(401, "missing token: send 'Authorization: Bearer <token>'",
                           headers={"WWW-Authenticate": 'Bearer realm="orchestrator"'})
        scheme, _, given = header.strip().partition(b" ")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(given.strip(), self._token):
            raise ApiError(401, "invalid token",
                           headers={"WWW-Authenticate": 'Bearer realm="orchestrator", error="invalid_token"'})


class _Preflight(Resource):
    """
    The answer to a CORS preflight from an allowed origin (the guard has
    already set C{Access-Control-Allow-Origin}).
    """

    isLeaf = True

    def render(self, request):
        request.setHeader(b"access-control-allow-methods", b"GET, POST")
        request.setHeader(b"access-control-allow-headers", b"Authorization, Content-Type")
        request.setHeader(b"access-control-max-age", b"600")
        request.setResponseCode(204)
        return b""


class CappedRequest(Request):
    """
    A request that refuses a body larger than the site's C{maxBodyBytes}
    as soon as its length is known, runs the guard before reading any body,
    refuses JSON nested too deeply, and answers JSON if processing fails.

    @ivar refused: an answer was written before the body was read; the
        body is thrown away and the connection closed.
    """

    refused = False
    _received = 0
    _drained = 0

    def gotLength(self, length):
        if length != 0:  # a body is coming: refuse before it is read, if at all
            site = self.channel.site
            cap = site.maxBodyBytes
            if length is not None and length > cap:
                self._refuseBody("body_too_large", self._tooLarge(length, cap))
                if length - cap > _DRAIN_LIMIT:
                    self.channel.closeSoon()
                return
            error = self._guardRefusal(site)
            if error is not None:
                self._refuseBody(None, error)
                return
        super().gotLength(length)

    def _guardRefusal(self, site) -> ApiError | None:
        refusal = getattr(site.resource, "refusal", None)
        if refusal is None:
            return None
        # (The method is set again, the same, when the request is complete.)
        self.method, path = _requestLine(self.channel)
        return refusal(path, self)

    @staticmethod
    def _tooLarge(length: int | None, cap: int) -> ApiError:
        size = f"({length} bytes) " if length is not None else ""
        return ApiError(413, f"request body {size}is larger than admin.max_body_bytes ({cap} bytes)")

    def handleContentChunk(self, data: bytes) -> None:
        if self.refused:
            self._drained += len(data)
            if self._drained > _DRAIN_LIMIT and self.channel is not None:
                self.channel.closeSoon()
            return
        self._received += len(data)
        cap = self.channel.site.maxBodyBytes
        if self._received > cap:  # a chunked body has no length up front
            self._refuseBody("body_too_large", self._tooLarge(None, cap))
            return
        super().handleContentChunk(data)

    def requestReceived(self, command, path, version):
        if self.refused:
            if self.channel is not None:
                self.channel.closeSoon()
            return
        super().requestReceived(command, path, version)

    def _refuseBody(self, reason: str | None, error: ApiError) -> None:
        # There is no request to render yet (no path parsed): write a
        # complete response and close the connection once the client has
        # finished sending, so it can read the answer.
        self.refused = True
        self.content = io.BytesIO()
        self.requestHeaders.removeHeader(b"expect")  # no "100 Continue" for it
        channel = self.channel
        if reason is not None:
            channel.site.counters.count(reason)
        channel.transport.write(rawAnswer(error))
        peer = channel.transport.getPeer()
        _log.warn("admin API: refused a request before its body from {peer}: {status} {error}",
                  peer=getattr(peer, "host", peer), status=error.status, error=error.message)

    def process(self):
        site = self.channel.site
        depth = site.admin.max_json_depth
        if self.content is not None:
            raw = self.content.read()
            self.content.seek(0)
            if jsonTooDeep(raw, depth):
                site.counters.count("json_too_deep")
                self.site = site
                writeJSON(self, ApiError(400, "the request body nests JSON arrays and objects deeper "
                                              f"than admin.max_json_depth ({depth} levels)").answer())
                return
        super().process()

    def processingFailed(self, reason):
        _log.failure("admin API: request failed", failure=reason)
        if not self.startedWriting and not self.finished and not self._disconnected:
            writeJSON(self, ApiError(500, "internal error (see the orchestrator's log)").answer())
        return reason


def _requestLine(channel) -> tuple[bytes, bytes]:
    """
    The method and path of the request whose headers just arrived.

    The guard must judge a request before its body is read, i.e. in
    C{gotLength}, which C{HTTPChannel} calls before C{requestReceived}
    gives the request its C{method} and C{path}.  Only the channel knows
    them then, in private attributes Twisted offers no public way to read:
    this is the one place that reads them.
    """
    return channel._command, channel._path


def _refusedFactory(site) -> RefusedConnection:
    return RefusedConnection(site.connectionCap, site.admin.max_connections, site.reactor)


class AdminSite(Site):
    """
    The admin API's site: bounded connections (L{AdminChannel}, at most
    C{admin.max_connections} of them), capped bodies, JSON errors, no
    tracebacks, no form parsing (the API takes no form data), HTTP/1.1
    only.

    @param root: the guarded tree (see L{orchestrator.web.api.buildRoot});
        its C{counters} are the site's too.
    @param admin: the C{admin} settings.

    @ivar counters: the L{AdminCounters} limits count their hits in.
    @ivar connectionCap: the L{ConnectionCap}.
    """

    requestFactory = CappedRequest
    protocol = AdminChannel
    displayTracebacks = False
    noisy = False

    def __init__(self, root, admin: AdminConfig, reactor=None) -> None:
        super().__init__(root, parsePOSTFormSubmission=False, reactor=reactor,
                         timeout=admin.idle_timeout)
        self.admin = admin
        self.maxBodyBytes = admin.max_body_bytes
        self.counters = getattr(root, "counters", None) or AdminCounters()
        self.connectionCap = ConnectionCap(admin.max_connections, self.counters)
        self._logSecond = None

    def startFactory(self) -> None:
        # Not Site's: it logs every request to the orchestrator's log and
        # refreshes the log's date with a timer every second, for ever (an
        # idle orchestrator would wake up each second).  Requests are
        # logged only with admin.access_log, the date computed when a line
        # is written.
        self._logFile = None
        if self.admin.access_log:
            self._logFile = self._openLogFile(self.logPath) if self.logPath else _legacyLog.logfile

    def log(self, request) -> None:
        if self._logFile is None:
            return
        second = int(self.reactor.seconds())
        if second != self._logSecond:
            self._logSecond = second
            self._logDateTime = datetimeToLogString(second)
        super().log(request)

    def buildProtocol(self, addr):
        cap = self.connectionCap
        if cap.makeRoom():
            return super().buildProtocol(addr)
        self.counters.count("connections")
        if cap.refusing >= cap.limit:
            return None  # not even a 503: the socket is closed at once
        return _refusedFactory(self)
