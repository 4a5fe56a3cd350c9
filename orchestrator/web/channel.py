"""
The admin API's connections: each one bounded in time and size, and the
number of them capped.

Twisted's L{HTTPChannel} bounds a request's head in bytes (16 KiB) and
count (500 headers), and closes a connection that is silent for the
site's timeout; but any byte resets that timer, so a client sending one
byte every few seconds holds its connection, and a reactor-wide number of
them, forever (a slowloris).  L{AdminChannel} adds:

 - a deadline for the request line and headers (C{admin.header_timeout},
   from the first byte of a request) and one for the body
   (C{admin.body_timeout}, from the end of the headers): 408, then closed;
 - at most L{MAX_HEADERS} header lines: 431;
 - JSON answers for what Twisted's parser refuses (its own are bare
   C{400 Bad Request} lines);
 - every one of these counted (L{orchestrator.web.limits.AdminCounters}),
   and the connection aborted if the client does not take its answer
   within L{ABORT_GRACE} seconds.

L{ConnectionCap} caps the open connections (C{admin.max_connections}):
at the cap a new connection closes the oldest idle one (between requests,
or still sending its request), and if every connection is busy with a
request (a command being carried out, an event stream) the new one gets a
503 from L{RefusedConnection} and is closed.
"""

from __future__ import annotations

from twisted.internet.interfaces import IHalfCloseableProtocol, ISSLTransport
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.web.http import HTTPChannel
from twisted.web.http_headers import Headers
from zope.interface import implementer

from orchestrator.web._render import ApiError
from orchestrator.web.limits import ABORT_GRACE, MAX_HEADER_BYTES, MAX_HEADERS, rawAnswer

__all__ = ["AdminChannel", "ConnectionCap", "RefusedConnection"]

_log = Logger()

#: How early an alarm may ring and still count as on time (a float due
#: date and the reactor's float clock may differ in the last bit).
_DUE_SLACK = 1e-6

#: Bytes a refused connection may still send (and have thrown away) while
#: it reads its 503.
_REFUSED_READ_LIMIT = 65536


class AdminChannel(HTTPChannel):
    """
    An HTTP/1.1 connection to the admin API with deadlines, counted
    refusals and JSON errors (see the module docstring).

    Its C{site} is an L{orchestrator.web.security.AdminSite}: the limits
    come from C{site.admin}, the counters are C{site.counters}, and the
    connection cap is C{site.connectionCap}.

    @ivar closing: the API has decided to close this connection (it no
        longer counts against the cap).
    @ivar since: the reactor time it became idle or began receiving its
        current request (the cap closes the oldest first).
    """

    maxHeaders = MAX_HEADERS
    totalHeadersSize = MAX_HEADER_BYTES
    MAX_LENGTH = MAX_HEADER_BYTES
    abortTimeout = ABORT_GRACE

    closing = False
    since = 0.0
    _phase: str | None = None  # "header" or "body": the deadline running

    # -- state the connection cap reads ---------------------------------------------

    @property
    def busy(self) -> bool:
        """
        Whether a request is being carried out (its answer not finished).
        """
        return self._handlingRequest

    @property
    def receiving(self) -> bool:
        """
        Whether part of a request has come in and the rest has not.
        """
        return self._phase is not None

    def _now(self) -> float:
        return self.site.reactor.seconds()

    _host = None

    def getHost(self):
        # A connected socket's own address never changes, but Twisted asks
        # the kernel (getsockname) again for every request.
        if self._host is None:
            self._host = super().getHost()
        return self._host

    def writeHeaders(self, version, code, reason, headers):
        # One write of the whole head, instead of Twisted's writeSequence of
        # some thirty pieces that the transport type-checks one by one.
        # (Request.write always passes its own Headers, already sanitised.)
        if not isinstance(headers, Headers):
            return super().writeHeaders(version, code, reason, headers)
        head = [b"%s %s %s\r\n" % (version, code, reason)]
        head += [b"%s: %s\r\n" % (name, value)
                 for name, values in headers.getAllRawHeaders() for value in values]
        head.append(b"\r\n")
        self.transport.write(b"".join(head))

    # -- connection ----------------------------------------------------------------------

    def connectionMade(self):
        super().connectionMade()
        self.since = self._now()
        self.site.connectionCap.opened(self)

    def connectionLost(self, reason):
        self._disarm()
        self.site.connectionCap.closed(self)
        super().connectionLost(reason)

    def dataReceived(self, data):
        if self.closing:
            return
        if self._phase is None and not self._handlingRequest:
            self._startDeadline("header")
        super().dataReceived(data)

    def rawDataReceived(self, data):
        super().rawDataReceived(data)
        # Twisted stops reading a pipelining client only while the answer
        # can be written; one that does not read its answer (an event
        # stream) and sends on would grow this buffer without end.
        if self._handlingRequest and sum(map(len, self._dataBuffer)) > self._optimisticEagerReadSize:
            self._networkProducer.pauseProducing()

    # -- the request's head and body -------------------------------------------------------

    def lineReceived(self, line):
        if self._receivedHeaderSize + len(line) > self.totalHeadersSize:
            return self._headTooLarge()
        return super().lineReceived(line)

    def lineLengthExceeded(self, line):
        return self._headTooLarge()

    def _headTooLarge(self):
        self.refuse("headers_too_large", ApiError(
            431, f"request line and headers are larger than {MAX_HEADER_BYTES} bytes"))

    def headerReceived(self, line):
        if self._receivedHeaderCount >= self.maxHeaders:
            return self.refuse("too_many_headers", ApiError(
                431, f"more than {MAX_HEADERS} header lines in one request"))
        return super().headerReceived(line)

    def allHeadersReceived(self):
        self._stopDeadline()
        super().allHeadersReceived()
        if self.length != 0 and not self.closing:
            self._startDeadline("body")

    def allContentReceived(self):
        # Before the request runs: it may finish at once and the next
        # pipelined request start its own deadline.
        self._stopDeadline()
        self.since = self._now()
        super().allContentReceived()

    def requestDone(self, request):
        self.since = self._now()
        super().requestDone(request)

    def _respondToBadRequestAndDisconnect(self):
        self.refuse("malformed", ApiError(400, "malformed HTTP request"))

    # -- deadlines --------------------------------------------------------------------------
    #
    # Twisted's TimeoutMixin cancels its timer when a request starts and
    # makes a new one when it ends, and each phase deadline would be one
    # more: four timer heap operations per request on a keep-alive
    # connection.  Here one alarm per connection serves the idle timeout
    # and the phase deadlines: starting or stopping one only writes down
    # when it is due, and the alarm is moved only when something is due
    # sooner than it rings.  When it rings it acts on what is really due
    # and sets itself for the next thing, if any.

    _alarm = None
    _idleDue: float | None = None
    _phaseDue: float | None = None
    _phaseSeconds = 0.0

    def setTimeout(self, period):
        # (TimeoutMixin's contract: change the idle period, None to stop it;
        # return the previous one.)
        previous, self.timeOut = self.timeOut, period
        now = self._now()
        self._idleDue = None if period is None else now + period
        self._arm(now)
        return previous

    def resetTimeout(self):
        # (TimeoutMixin's: data came in, the idle period starts again; a
        # later due date needs no timer change.)
        if self._idleDue is not None:
            self._idleDue = self._now() + self.timeOut

    def _startDeadline(self, phase: str) -> None:
        admin = self.site.admin
        seconds = admin.header_timeout if phase == "header" else admin.body_timeout
        self._phase = phase
        self.since = now = self._now()
        self._phaseSeconds = seconds
        self._phaseDue = now + seconds
        self._arm(now)

    def _stopDeadline(self) -> None:
        self._phase = None
        self._phaseDue = None

    def _arm(self, now: float) -> None:
        due = self._idleDue
        if self._phaseDue is not None and (due is None or self._phaseDue < due):
            due = self._phaseDue
        if due is None:
            return  # (a pending alarm rings, finds nothing due and stops)
        alarm = self._alarm
        delay = max(0.0, due - now)
        if alarm is None:
            self._alarm = self.callLater(delay, self._ring)
        elif alarm.getTime() > due:
            alarm.reset(delay)

    def _ring(self) -> None:
        self._alarm = None
        now = self._now()
        if self._phaseDue is not None and now + _DUE_SLACK >= self._phaseDue:
            phase, seconds = self._phase, self._phaseSeconds
            self._stopDeadline()
            self._expired(phase, seconds)
        elif self._idleDue is not None and now + _DUE_SLACK >= self._idleDue:
            self._idleDue = None
            self.timeoutConnection()
        self._arm(now)

    def _disarm(self) -> None:
        self._stopDeadline()
        self._idleDue = None
        if self._alarm is not None:
            self._alarm.cancel()
            self._alarm = None

    def _expired(self, phase: str, seconds: float) -> None:
        what = "request line and headers" if phase == "header" else "request body"
        key = f"admin.{phase}_timeout"
        refusedAlready = phase == "body" and self.requests and getattr(self.requests[-1], "refused", False)
        if refusedAlready:  # its answer (a 413, a 401) is written: just go
            self.site.counters.count(f"{phase}_timeout")
            self.closeSoon()
            return
        self.refuse(f"{phase}_timeout", ApiError(
            408, f"{what} not received within {key} ({seconds:g} s)"))

    def timeoutConnection(self):
        # Silent between requests for the site's timeout (admin.idle_timeout).
        self.site.counters.count("idle_timeout")
        self.closeSoon()

    # -- closing ------------------------------------------------------------------------------

    def refuse(self, reason: str, error: ApiError) -> bool:
        """
        Answer C{error} (a complete response that closes the connection),
        count C{reason} and close.

        @return: C{False} (what Twisted's header parsing returns for "stop").
        """
        if self.closing:
            return False
        self.site.counters.count(reason)
        peer = self.transport.getPeer()
        # (Counted; logged at debug only: a flood must not become a log flood.)
        _log.debug("admin API: {status} to {peer}: {error}", status=error.status,
                  peer=getattr(peer, "host", peer), error=error.message)
        self.transport.write(rawAnswer(error))
        self.closeSoon()
        return False

    def closeSoon(self) -> None:
        """
        Close once what is written has been sent, and abort if the client
        has not taken it within L{ABORT_GRACE} seconds.
        """
        if self.closing:
            return
        self.closing = True
        self._stopDeadline()
        self.setTimeout(None)
        self.loseConnection()
        if self._abortingCall is None:
            self._abortingCall = self.callLater(ABORT_GRACE, self._abort)

    def _abort(self) -> None:
        self._abortingCall = None
        self.transport.abortConnection()


class ConnectionCap:
    """
    The open connections of one site, at most C{limit}.

    @param counters: an L{orchestrator.web.limits.AdminCounters}.
    """

    def __init__(self, limit: int, counters) -> None:
        self.limit = limit
        self._counters = counters
        self._channels: dict[AdminChannel, None] = {}  # (insertion-ordered)
        self.refusing = 0

    @property
    def open(self) -> int:
        """
        Connections not being closed.
        """
        return sum(1 for channel in self._channels if not channel.closing)

    def opened(self, channel: AdminChannel) -> None:
        self._channels[channel] = None
        self._counters.connections = len(self._channels)

    def closed(self, channel: AdminChannel) -> None:
        self._channels.pop(channel, None)
        self._counters.connections = len(self._channels)

    def makeRoom(self) -> bool:
        """
        Before a new connection is accepted: whether there is room for it,
        closing the oldest idle connection if need be (an idle one first,
        then one still sending its request; never one whose request is
        being carried out).
        """
        if len(self._channels) < self.limit:  # (the scan below only at the cap)
            return True
        live = [channel for channel in self._channels if not channel.closing]
        if len(live) < self.limit:
            return True
        candidates = [channel for channel in live if not channel.busy]
        if not candidates:
            return False
        oldest = min(candidates, key=lambda channel: (channel.receiving, channel.since))
        self._counters.count("evicted")
        if oldest.receiving:
            oldest.closing = True
            oldest.transport.abortConnection()
        else:
            oldest.closeSoon()
        return True


@implementer(IHalfCloseableProtocol)
class RefusedConnection(Protocol):
    """
    A connection beyond C{admin.max_connections}: it is answered 503 at
    once, its write side closed, whatever it sends thrown away (so the
    client reads the answer rather than a reset), and it is aborted after
    L{ABORT_GRACE} seconds or L{_REFUSED_READ_LIMIT} bytes.

    @param cap: the L{ConnectionCap}; its C{refusing} counts these.
    """

    def __init__(self, cap: ConnectionCap, limit: int, clock) -> None:
        self._cap = cap
        self._limit = limit
        self._clock = clock
        self._read = 0
        self._timer = None

    def connectionMade(self):
        self._cap.refusing += 1
        self.transport.write(rawAnswer(ApiError(
            503, f"too many connections to the admin API (admin.max_connections: {self._limit}); "
                 "try again later", headers={"Retry-After": "1"})))
        self._timer = self._clock.callLater(ABORT_GRACE, self.transport.abortConnection)
        # Half-close a plain socket (TCP, unix); under TLS the handshake may
        # not even be done, so let TLS close in its own time.
        loseWrite = getattr(self.transport, "loseWriteConnection", None)
        if loseWrite is not None and not ISSLTransport.providedBy(self.transport):
            loseWrite()
        else:
            self.transport.loseConnection()

    def dataReceived(self, data):
        self._read += len(data)
        if self._read > _REFUSED_READ_LIMIT:
            self.transport.abortConnection()

    def readConnectionLost(self):
        self.transport.loseConnection()

    def writeConnectionLost(self):
        pass

    def connectionLost(self, reason):
        self._cap.refusing -= 1
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
